//! The process `tests/tests/quota_crash.rs` kills: an in-process quota meter persisting
//! write-behind to a SQLite file, charging one `10000/day` line as fast as a 1 ms pause
//! allows, printing `<running total> <µs since start>` after each allowed charge (flushed, so
//! the parent sees every charge made before the kill).
//!
//! Usage: `quota_crash_child <sqlite file> <key id> <flush interval ms> <now, unix seconds>`.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use keygate::KeyId;
use keygate::quota::{InProcessMeter, QuotaLine, QuotaMeter, QuotaSubject};
use keygate_sqlx::SqliteStore;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, id, interval_ms, now] = args.as_slice() else {
        return Err(
            "usage: quota_crash_child <sqlite file> <key id> <flush ms> <unix seconds>".into(),
        );
    };
    let id: KeyId = id.parse()?;
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now.parse()?);
    let store = SqliteStore::open(path).await?;
    let meter = InProcessMeter::builder()
        .ledger(Arc::new(store))
        .flush_interval(Duration::from_millis(interval_ms.parse()?))
        .build();
    let lines = [QuotaLine::new(QuotaSubject::Key(id), "10000/day".parse()?)];
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut total = 0_u64;
    loop {
        if !meter.charge(&lines, 1, now).await?.allowed {
            writeln!(out, "exhausted")?;
            out.flush()?;
            return Ok(());
        }
        total += 1;
        writeln!(out, "{total} {}", started.elapsed().as_micros())?;
        out.flush()?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
