//! Instructions per request: one server under `valgrind --tool=callgrind`, driven by
//! [`client::drive`](crate::client::drive) from outside valgrind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keygate_loadbench::Variant;

use crate::client;
use crate::procs::{Children, ServeArgs, Server, free_port};

/// Where and how the callgrind runs happen.
pub(crate) struct Callgrind<'a> {
    pub(crate) exe: &'a Path,
    /// Holds the keys files.
    pub(crate) scratch: &'a Path,
    /// Holds the callgrind out files (kept when the user asked for a directory).
    pub(crate) out_dir: &'a Path,
    pub(crate) children: &'a Children,
    pub(crate) server_core: &'a str,
    pub(crate) serve: ServeArgs<'a>,
    /// Also simulate the caches ([`CACHES`]) and count L1 data misses.
    pub(crate) cache_sim: bool,
    pub(crate) deadline: Instant,
}

/// The caches `--cache-sim` simulates: fixed, so results compare across hosts (a VM may report
/// odd geometries, e.g. a direct-mapped 320 MB last level): 32 KiB 8-way L1s, and a 1 MiB
/// 8-way L2 as the last level.
pub(crate) const CACHES: &str = "--I1=32768,8,64 --D1=32768,8,64 --LL=1048576,8,64";

impl Callgrind<'_> {
    /// Starts `variant` under callgrind, sends it `requests` sequential requests, stops it, and
    /// returns the instructions (Ir) of the whole process, in total and in SHA-256's compression
    /// function (software under valgrind, which hides SHA-NI).
    ///
    /// Instrumentation is switched on once the server is ready (`callgrind_control -i on`), so
    /// the minting of 100,000 keys runs at valgrind's uninstrumented speed; what remains of
    /// start-up (and shutdown) is the same in every run and cancels in a long − short difference.
    pub(crate) fn instructions(
        &self,
        variant: Variant,
        requests: usize,
    ) -> Result<Instructions, String> {
        let port = free_port()?;
        let keys_file = self
            .scratch
            .join(format!("callgrind-{variant}-{requests}.keys"));
        let out_file = self
            .out_dir
            .join(format!("callgrind.{variant}.{requests}.out"));
        let _ = std::fs::remove_file(&out_file);
        let mut command = Command::new("taskset");
        // No glibc fastbins in the measured server. Minting the keys leaves a great many
        // free small chunks in the fastbins; a later free of a chunk over 64 KiB runs
        // `malloc_consolidate` over all of them (about 2.6 M instructions a time, four times
        // per run). Whether that fell inside the measured window or before it depended on
        // thread timing, and moved keygate's count by up to 1,300 instructions per request
        // between runs of one binary. Without fastbins (tcache still serves small blocks) the
        // same binary repeats within about 100; every variant runs with it.
        command
            .env("GLIBC_TUNABLES", "glibc.malloc.mxfast=0")
            .args(["-c", self.server_core, "valgrind", "--tool=callgrind", "-q"])
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .args(["--dump-instr=no", "--dump-line=no", "--instr-atstart=no"]);
        if self.cache_sim {
            command.arg("--cache-sim=yes").args(CACHES.split(' '));
        }
        command.arg(self.exe);
        self.serve
            .append_to(&mut command, variant, port, &keys_file);
        let left = self.deadline.saturating_duration_since(Instant::now());
        let server = Server::start(
            command,
            self.children,
            port,
            keys_file.clone(),
            left.min(Duration::from_secs(900)),
        )?;
        instrumentation_on(server.pid)?;
        let keys = read_keys(&keys_file)?;
        let _ = std::fs::remove_file(&keys_file);
        client::drive(port, &keys, requests, self.deadline)?;
        server.stop(Duration::from_secs(120))?;
        let out = std::fs::read_to_string(&out_file)
            .map_err(|e| format!("reading {}: {e}", out_file.display()))?;
        Ok(Instructions {
            total: total_instructions(&out)
                .ok_or_else(|| format!("no totals in {}", out_file.display()))?,
            sha256: exclusive_instructions(&out, "sha256::compress"),
            misses: if self.cache_sim {
                let no_totals = || format!("no cache totals in {}", out_file.display());
                Some(Misses {
                    data: total_of(&out, "D1mr")
                        .zip(total_of(&out, "D1mw"))
                        .map(|(reads, writes)| reads + writes)
                        .ok_or_else(no_totals)?,
                    code: total_of(&out, "I1mr").ok_or_else(no_totals)?,
                })
            } else {
                None
            },
        })
    }
}

/// Instructions of one callgrind run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Instructions {
    pub(crate) total: u64,
    /// Exclusive cost of functions whose name contains `sha256::compress`.
    pub(crate) sha256: u64,
    /// L1 cache misses (with `--cache-sim`).
    pub(crate) misses: Option<Misses>,
}

/// L1 cache misses of one callgrind run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Misses {
    /// Data-cache misses, reads and writes.
    pub(crate) data: u64,
    /// Instruction-cache misses: the lines of code a request runs that were not cached.
    pub(crate) code: u64,
}

fn instrumentation_on(pid: u32) -> Result<(), String> {
    let status = Command::new("callgrind_control")
        .args(["-i", "on"])
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("callgrind_control -i on {pid}: {status}"))
    }
}

/// The keys a server wrote for its client.
pub(crate) fn read_keys(path: &PathBuf) -> Result<Vec<String>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The event total of a callgrind out file (`totals:`, else `summary:`), first event (Ir).
fn total_instructions(out: &str) -> Option<u64> {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .or_else(|| out.lines().find_map(|l| l.strip_prefix("summary:")))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The total of `event` (named in the `events:` line) in a callgrind out file.
fn total_of(out: &str, event: &str) -> Option<u64> {
    let events = out.lines().find_map(|l| l.strip_prefix("events:"))?;
    let index = events.split_whitespace().position(|e| e == event)?;
    let totals = out
        .lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .or_else(|| out.lines().find_map(|l| l.strip_prefix("summary:")))?;
    // Trailing zero events may be left out of the line.
    totals
        .split_whitespace()
        .nth(index)
        .map_or(Some(0), |n| n.parse().ok())
}

/// The exclusive Ir of every function whose name contains `needle`, read from the out file
/// (cost lines under `fn=`, except the inclusive cost line that follows each `calls=`).
fn exclusive_instructions(out: &str, needle: &str) -> u64 {
    let mut names = std::collections::HashMap::new();
    let mut counting = false;
    let mut skip_next = false;
    let mut sum = 0;
    for line in out.lines() {
        // `fn=(id) name` and `cfn=(id) name` define an id (one namespace), `fn=(id)` reuses it.
        let (is_fn, spec) = match (line.strip_prefix("fn="), line.strip_prefix("cfn=")) {
            (Some(spec), _) => (true, spec),
            (None, Some(spec)) => (false, spec),
            (None, None) => (false, ""),
        };
        if !spec.is_empty() {
            let name = match spec.strip_prefix('(').and_then(|s| s.split_once(')')) {
                Some((id, rest)) if !rest.trim().is_empty() => {
                    names.insert(id.to_owned(), rest.trim().to_owned());
                    rest.trim().to_owned()
                }
                Some((id, _)) => names.get(id).cloned().unwrap_or_default(),
                None => spec.to_owned(),
            };
            if is_fn {
                counting = name.contains(needle);
            }
            continue;
        }
        if line.starts_with("calls=") {
            skip_next = true;
            continue;
        }
        let is_cost = line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c));
        if is_cost {
            if !skip_next && counting {
                sum += line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            skip_next = false;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::{exclusive_instructions, total_instructions, total_of};

    #[test]
    fn reads_exclusive_costs() {
        let out = "events: Ir\nfn=(2) main\n0 7\ncfn=(1) sha2::sha256::compress256\ncalls=1 0\n\
                   0 105\nfn=(1)\n0 100\n+1 5\nfn=(2)\n0 1\nfn=(1)\n0 10\n";
        assert_eq!(exclusive_instructions(out, "sha256::compress"), 115);
        assert_eq!(exclusive_instructions(out, "main"), 8);
    }

    #[test]
    fn reads_totals() {
        assert_eq!(
            total_instructions("events: Ir\nfn=x\n1 2\nsummary: 1234\n"),
            Some(1234)
        );
        assert_eq!(total_instructions("totals: 99 1\nsummary: 1\n"), Some(99));
        assert_eq!(total_instructions("events: Ir\n"), None);
    }

    #[test]
    fn reads_an_events_total_by_name() {
        let out = "events: Ir Dr Dw I1mr D1mr D1mw\nfn=x\n1 2\ntotals: 100 40 30 7 5\n";
        assert_eq!(total_of(out, "Ir"), Some(100));
        assert_eq!(total_of(out, "D1mr"), Some(5));
        assert_eq!(total_of(out, "D1mw"), Some(0), "a trailing zero left out");
        assert_eq!(total_of(out, "DLmr"), None, "not recorded");
        assert_eq!(total_of("events: Ir\n", "Ir"), None, "no totals");
    }
}
