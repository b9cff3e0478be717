//! One measured wrk run against one server.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::procs::{Children, wait_timeout};

/// What wrk's `done` hook printed (see `wrk/keys.lua`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WrkReport {
    pub(crate) requests: u64,
    pub(crate) duration_us: u64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    /// Non-2xx/3xx responses, connect, read and write errors and timeouts, summed.
    pub(crate) errors: u64,
}

impl WrkReport {
    pub(crate) fn requests_per_second(&self) -> f64 {
        self.requests as f64 / (self.duration_us as f64 / 1e6)
    }

    pub(crate) fn parse(stdout: &str) -> Option<Self> {
        let line = stdout.lines().find_map(|l| l.strip_prefix("LOADBENCH "))?;
        let field = |name: &str| -> Option<u64> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
                .parse()
                .ok()
        };
        let errors = [
            "status_errors",
            "connect_errors",
            "read_errors",
            "write_errors",
            "timeouts",
        ]
        .iter()
        .map(|name| field(name))
        .sum::<Option<u64>>()?;
        Some(Self {
            requests: field("requests")?,
            duration_us: field("duration_us")?,
            p50_us: field("p50_us")?,
            p99_us: field("p99_us")?,
            errors,
        })
    }
}

/// Settings of every wrk run.
#[derive(Debug, Clone)]
pub(crate) struct Load<'a> {
    pub(crate) script: &'a Path,
    pub(crate) connections: u32,
    pub(crate) client_core: &'a str,
}

impl Load<'_> {
    /// Runs wrk (one thread, pinned) for `seconds` against `port`, cycling through `keys_file`.
    pub(crate) fn run(
        &self,
        children: &Children,
        port: u16,
        keys_file: &Path,
        seconds: u64,
    ) -> Result<WrkReport, String> {
        let mut child = Command::new("taskset")
            .args(["-c", self.client_core, "wrk", "-t1"])
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{seconds}s"))
            .args(["--timeout", "10s", "-s"])
            .arg(self.script)
            .arg(format!(
                "http://127.0.0.1:{port}{}",
                keygate_loadbench::server::PATH
            ))
            .arg("--")
            .arg(keys_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting wrk: {e}"))?;
        let pid = child.id();
        children.add(pid);
        let status = wait_timeout(&mut child, Duration::from_secs(seconds + 30));
        children.remove(pid);
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut out, &mut stdout);
        }
        if let Some(mut err) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
        }
        match status {
            Some(status) if status.success() => WrkReport::parse(&stdout)
                .ok_or_else(|| format!("no LOADBENCH line from wrk:\n{stdout}\n{stderr}")),
            Some(status) => Err(format!("wrk exited with {status}:\n{stdout}\n{stderr}")),
            None => Err("wrk did not finish in time: killed".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WrkReport;

    #[test]
    fn parses_the_done_line() {
        let out = "Running 1s test\nLOADBENCH requests=1000 duration_us=2000000 p50_us=90 \
                   p99_us=400 status_errors=1 connect_errors=0 read_errors=0 write_errors=0 \
                   timeouts=2\n";
        let report = WrkReport::parse(out).unwrap_or_else(|| panic!("unparsed"));
        assert_eq!(report.requests, 1000);
        assert_eq!(report.p99_us, 400);
        assert_eq!(report.errors, 3);
        assert!((report.requests_per_second() - 500.0).abs() < 1e-9);
    }
}
