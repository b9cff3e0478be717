//! Folding: denials that name no existing key become one [`Action::Denials`] event per
//! (client, reason) and interval, so a flood of forged ids costs the sinks O(1) rows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::{Action, AuditEvent, Folded, MAX_FOLDED_SAMPLE, Outcome};
use crate::rejection::Reason;

/// How long a fold stays open before its event goes to the sinks (also on
/// [`Verifier::flush_audit`](crate::Verifier::flush_audit) and when the last verifier handle
/// is dropped): a minute.
pub const FOLD_INTERVAL: Duration = Duration::from_secs(60);

/// Most (client, reason) folds open at once. Denials from further clients fold into one
/// "other clients" event per reason ([`Folded::other_clients`]), counted in
/// [`AuditStats::folded_other_clients`](super::AuditStats::folded_other_clients), so a flood
/// from a million addresses holds the pipeline's memory to this many folds.
pub const MAX_OPEN_FOLDS: usize = 1024;

/// Whether a denial for `reason` is folded rather than kept as its own event: the refusals
/// that do not establish that the presented key exists. No credential, several, one too long,
/// malformed, wrong prefix or bad checksum (no usable id), an unknown id, a client locked out
/// by the failed-attempt limiter (refused before any key check), and a store or limiter that
/// could not answer (the key was never looked at, or its existence not confirmed). Anyone can
/// make these by the million; each costs the sinks one row only per interval.
///
/// Denials of keys that exist (wrong secret, revoked, disabled, expired, client address not
/// allowed, missing scope, another environment than the route's, the key's rate limit) stay
/// one event each: they name a real key and are what operators investigate. A flood of them
/// is bounded by the failed-attempt limiter (which turns it into `too_many_failures`, folded)
/// or by the key's own holder.
#[must_use]
pub fn is_folded(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::MissingCredentials
            | Reason::MultipleCredentials
            | Reason::CredentialTooLong
            | Reason::Malformed
            | Reason::WrongPrefix
            | Reason::BadChecksum
            | Reason::UnknownKey
            | Reason::TooManyFailures
            | Reason::StoreUnavailable
            | Reason::LimiterUnavailable
    )
}

/// Whose denials a fold counts: one client (or the unknown one), or every client past the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    Known(Option<IpAddr>),
    Other,
}

/// The open folds of the audit worker. Bounded: at most [`MAX_OPEN_FOLDS`] client folds plus
/// one "other clients" fold per reason, each with at most [`MAX_FOLDED_SAMPLE`] ids.
#[derive(Debug)]
pub(crate) struct Folder {
    open: HashMap<(Client, Reason), AuditEvent>,
    /// How many of `open` are "other clients" folds (not counted against the cap).
    others: usize,
    cap: usize,
}

/// What [`Folder::add`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    /// Folded into its client's fold.
    Folded,
    /// Folded into the "other clients" fold: the cap was reached.
    Other,
}

impl Folder {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            open: HashMap::new(),
            others: 0,
            cap,
        }
    }

    /// The reason `event` is folded for, if it is a denial [`is_folded`] names.
    pub(crate) fn folds(event: &AuditEvent) -> Option<Reason> {
        match (event.action, event.outcome, event.reason) {
            (Action::Request, Some(Outcome::Denied), Some(reason)) if is_folded(reason) => {
                Some(reason)
            }
            _ => None,
        }
    }

    /// Folds `event`, a denial for `reason` (from [`Folder::folds`]).
    pub(crate) fn add(&mut self, event: &AuditEvent, reason: Reason) -> Added {
        let mut client = (Client::Known(event.client_ip), reason);
        let mut added = Added::Folded;
        if !self.open.contains_key(&client) && self.open.len() - self.others >= self.cap {
            client = (Client::Other, reason);
            added = Added::Other;
            if !self.open.contains_key(&client) {
                self.others += 1;
            }
        }
        let fold = self.open.entry(client).or_insert_with(|| {
            let mut fold = AuditEvent::new(event.at, Action::Denials).reason(Some(reason));
            fold.outcome = Some(Outcome::Denied);
            fold.client_ip = match client.0 {
                Client::Known(ip) => ip,
                Client::Other => None,
            };
            fold.folded = Some(Box::new(Folded::new(
                0,
                event.at,
                Vec::new(),
                client.0 == Client::Other,
            )));
            fold
        });
        fold.at = fold.at.min(event.at);
        if let Some(folded) = &mut fold.folded {
            folded.count += 1;
            folded.last_at = folded.last_at.max(event.at);
            if let Some(id) = event.key_id
                && folded.sample.len() < MAX_FOLDED_SAMPLE
                && !folded.sample.contains(&id)
            {
                folded.sample.push(id);
            }
        }
        added
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The denials the open folds stand for.
    pub(crate) fn weight(&self) -> u64 {
        self.open.values().map(weight).sum()
    }

    /// How many folds are open.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    /// Closes every fold: their events, oldest first, appended to `events`.
    pub(crate) fn drain_into(&mut self, events: &mut Vec<AuditEvent>) {
        let start = events.len();
        events.extend(self.open.drain().map(|(_, event)| event));
        self.others = 0;
        events[start..].sort_by_key(|e| e.at);
    }
}

/// The denials an event stands for: its count if it is a fold, else 1.
pub(crate) fn weight(event: &AuditEvent) -> u64 {
    event.folded.as_ref().map_or(1, |f| f.count)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::key::KeyId;

    /// Folds `event` if the folder takes it (by value: the tests build it in the call).
    #[allow(clippy::needless_pass_by_value)]
    fn add(folder: &mut Folder, event: AuditEvent) -> Option<Added> {
        Folder::folds(&event).map(|reason| folder.add(&event, reason))
    }

    fn denial(ip: Option<IpAddr>, reason: Reason, id: Option<KeyId>, secs: u64) -> AuditEvent {
        let mut e = AuditEvent::request(
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            Outcome::Denied,
        )
        .reason(Some(reason))
        .key_id(id);
        e.client_ip = ip;
        e
    }

    fn id(n: u32) -> KeyId {
        format!("{n:0>12}").parse().unwrap()
    }

    #[test]
    fn only_denials_that_name_no_existing_key_fold() {
        let mut folder = Folder::new(8);
        for reason in Reason::ALL {
            let folded = add(&mut folder, denial(None, reason, Some(id(1)), 0)).is_some();
            assert_eq!(folded, is_folded(reason), "{reason:?}");
        }
        for reason in [
            Reason::Canary,
            Reason::WrongSecret,
            Reason::Revoked,
            Reason::Disabled,
            Reason::Expired,
            Reason::ForbiddenClientIp,
            Reason::InsufficientScope,
            Reason::WrongEnvironment,
            Reason::RateLimited,
        ] {
            assert!(!is_folded(reason), "{reason:?} names a real key");
        }
        let allowed = AuditEvent::request(SystemTime::UNIX_EPOCH, Outcome::Allowed);
        assert!(add(&mut folder, allowed).is_none());
        let lifecycle = AuditEvent::lifecycle(SystemTime::UNIX_EPOCH, Action::Deleted, id(1));
        assert!(add(&mut folder, lifecycle).is_none());
    }

    #[test]
    fn one_fold_per_client_and_reason_with_count_times_and_a_bounded_sample() {
        let ip = Some(IpAddr::from([192, 0, 2, 1]));
        let mut folder = Folder::new(8);
        for n in 0..1_000 {
            let at = 1_000 - u64::from(n % 7);
            assert_eq!(
                add(
                    &mut folder,
                    denial(ip, Reason::UnknownKey, Some(id(n % 9)), at)
                ),
                Some(Added::Folded)
            );
        }
        let _ = add(&mut folder, denial(ip, Reason::Malformed, None, 5));
        let mut out = Vec::new();
        folder.drain_into(&mut out);
        assert!(folder.is_empty());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].reason, Some(Reason::Malformed), "oldest first");
        let unknown = &out[1];
        assert_eq!(unknown.action, Action::Denials);
        assert_eq!(unknown.client_ip, ip);
        assert_eq!(unknown.key_id, None);
        let folded = unknown.folded.as_ref().unwrap_or_else(|| panic!("folded"));
        assert_eq!(folded.count, 1_000);
        assert_eq!(
            unknown.at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(994)
        );
        assert_eq!(
            folded.last_at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000)
        );
        assert_eq!(folded.sample, (0..5).map(id).collect::<Vec<_>>());
        assert!(!folded.other_clients);
    }

    #[test]
    fn a_flood_from_a_million_addresses_holds_memory_to_the_cap() {
        let mut folder = Folder::new(MAX_OPEN_FOLDS);
        let mut other = 0_u64;
        const N: u32 = 1_000_000;
        for n in 0..N {
            let ip = Some(IpAddr::from(n.to_be_bytes()));
            for reason in [Reason::UnknownKey, Reason::BadChecksum] {
                if add(&mut folder, denial(ip, reason, Some(id(n)), 1)) == Some(Added::Other) {
                    other += 1;
                }
            }
            assert!(folder.len() <= MAX_OPEN_FOLDS + 2);
        }
        assert_eq!(other, 2 * u64::from(N) - MAX_OPEN_FOLDS as u64);
        let mut out = Vec::new();
        folder.drain_into(&mut out);
        assert_eq!(out.len(), MAX_OPEN_FOLDS + 2);
        assert_eq!(out.iter().map(weight).sum::<u64>(), 2 * u64::from(N));
        let others: Vec<_> = out
            .iter()
            .filter_map(|e| e.folded.as_ref().filter(|f| f.other_clients))
            .collect();
        assert_eq!(others.len(), 2, "one per reason");
        assert!(others.iter().all(|f| f.sample.len() == MAX_FOLDED_SAMPLE));
    }
}
