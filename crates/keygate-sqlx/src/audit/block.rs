//! Request events kept many to a row: the SQLite trail's blocks.
//!
//! A busy service's audit trail is almost all request events, and SQLite spends most of a
//! row's cost on the B-trees it updates (the table and its two indexes): at 100,000 requests a
//! second that is more CPU than the service itself. So the SQLite sink keeps request events in
//! blocks instead: one row of `keygate_audit_blocks` per up to [`MAX_BLOCK_EVENTS`] events of a
//! batch, their values encoded compactly in one blob (a dictionary of the texts they repeat,
//! then per event its id and time as deltas and its values as dictionary indexes). Every event
//! keeps its own id from the same sequence as the rows of `keygate_audit_events`, its time and
//! every value a row would have, and reads return it exactly as a row's event: see
//! `sqlite::events`, which merges both.
//!
//! Each block row also keeps what lets a read skip it without decoding it: its id and time
//! range, how many of its events were denied, and a Bloom filter of its key ids.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use keygate::KeyId;
use keygate::audit::{Action, AuditEvent, STALE_DETAIL, StoredEvent};

use crate::codec::{from_micros, to_micros};

/// Most events in one block.
pub(crate) const MAX_BLOCK_EVENTS: usize = 16_384;

/// The blob format's version, its first byte.
const VERSION: u8 = 1;

/// Whether `event` is kept in a block rather than as a row of its own: a request event
/// (allowed or denied), not a folded one, with no detail but the stale-record one.
pub(crate) fn is_compact(e: &AuditEvent) -> bool {
    e.action == Action::Request
        && e.folded.is_none()
        && e.actor.is_none()
        && e.owner.is_none()
        && e.detail.as_deref().is_none_or(|d| d == STALE_DETAIL)
}

// Which values an event has, one bit each.
const KEY: u64 = 1;
const OUTCOME: u64 = 1 << 1;
const REASON: u64 = 1 << 2;
const METHOD: u64 = 1 << 3;
const ROUTE: u64 = 1 << 4;
const IP: u64 = 1 << 5;
const STATUS: u64 = 1 << 6;
const LATENCY: u64 = 1 << 7;
const REQUEST_ID: u64 = 1 << 8;
const STALE: u64 = 1 << 9;
const KNOWN: u64 = (1 << 10) - 1;

/// One block as written: its summary columns and its blob.
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) first_id: i64,
    pub(crate) last_id: i64,
    pub(crate) first_at: i64,
    pub(crate) last_at: i64,
    pub(crate) count: i64,
    pub(crate) denied: i64,
    /// A Bloom filter of the block's key ids: [`Bloom::may_contain`].
    pub(crate) keys: Vec<u8>,
    pub(crate) events: Vec<u8>,
}

/// Encodes `events` (each with its id, ascending) as one block.
///
/// # Panics
/// Never for a non-empty slice; an empty one has no block (callers do not ask).
pub(crate) fn encode(events: &[(i64, &AuditEvent)]) -> Block {
    debug_assert!(!events.is_empty() && events.len() <= MAX_BLOCK_EVENTS);
    let first_id = events.first().map_or(0, |(id, _)| *id);
    let last_id = events.last().map_or(0, |(id, _)| *id);
    let ats: Vec<i64> = events.iter().map(|(_, e)| to_micros(e.at)).collect();
    let first_at = ats.iter().copied().min().unwrap_or(0);
    let last_at = ats.iter().copied().max().unwrap_or(0);

    let mut dict = Dictionary::default();
    let mut body = Vec::with_capacity(events.len() * 12);
    let mut denied = 0;
    let mut prev_id = first_id;
    let mut prev_at = first_at;
    for ((id, e), at) in events.iter().zip(&ats) {
        let mut flags = 0;
        let key = e.key_id.map(|k| {
            flags |= KEY;
            dict.key(k)
        });
        let outcome = e.outcome.map(|o| {
            flags |= OUTCOME;
            if o == keygate::audit::Outcome::Denied {
                denied += 1;
            }
            dict.word(o.as_str())
        });
        let reason = e.reason.map(|r| {
            flags |= REASON;
            dict.word(r.as_str())
        });
        let method = e.method.as_ref().map(|m| {
            flags |= METHOD;
            dict.word(m.as_str())
        });
        let route = e.route.as_ref().map(|r| {
            flags |= ROUTE;
            dict.route(r)
        });
        let ip = e.client_ip.map(|ip| {
            flags |= IP;
            dict.ip(ip)
        });
        if e.status.is_some() {
            flags |= STATUS;
        }
        if e.latency.is_some() {
            flags |= LATENCY;
        }
        if e.request_id.is_some() {
            flags |= REQUEST_ID;
        }
        if e.detail.is_some() {
            flags |= STALE;
        }
        put_varint(&mut body, (id - prev_id).unsigned_abs());
        put_varint(&mut body, zigzag(at.wrapping_sub(prev_at)));
        prev_id = *id;
        prev_at = *at;
        put_varint(&mut body, flags);
        for index in [key, outcome, reason, method, route, ip]
            .into_iter()
            .flatten()
        {
            put_varint(&mut body, u64::from(index));
        }
        if let Some(status) = e.status {
            put_varint(&mut body, u64::from(status));
        }
        if let Some(latency) = e.latency {
            put_varint(
                &mut body,
                u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            );
        }
        if let Some(request_id) = &e.request_id {
            put_bytes(&mut body, request_id.as_bytes());
        }
    }

    let mut blob = Vec::with_capacity(body.len() + dict.size() + 16);
    blob.push(VERSION);
    put_varint(&mut blob, dict.texts.len() as u64);
    for text in &dict.texts {
        put_bytes(&mut blob, text.as_bytes());
    }
    put_varint(&mut blob, dict.keys.len() as u64);
    for key in &dict.keys {
        blob.extend_from_slice(key.as_str().as_bytes());
    }
    put_varint(&mut blob, events.len() as u64);
    blob.extend_from_slice(&body);

    Block {
        first_id,
        last_id,
        first_at,
        last_at,
        count: events.len() as i64,
        denied,
        keys: Bloom::of(&dict.keys).into_bytes(),
        events: blob,
    }
}

/// A block blob keygate cannot read back: where it went wrong.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

/// Decodes a block written by [`encode`] whose first event has id `first_id`: its events,
/// ascending by id.
pub(crate) fn decode(
    first_id: i64,
    first_at: i64,
    blob: &[u8],
) -> Result<Vec<StoredEvent>, Malformed> {
    let mut r = Reader(blob);
    if r.byte()? != VERSION {
        return Err(Malformed("version"));
    }
    let n_texts = r.count()?;
    let mut texts: Vec<&str> = Vec::with_capacity(n_texts);
    for _ in 0..n_texts {
        let bytes = r.bytes()?;
        texts.push(std::str::from_utf8(bytes).map_err(|_| Malformed("text"))?);
    }
    let n_keys = r.count()?;
    let mut keys = Vec::with_capacity(n_keys);
    for _ in 0..n_keys {
        let bytes = r.take(KeyId::LEN)?;
        keys.push(KeyId::from_bytes(bytes).ok_or(Malformed("key id"))?);
    }
    // Texts parsed once each, on first use.
    let mut routes: HashMap<usize, Arc<str>> = HashMap::new();
    let mut ips: HashMap<usize, IpAddr> = HashMap::new();
    let n_events = r.count()?;
    let mut events = Vec::with_capacity(n_events);
    let mut id = first_id;
    let mut at = first_at;
    for _ in 0..n_events {
        id = id
            .checked_add(i64::try_from(r.varint()?).map_err(|_| Malformed("id"))?)
            .ok_or(Malformed("id"))?;
        at = at.wrapping_add(unzigzag(r.varint()?));
        let flags = r.varint()?;
        if flags & !KNOWN != 0 {
            return Err(Malformed("flags"));
        }
        let mut event = AuditEvent::request(from_micros(at), keygate::audit::Outcome::Allowed);
        event.outcome = None;
        if flags & KEY != 0 {
            event.key_id = Some(*keys.get(r.count()?).ok_or(Malformed("key index"))?);
        }
        let text = |r: &mut Reader<'_>| -> Result<(usize, &str), Malformed> {
            let index = r.count()?;
            Ok((index, *texts.get(index).ok_or(Malformed("text index"))?))
        };
        if flags & OUTCOME != 0 {
            event.outcome = Some(text(&mut r)?.1.parse().map_err(|_| Malformed("outcome"))?);
        }
        if flags & REASON != 0 {
            // A reason a newer keygate wrote is kept by its name, not a failed read.
            event = event
                .stored_reason(text(&mut r)?.1)
                .map_err(|_| Malformed("reason"))?;
        }
        if flags & METHOD != 0 {
            event.method = Some(text(&mut r)?.1.parse().map_err(|_| Malformed("method"))?);
        }
        if flags & ROUTE != 0 {
            let (index, route) = text(&mut r)?;
            event.route = Some(Arc::clone(
                routes.entry(index).or_insert_with(|| Arc::from(route)),
            ));
        }
        if flags & IP != 0 {
            let (index, ip) = text(&mut r)?;
            let ip = match ips.get(&index) {
                Some(ip) => *ip,
                None => {
                    let parsed: IpAddr = ip.parse().map_err(|_| Malformed("client ip"))?;
                    ips.insert(index, parsed);
                    parsed
                }
            };
            event.client_ip = Some(ip);
        }
        if flags & STATUS != 0 {
            event.status = Some(u16::try_from(r.varint()?).map_err(|_| Malformed("status"))?);
        }
        if flags & LATENCY != 0 {
            event.latency = Some(Duration::from_micros(r.varint()?));
        }
        if flags & REQUEST_ID != 0 {
            let bytes = r.bytes()?;
            let text = std::str::from_utf8(bytes).map_err(|_| Malformed("request id"))?;
            event.request_id = Some(Arc::from(text));
        }
        if flags & STALE != 0 {
            event.detail = Some(STALE_DETAIL.to_owned());
        }
        events.push(StoredEvent { id, event });
    }
    if !r.0.is_empty() {
        return Err(Malformed("trailing bytes"));
    }
    Ok(events)
}

/// A block's texts and key ids, each stored once; events name them by index.
#[derive(Default)]
struct Dictionary<'e> {
    texts: Vec<Arc<str>>,
    words: HashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    /// Words looked up lately, by address: an event's outcome, reason and method are mostly
    /// the same few `'static` names, found by a pointer compare instead of a hash. Only texts
    /// borrowed from the events for the whole encoding go here (an address is never reused).
    recent: Vec<(&'e str, u32)>,
    /// The last route seen, by pointer: a busy route repeats the same `Arc`.
    last_route: Option<(Arc<str>, u32)>,
    keys: Vec<KeyId>,
    key_index: HashMap<KeyId, u32, foldhash::fast::RandomState>,
    ip_index: HashMap<IpAddr, u32, foldhash::fast::RandomState>,
}

/// Most words kept in [`Dictionary::recent`].
const RECENT_WORDS: usize = 16;

impl<'e> Dictionary<'e> {
    /// The index of `word`, borrowed from the events being encoded.
    fn word(&mut self, word: &'e str) -> u32 {
        if let Some((_, index)) = self.recent.iter().find(|(seen, _)| {
            std::ptr::eq(seen.as_ptr(), word.as_ptr()) && seen.len() == word.len()
        }) {
            return *index;
        }
        let index = self.text(word);
        if self.recent.len() < RECENT_WORDS {
            self.recent.push((word, index));
        }
        index
    }

    /// The index of `text`, however long it lives.
    fn text(&mut self, text: &str) -> u32 {
        if let Some(index) = self.words.get(text) {
            return *index;
        }
        self.add(Arc::from(text))
    }

    fn add(&mut self, text: Arc<str>) -> u32 {
        let index = u32::try_from(self.texts.len()).unwrap_or(u32::MAX);
        self.texts.push(Arc::clone(&text));
        self.words.insert(text, index);
        index
    }

    fn route(&mut self, route: &Arc<str>) -> u32 {
        if let Some((last, index)) = &self.last_route
            && Arc::ptr_eq(last, route)
        {
            return *index;
        }
        let index = match self.words.get(&**route) {
            Some(index) => *index,
            None => self.add(Arc::clone(route)),
        };
        self.last_route = Some((Arc::clone(route), index));
        index
    }

    fn ip(&mut self, ip: IpAddr) -> u32 {
        if let Some(index) = self.ip_index.get(&ip) {
            return *index;
        }
        let index = self.text(&ip.to_string());
        self.ip_index.insert(ip, index);
        index
    }

    fn key(&mut self, key: KeyId) -> u32 {
        *self.key_index.entry(key).or_insert_with(|| {
            self.keys.push(key);
            u32::try_from(self.keys.len() - 1).unwrap_or(u32::MAX)
        })
    }

    fn size(&self) -> usize {
        self.texts.iter().map(|t| t.len() + 2).sum::<usize>() + self.keys.len() * KeyId::LEN
    }
}

/// A Bloom filter of a block's key ids: about 10 bits a key (1 % false positives), 4 probes,
/// positions from a hash of the id that is the same in every build ([`stable_hash`]).
pub(crate) struct Bloom(Vec<u8>);

const PROBES: u32 = 4;

impl Bloom {
    fn of(keys: &[KeyId]) -> Self {
        let bits = (keys.len() * 10).next_power_of_two().max(64);
        let mut filter = vec![0_u8; bits / 8];
        for key in keys {
            for bit in positions(bits, *key) {
                filter[bit / 8] |= 1 << (bit % 8);
            }
        }
        Self(filter)
    }

    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Whether `key` may be among the block's keys (never `false` for one that is; a filter
    /// of no bytes, from a damaged row, may contain anything).
    pub(crate) fn may_contain(&self, key: KeyId) -> bool {
        self.0.is_empty()
            || positions(self.0.len() * 8, key).all(|bit| self.0[bit / 8] & (1 << (bit % 8)) != 0)
    }
}

/// The filter bits of `key` in a filter of `bits` bits: double hashing over the two halves of
/// a 64-bit hash of the id.
fn positions(bits: usize, key: KeyId) -> impl Iterator<Item = usize> {
    let hash = stable_hash(key.as_str().as_bytes());
    let h1 = hash as u32;
    let h2 = ((hash >> 32) as u32) | 1;
    (0..PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) as usize) % bits.max(1))
}

/// FNV-1a over `bytes`, then SplitMix64's finaliser to spread it: fixed here, so filters
/// written by one build are read alike by every later one (the std hashers promise no such
/// thing).
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, Malformed> {
        let (first, rest) = self.0.split_first().ok_or(Malformed("truncated"))?;
        self.0 = rest;
        Ok(*first)
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0_u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Malformed("varint"))
    }

    /// A varint used as a length or index: bounded by what is left, so a damaged blob cannot
    /// ask for a huge allocation.
    fn count(&mut self) -> Result<usize, Malformed> {
        let value = self.varint()?;
        usize::try_from(value)
            .ok()
            .filter(|n| *n <= self.0.len().max(MAX_BLOCK_EVENTS))
            .ok_or(Malformed("count"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed("truncated"));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.count()?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use keygate::Reason;
    use keygate::audit::Outcome;
    use proptest::prelude::*;

    use super::*;

    fn key(n: u64) -> KeyId {
        let text = format!("{n:0>12}");
        KeyId::from_bytes(text.as_bytes()).expect("twelve digits are an id")
    }

    const REASONS: [Reason; 3] = [Reason::WrongSecret, Reason::RateLimited, Reason::Revoked];
    const METHODS: [&str; 3] = ["GET", "POST", "PURGE"];
    const ROUTES: [&str; 3] = ["/", "/v1/items/{id}", "/ünïcode"];
    const IPS: [&str; 3] = ["127.0.0.1", "2001:db8::7", "192.0.2.200"];

    /// Any request event a block may hold: every value present or absent on its own.
    fn request_event() -> impl Strategy<Value = AuditEvent> {
        (
            (
                0_i64..4_000_000_000_000_000,
                0_u64..50,
                proptest::option::of(0_usize..3),
            ),
            (
                proptest::option::of(any::<bool>()),
                proptest::option::of(0_usize..3),
            ),
            (
                proptest::option::of(0_usize..3),
                proptest::option::of(0_usize..3),
            ),
            (
                proptest::option::of(any::<u16>()),
                proptest::option::of(0_u64..10_000_000),
            ),
            (proptest::option::of("[ -~]{0,40}"), any::<bool>()),
        )
            .prop_map(
                |(
                    (at, k, has_key),
                    (outcome, reason),
                    (method, route),
                    (status, latency),
                    (rid, stale),
                )| {
                    let mut e = AuditEvent::request(
                        SystemTime::UNIX_EPOCH + Duration::from_micros(at.unsigned_abs()),
                        Outcome::Allowed,
                    );
                    e.outcome = outcome.map(|denied| {
                        if denied {
                            Outcome::Denied
                        } else {
                            Outcome::Allowed
                        }
                    });
                    e.key_id = has_key.map(|_| key(k));
                    e.reason = reason.map(|r| REASONS[r]);
                    e.method = method.map(|m| METHODS[m].parse().expect("a method"));
                    e.route = route.map(|r| Arc::from(ROUTES[r]));
                    e.client_ip = route.map(|r| IPS[r].parse().expect("an address"));
                    e.status = status;
                    e.latency = latency.map(Duration::from_micros);
                    e.request_id = rid.map(|r| Arc::from(r.as_str()));
                    if stale {
                        e.detail = Some(STALE_DETAIL.to_owned());
                    }
                    e
                },
            )
    }

    fn numbered<'a>(events: &'a [AuditEvent], gaps: &[u8]) -> Vec<(i64, &'a AuditEvent)> {
        let mut id = 1_000;
        events
            .iter()
            .zip(gaps.iter().chain(std::iter::repeat(&0)))
            .map(|(e, gap)| {
                id += 1 + i64::from(*gap);
                (id, e)
            })
            .collect()
    }

    proptest! {
        /// Every event comes back as written (times to the microsecond, as a row's), with its
        /// id, in order; the summary columns describe the events.
        #[test]
        fn a_block_decodes_to_the_events_it_encoded(
            events in proptest::collection::vec(request_event(), 1..200),
            gaps in proptest::collection::vec(0_u8..4, 0..200),
        ) {
            let numbered = numbered(&events, &gaps);
            let block = encode(&numbered);
            let decoded = decode(block.first_id, block.first_at, &block.events)
                .map_err(|m| TestCaseError::fail(m.0))?;
            prop_assert_eq!(decoded.len(), events.len());
            for (stored, (id, written)) in decoded.iter().zip(&numbered) {
                prop_assert_eq!(stored.id, *id);
                prop_assert_eq!(&stored.event, *written);
            }
            prop_assert_eq!(block.first_id, numbered[0].0);
            prop_assert_eq!(block.last_id, numbered[numbered.len() - 1].0);
            prop_assert_eq!(block.count, events.len() as i64);
            let denied = events.iter().filter(|e| e.outcome == Some(Outcome::Denied)).count();
            prop_assert_eq!(block.denied, denied as i64);
            let ats: Vec<i64> = events.iter().map(|e| to_micros(e.at)).collect();
            prop_assert_eq!(block.first_at, *ats.iter().min().expect("not empty"));
            prop_assert_eq!(block.last_at, *ats.iter().max().expect("not empty"));
            let bloom = Bloom::from_bytes(block.keys);
            for e in &events {
                if let Some(id) = e.key_id {
                    prop_assert!(bloom.may_contain(id), "no false negatives");
                }
            }
        }

        /// A damaged blob is an error or some events, never a panic or a huge allocation.
        #[test]
        fn a_damaged_block_is_an_error_not_a_panic(
            events in proptest::collection::vec(request_event(), 1..20),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let numbered = numbered(&events, &[]);
            let block = encode(&numbered);
            let mut blob = block.events.clone();
            for (at, byte) in flips {
                let n = blob.len();
                blob[at % n] ^= byte | 1;
            }
            let _ = decode(block.first_id, block.first_at, &blob);
            let _ = decode(block.first_id, block.first_at, &block.events[..cut % block.events.len()]);
        }

        #[test]
        fn random_bytes_are_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut blob = vec![VERSION];
            blob.extend(bytes);
            let _ = decode(1, 0, &blob);
        }
    }

    #[test]
    fn only_request_events_without_an_actor_fold_or_other_detail_are_compact() {
        let at = SystemTime::UNIX_EPOCH;
        let allowed = AuditEvent::request(at, Outcome::Allowed).key_id(Some(key(1)));
        assert!(is_compact(&allowed));
        let denied = AuditEvent::request(at, Outcome::Denied).reason(Some(Reason::Revoked));
        assert!(is_compact(&denied));
        assert!(is_compact(&allowed.clone().detail(STALE_DETAIL)));
        assert!(!is_compact(&allowed.clone().detail("something else")));
        assert!(!is_compact(&allowed.clone().actor(Some(Arc::from("ops")))));
        let mut owned = allowed.clone();
        owned.owner = Some(Arc::from("team-x"));
        assert!(!is_compact(&owned));
        assert!(!is_compact(&AuditEvent::lifecycle(
            at,
            Action::Revoked,
            key(1)
        )));
        let mut folded = denied.clone();
        folded.action = Action::Denials;
        assert!(!is_compact(&folded));
    }

    #[test]
    fn a_bloom_filter_rules_out_most_keys_it_does_not_hold() {
        let held: Vec<KeyId> = (0..1_000).map(key).collect();
        let bloom = Bloom::of(&held);
        assert!(held.iter().all(|k| bloom.may_contain(*k)));
        let false_positives = (1_000..11_000)
            .filter(|n| bloom.may_contain(key(*n)))
            .count();
        // At most about 1 % expected with 10 or more bits a key and 4 probes.
        assert!(false_positives < 150, "{false_positives} of 10,000");
        assert!(Bloom::from_bytes(Vec::new()).may_contain(key(5)));
    }

    /// Filters already written are read by later builds: the hash must never change.
    #[test]
    fn the_filter_hash_is_fixed() {
        assert_eq!(stable_hash(b"AAAAAAAAAAAA"), 0x6f27_6c24_96b8_72f1);
        assert_eq!(stable_hash(b""), 0xf52a_15e9_a9b5_e89b);
    }

    #[test]
    fn a_block_of_a_busy_service_costs_a_few_bytes_an_event() {
        let route: Arc<str> = Arc::from("/v1/items/{id}");
        let events: Vec<AuditEvent> = (0..10_000_u64)
            .map(|n| {
                let mut e = AuditEvent::request(
                    SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000 + n * 11),
                    Outcome::Allowed,
                )
                .key_id(Some(key(n % 1_000)));
                e.method = Some(http::Method::GET);
                e.route = Some(Arc::clone(&route));
                e.client_ip = Some(IpAddr::from([127, 0, 0, 1]));
                e.status = Some(200);
                e.latency = Some(Duration::from_micros(40 + n % 50));
                e
            })
            .collect();
        let block = encode(&numbered(&events, &[]));
        let per_event = block.events.len() / events.len();
        assert!(per_event <= 16, "{per_event} bytes an event");
    }
}
