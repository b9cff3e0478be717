//! Checklist item 33: no plaintext key in the cache, proven on the live heap.
//!
//! Keys are created and used through the axum layer (cache warm, wrong secrets cached as
//! refusals, rate-limited and audited), then this process's writable memory is read from
//! `/proc/self/mem` and searched for each key's secret. Two things make the search mean
//! something:
//! - the allocator zeroes every block it frees (`zeroizing-alloc`), so what is found is held by
//!   a live allocation (the request's header bytes, freed unzeroed by `http`, do not count);
//! - the test never holds a secret in clear between requests: it keeps each key XOR-masked and
//!   unmasks it only to build one request, and the search compares masked bytes.
//!
//! A control proves the scanner finds a secret that *is* live. Linux only; runs on the main
//! thread (no test harness), whose stack — not heap — is left out of the scan.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use keygate::{KeyAdmin as _, NewKey, Verifier};
use keygate_tests::{Harness, axum_app, send_bearer};

#[global_allocator]
static ALLOC: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);

const MASK: u8 = 0x5a;

/// A key kept XOR-masked: never in clear in this test's memory.
struct Masked(Vec<u8>);

impl Masked {
    fn new(key: &str) -> Self {
        Self(key.bytes().map(|b| b ^ MASK).collect())
    }

    /// The key in clear, for one request (freed, and so zeroed, right after).
    fn reveal(&self) -> String {
        self.0.iter().map(|b| char::from(b ^ MASK)).collect()
    }

    /// The masked secret part (the 36 characters after the id: secret and checksum).
    fn secret(&self) -> &[u8] {
        &self.0[self.0.len() - 36..]
    }
}

/// For each masked needle, where in this process's writable, private memory (heap and
/// anonymous mappings; not the main thread's stack) it appears unmasked.
fn find_live(needles: &[&[u8]]) -> Vec<Vec<String>> {
    let maps = BufReader::new(File::open("/proc/self/maps").unwrap());
    let mut mem = File::open("/proc/self/mem").unwrap();
    let mut found = vec![Vec::new(); needles.len()];
    // Which needles start with each (clear) byte: one table look-up per byte scanned.
    let mut first = vec![Vec::new(); 256];
    for (i, needle) in needles.iter().enumerate() {
        first[usize::from(needle[0] ^ MASK)].push(i);
    }
    let longest = needles.iter().map(|n| n.len()).max().unwrap_or(1);
    let mut chunk = vec![0_u8; 1 << 20];
    let regions: Vec<String> = maps.lines().map_while(Result::ok).collect();
    for line in &regions {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (range, perms) = (fields[0], fields[1]);
        let name = fields.get(5).copied().unwrap_or("");
        if !perms.starts_with("rw") || !(name.is_empty() || name == "[heap]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap_or_else(|| panic!("{line}"));
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut at = start;
        // Chunks overlap by the longest needle, so a match across a boundary is seen.
        while at < end {
            let len = usize::try_from((end - at).min(chunk.len() as u64)).unwrap_or(0);
            if mem.seek(SeekFrom::Start(at)).is_err() || mem.read_exact(&mut chunk[..len]).is_err()
            {
                break; // unreadable (a guard page): skip the rest of the region
            }
            let data = &chunk[..len];
            for (pos, byte) in data.iter().enumerate() {
                for &i in &first[usize::from(*byte)] {
                    let needle = needles[i];
                    if data.len() - pos >= needle.len()
                        && data[pos..pos + needle.len()]
                            .iter()
                            .zip(needle)
                            .all(|(b, n)| b ^ MASK == *n)
                    {
                        found[i].push(format!("{:#x} in {line}", at + pos as u64));
                    }
                }
            }
            if at + len as u64 >= end {
                break;
            }
            at += (len - longest) as u64;
        }
    }
    chunk.fill(0);
    found
}

async fn exercise(h: &Harness, verifier: &Verifier) -> Vec<Masked> {
    let app = axum_app(verifier);
    let mut keys = Vec::new();
    for i in 0..20 {
        let created = h
            .verifier
            .admin()
            .create_key(NewKey::new(format!("scan {i}")))
            .await
            .expect("create");
        keys.push(Masked::new(created.key.expose_secret()));
        // CreatedKey zeroes its plaintext on drop; the allocator zeroes the block.
    }
    for key in &keys {
        for _ in 0..3 {
            let reply = send_bearer(&app, "/hello", &key.reveal()).await;
            assert_eq!(reply.status, 200);
        }
    }
    // Revoked keys stay cached as refusals.
    for key in keys.iter().take(5) {
        let id = key.reveal()[..key.0.len() - 37]
            .rsplit('_')
            .next()
            .unwrap_or_default()
            .parse()
            .unwrap();
        verifier.admin().revoke(&id).await.expect("revoke");
        let reply = send_bearer(&app, "/hello", &key.reveal()).await;
        assert_eq!(reply.status, 401);
    }
    verifier.flush_audit().await;
    keys
}

fn main() {
    if !std::path::Path::new("/proc/self/mem").exists() {
        println!("note: no /proc/self/mem (not Linux): skipping the heap scan");
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let h = Harness::new();
        let verifier = h.sibling();
        let keys = exercise(&h, &verifier).await;
        let (cached, _) = verifier.cache_entry_counts().await;
        assert!(cached >= 20, "the keys are cached: {cached}");

        // Control: a secret held live is found (and only that one).
        let live = keys[0].reveal();
        let needles: Vec<&[u8]> = keys.iter().map(Masked::secret).collect();
        let control = find_live(&needles);
        assert!(
            !control[0].is_empty(),
            "the scan did not find a secret held in a live String: it cannot find anything"
        );
        drop(live);

        let found = find_live(&needles);
        for (i, places) in found.iter().enumerate() {
            assert!(
                places.is_empty(),
                "key {i}'s secret is in live memory while the verifier caches it: {places:?}"
            );
        }
        println!(
            "heap scan: {} keys cached and used, no secret in live memory",
            keys.len()
        );
        drop(verifier);
    });
}
