//! Processes the benchmark starts: servers and load generators. Only these are ever signalled,
//! by PID; a watchdog kills them if the time budget is overrun.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use keygate_loadbench::Variant;

/// PIDs of the children alive right now. Shared with the watchdog.
#[derive(Clone, Default)]
pub(crate) struct Children {
    pids: Arc<Mutex<Vec<u32>>>,
}

impl Children {
    pub(crate) fn add(&self, pid: u32) {
        self.pids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(pid);
    }

    pub(crate) fn remove(&self, pid: u32) {
        self.pids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|&p| p != pid);
    }

    /// SIGKILLs every registered child (the watchdog's last resort).
    pub(crate) fn kill_all(&self) {
        let pids = self
            .pids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for pid in pids {
            signal(pid, "KILL");
        }
    }
}

/// Sends `SIGNAME` to `pid` (one of our children) with kill(1): the workspace forbids `unsafe`.
pub(crate) fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A temporary directory (mode 0700), removed on drop.
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub(crate) fn create() -> Result<Self, String> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("keygate-loadbench-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(Self { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A free port on 127.0.0.1 (bound, then released for the server).
pub(crate) fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// The `loadbench serve` arguments that make a server one run's variant, alike for the
/// throughput servers and the callgrind ones: the keys, and for keygate's variants the limit,
/// the quota and the audit trail.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServeArgs<'a> {
    pub(crate) store_keys: usize,
    pub(crate) rate_limit: Option<&'a str>,
    pub(crate) quota: Option<&'a str>,
    /// The `--audit` mode (`sqlite` or `sqlite-usage`), or none.
    pub(crate) audit: Option<&'static str>,
}

impl ServeArgs<'_> {
    /// Appends `serve VARIANT --port PORT --keys-file FILE ...` to `command`.
    pub(crate) fn append_to(
        &self,
        command: &mut Command,
        variant: Variant,
        port: u16,
        keys_file: &Path,
    ) {
        command
            .args(["serve", variant.name(), "--port"])
            .arg(port.to_string())
            .arg("--keys-file")
            .arg(keys_file)
            .arg("--store-keys")
            .arg(self.store_keys.to_string());
        if !variant.with_keygate() {
            return;
        }
        if let Some(limit) = self.rate_limit {
            command.args(["--rate-limit", limit]);
        }
        if let Some(quota) = self.quota {
            command.args(["--quota", quota]);
        }
        if let Some(mode) = self.audit {
            command.args(["--audit", mode]);
        }
    }
}

/// A running benchmark server.
pub(crate) struct Server {
    child: Child,
    children: Children,
    pub(crate) pid: u32,
    pub(crate) port: u16,
    pub(crate) keys_file: PathBuf,
}

impl Server {
    /// Starts `command` (whose stdout is the server's) and waits for its `ready` line.
    pub(crate) fn start(
        mut command: Command,
        children: &Children,
        port: u16,
        keys_file: PathBuf,
        ready_within: Duration,
    ) -> Result<Self, String> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {command:?}: {e}"))?;
        let pid = child.id();
        children.add(pid);
        let mut server = Self {
            child,
            children: children.clone(),
            pid,
            port,
            keys_file,
        };
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = server.child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + ready_within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.trim() == "ready" => return Ok(server),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "server pid {pid} exited before it was ready (see its stderr above)"
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "server pid {pid} not ready within {ready_within:?} (see its stderr above)"
                    ));
                }
            }
        }
    }

    /// SIGTERM, then wait up to `within` for a clean exit; SIGKILL if it does not come.
    pub(crate) fn stop(mut self, within: Duration) -> Result<(), String> {
        signal(self.pid, "TERM");
        let status = wait_timeout(&mut self.child, within);
        match status {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("server pid {} exited with {status}", self.pid)),
            None => Err(format!(
                "server pid {} did not stop within {within:?}: killed",
                self.pid
            )),
        }
    }

    /// User and system CPU time of the server so far (all threads), from /proc.
    pub(crate) fn cpu_time(&self) -> Result<CpuTime, String> {
        CpuTime::of(self.pid)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stopped already (then this is a no-op) or abandoned on an error path.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.children.remove(self.pid);
    }
}

/// Polls `child` until it exits or `within` passes; on timeout it is killed and `None` returned.
pub(crate) fn wait_timeout(
    child: &mut Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// A process's accumulated CPU time, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuTime {
    pub(crate) user_ticks: u64,
    pub(crate) system_ticks: u64,
    /// Of the two, user and system time of the audit writer's threads (its runtime's thread
    /// and the SQLite connection's, which the server runs on the client core): what the
    /// request core did not spend.
    pub(crate) writer_ticks: u64,
}

/// Names (`comm`, cut to 15 bytes) of the threads that write the audit trail: the server's
/// `audit-writer` runtime and sqlx's `sqlx-sqlite-worker-N`.
const WRITER_THREADS: [&str; 2] = ["audit-writer", "sqlx-sqlite-wor"];

impl CpuTime {
    pub(crate) fn of(pid: u32) -> Result<Self, String> {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
        let (_, user_ticks, system_ticks) =
            Self::parse(&stat).ok_or_else(|| format!("unexpected {path}: {stat}"))?;
        let tasks = format!("/proc/{pid}/task");
        let mut writer_ticks = 0;
        for task in std::fs::read_dir(&tasks).map_err(|e| format!("reading {tasks}: {e}"))? {
            let path = task.map_err(|e| e.to_string())?.path().join("stat");
            // A thread may end between the listing and the read.
            let Ok(stat) = std::fs::read_to_string(&path) else {
                continue;
            };
            if let Some((name, user, system)) = Self::parse(&stat)
                && WRITER_THREADS.contains(&name)
            {
                writer_ticks += user + system;
            }
        }
        Ok(Self {
            user_ticks,
            system_ticks,
            writer_ticks,
        })
    }

    /// The command name (field 2), utime and stime (fields 14 and 15) of a /proc `stat` file;
    /// the name may hold spaces and parentheses, so fields are counted from its last `)`.
    fn parse(stat: &str) -> Option<(&str, u64, u64)> {
        let close = stat.rfind(')')?;
        let name = &stat[stat.find('(')? + 1..close];
        let mut fields = stat[close + 1..].split_whitespace().skip(11);
        Some((
            name,
            fields.next()?.parse().ok()?,
            fields.next()?.parse().ok()?,
        ))
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux if that fails).
pub(crate) fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Whether `program` is on PATH.
pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::CpuTime;

    #[test]
    fn parses_proc_stat() {
        let stat = "4242 (loadbench (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 3 0";
        let cpu = CpuTime::parse(stat).unwrap_or_else(|| panic!("unparsed"));
        assert_eq!(cpu, ("loadbench (x)", 1234, 56));
    }
}
