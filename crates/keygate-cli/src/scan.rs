//! `keygate scan`: this deployment's keys found in files, directories and git history, each
//! reported with the key's id, name, owner and state, the secret masked; and `--rules`, ready
//! detection rules for gitleaks and TruffleHog.
//!
//! A find is a token of the deployment's key format with a valid checksum (made-up tokens and
//! other formats are not reported). Its id is looked up in the key store; with the
//! deployment's pepper (`KEYGATE_PEPPER`, or a development store) the token's secret is
//! checked against the key's digest too, so a token that only borrows a key's id is told
//! apart. Nothing found is ever printed whole: the id is public, the secret is masked.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::SystemTime;

use keygate::{KeyFormat, KeyId, KeyRecord, KeyState, Keyring, Peppers};
use regex::bytes::Regex;
use serde_json::json;

use crate::cli::{Cli, RulesArg, ScanArgs};
use crate::error::CliError;
use crate::output::Output;
use crate::store::Store;

/// Files larger than this are skipped (with a note): keys live in text, not in disk images.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Where a token was found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    /// The commit that added it (`--git`), or `None` for a file on disk.
    commit: Option<String>,
    path: String,
    line: usize,
}

impl Location {
    fn text(&self) -> String {
        match &self.commit {
            Some(commit) => format!(
                "{}:{}:{} (history)",
                &commit[..commit.len().min(12)],
                self.path,
                self.line
            ),
            None => format!("{}:{}", self.path, self.line),
        }
    }
}

/// A token of a deployment format with a valid checksum.
struct Token {
    location: Location,
    /// The prefix and the id: the public part, shown instead of the key.
    masked: String,
    id: KeyId,
    /// The whole token, only to check its digest; never printed.
    key: Vec<u8>,
    format: usize,
}

/// What a token turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The key's secret, checked against its digest.
    Verified,
    /// A key's id; its secret could not be checked (no pepper given).
    Unverified,
    /// A key's id with another secret: not this key.
    NotTheSecret,
    /// No key has this id (deleted, or another deployment with the same prefix).
    UnknownId,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Unverified => "unverified",
            Self::NotTheSecret => "wrong_secret",
            Self::UnknownId => "unknown_id",
        }
    }
}

/// `keygate scan`.
pub(crate) async fn scan(cli: &Cli, args: &ScanArgs, out: Output<'_>) -> Result<(), CliError> {
    let now = SystemTime::now();
    let store = Store::open_existing(&cli.database_url).await?;
    let formats = formats(cli, store.as_ref()).await?;
    if let Some(rules) = args.rules {
        out.line(&match rules {
            RulesArg::Gitleaks => gitleaks_rules(&formats),
            RulesArg::Trufflehog => trufflehog_rules(&formats),
        });
        return Ok(());
    }
    let Some(store) = store else {
        return Err(CliError::usage(format!(
            "there is no key store at {} to look the keys up in (set --database-url / KEYGATE_DATABASE_URL)",
            cli.database_url
        )));
    };
    if args.paths.is_empty() {
        return Err(CliError::usage(
            "name the files or directories to scan, like `keygate scan .` (or --rules gitleaks|trufflehog)",
        ));
    }
    let matcher = Matcher::new(&formats)?;
    let mut tokens = Vec::new();
    for path in &args.paths {
        matcher.scan_path(path, &mut tokens)?;
        if args.git {
            matcher.scan_history(path, &mut tokens)?;
        }
    }
    let keyring = verifying_keyring(cli, &store, &formats).await?;
    let mut records: HashMap<KeyId, Option<KeyRecord>> = HashMap::new();
    let mut active = 0_usize;
    for token in &tokens {
        let record = match records.entry(token.id) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => new.insert(store.keys().find(&token.id).await?),
        };
        let record = record.as_ref();
        let verdict = verdict(token, record, keyring.as_ref(), &formats);
        let state = record
            .filter(|_| matches!(verdict, Verdict::Verified | Verdict::Unverified))
            .map(|record| record.state(now));
        // A canary is a decoy, planted to be found: it authenticates nothing.
        if state == Some(KeyState::Active) && !record.is_some_and(|r| r.canary) {
            active += 1;
        }
        report(out, token, record, verdict, state);
    }
    let summary = format!(
        "keygate scan: {} key{} of this deployment found, {active} of {} active",
        tokens.len(),
        if tokens.len() == 1 { "" } else { "s" },
        if active == 1 { "it" } else { "them" },
    );
    // On stderr, so stdout stays one find per line (or JSON lines).
    eprintln!("{summary}");
    if active > 0 {
        return Err(CliError::ActiveKeysFound(format!(
            "{active} active key{} found: rotate or revoke {} (keygate rotate ID / keygate revoke ID), then remove {} from the files and their history",
            if active == 1 { "" } else { "s" },
            if active == 1 { "it" } else { "them" },
            if active == 1 { "it" } else { "them" },
        )));
    }
    Ok(())
}

/// The deployment's key formats: the prefixes the store records (its default prefix and
/// those of its environments), else `--prefix` / `KEYGATE_PREFIX`, else the default. A prefix
/// given that the store does not record is refused, as `create` refuses it.
async fn formats(cli: &Cli, store: Option<&Store>) -> Result<Vec<KeyFormat>, CliError> {
    let settings = match store {
        Some(store) => store.keys().settings().await?,
        None => None,
    };
    let recorded: Vec<&str> = settings
        .as_ref()
        .map(keygate::store::StoreSettings::prefixes)
        .unwrap_or_default();
    let given = crate::commands::given_prefix(cli);
    let prefixes = match (given, recorded.is_empty()) {
        (Some(given), false) if !recorded.contains(&given) => {
            return Err(CliError::Settings(format!(
                "the key store's keys use prefix{} `{}`, and --prefix / KEYGATE_PREFIX gives `{given}`: leave the prefix out to scan for the store's keys",
                if recorded.len() == 1 { "" } else { "es" },
                recorded.join("`, `"),
            )));
        }
        (_, false) => recorded,
        (Some(given), true) => vec![given],
        (None, true) => vec![crate::commands::DEFAULT_PREFIX],
    };
    prefixes
        .into_iter()
        .map(|prefix| KeyFormat::new(prefix).map_err(|e| CliError::usage(e.to_string())))
        .collect()
}

/// The keyring that checks found secrets: the peppers given, else the development pepper on a
/// development store; checked against the store's settings. `None`: no pepper, finds stay
/// unverified.
async fn verifying_keyring(
    cli: &Cli,
    store: &Store,
    formats: &[KeyFormat],
) -> Result<Option<Keyring>, CliError> {
    let peppers = match crate::commands::given_peppers(cli)? {
        Some(peppers) => peppers,
        None => {
            let development = store
                .keys()
                .settings()
                .await?
                .is_some_and(|settings| settings.is_development());
            if !development {
                return Ok(None);
            }
            Peppers::development()
        }
    };
    keygate::store::check_peppers(store.keys(), store.admin(), &peppers).await?;
    Ok(formats
        .first()
        .map(|format| Keyring::new(format.clone(), peppers)))
}

fn verdict(
    token: &Token,
    record: Option<&KeyRecord>,
    keyring: Option<&Keyring>,
    formats: &[KeyFormat],
) -> Verdict {
    let Some(record) = record else {
        return Verdict::UnknownId;
    };
    if record.prefix != formats[token.format].prefix() {
        // The id of a key of another format: not this key.
        return Verdict::NotTheSecret;
    }
    let Some(keyring) = keyring else {
        return Verdict::Unverified;
    };
    let Ok(parsed) = formats[token.format].parse(&token.key) else {
        return Verdict::NotTheSecret;
    };
    if keyring.matches(
        &parsed.to_presented(),
        record.pepper_version,
        &record.digest,
    ) {
        Verdict::Verified
    } else {
        Verdict::NotTheSecret
    }
}

fn report(
    out: Output<'_>,
    token: &Token,
    record: Option<&KeyRecord>,
    verdict: Verdict,
    state: Option<KeyState>,
) {
    let location = &token.location;
    if out.is_json() {
        out.json_line(&json!({
            "path": location.path,
            "line": location.line,
            "commit": location.commit,
            "key": token.masked,
            "id": token.id.as_str(),
            "match": verdict.as_str(),
            "name": record.map(|r| r.name.as_str()),
            "owner": record.and_then(|r| r.owner.as_deref()),
            "state": state.map(KeyState::as_str),
            "canary": record.map(|r| r.canary),
        }));
        return;
    }
    let what = match (verdict, record, state) {
        (Verdict::Verified | Verdict::Unverified, Some(record), Some(state)) => format!(
            "key {} \"{}\", owner {}: {}{}{}",
            record.id,
            record.name,
            record.owner.as_deref().unwrap_or("-"),
            state.as_str().to_uppercase(),
            if record.canary {
                " (a canary: a decoy every service refuses; its use raises an alarm)"
            } else {
                ""
            },
            if verdict == Verdict::Unverified {
                " (secret not checked: no pepper given)"
            } else {
                ""
            },
        ),
        (Verdict::NotTheSecret, Some(record), _) => format!(
            "the id of key {} \"{}\", with another secret: not this key",
            record.id, record.name
        ),
        _ => "no key has this id (deleted, or another deployment's)".to_owned(),
    };
    out.line(&format!("{}: {}  {what}", location.text(), token.masked));
}

/// Finds tokens of the deployment's formats in bytes.
struct Matcher<'a> {
    formats: &'a [KeyFormat],
    regex: Regex,
}

impl<'a> Matcher<'a> {
    fn new(formats: &'a [KeyFormat]) -> Result<Self, CliError> {
        let alternatives: Vec<String> = formats.iter().map(KeyFormat::scanner_regex).collect();
        // ASCII word boundaries: files need not be UTF-8.
        let regex = Regex::new(&format!("(?-u){}", alternatives.join("|")))
            .map_err(|e| CliError::Unavailable(format!("the scanner's pattern: {e}")))?;
        Ok(Self { formats, regex })
    }

    /// Every token with a valid checksum in `text`, whose first line is line `first_line`.
    fn tokens(&self, text: &[u8], first_line: usize, each: &mut impl FnMut(Token)) {
        let mut line = first_line;
        let mut counted = 0;
        for found in self.regex.find_iter(text) {
            line += text[counted..found.start()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            counted = found.start();
            let key = found.as_bytes();
            let Some((format, parsed)) = self
                .formats
                .iter()
                .enumerate()
                .find_map(|(i, format)| format.parse(key).ok().map(|parsed| (i, parsed)))
            else {
                continue; // a bad checksum: made up, or mangled
            };
            let id = parsed.id();
            let masked = format!("{}_{}_…", self.formats[format].prefix(), id);
            each(Token {
                location: Location {
                    commit: None,
                    path: String::new(),
                    line,
                },
                masked,
                id,
                key: key.to_vec(),
                format,
            });
        }
    }

    /// A file, or every file under a directory (not following symbolic links; `.git` skipped).
    fn scan_path(&self, path: &Path, tokens: &mut Vec<Token>) -> Result<(), CliError> {
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .collect();
            entries.sort();
            for entry in entries {
                if entry.file_name().is_some_and(|name| name == ".git") {
                    continue;
                }
                self.scan_path(&entry, tokens)?;
            }
        } else if meta.is_file() {
            if meta.len() > MAX_FILE_BYTES {
                eprintln!(
                    "keygate scan: note: skipped {} (larger than 64 MiB)",
                    path.display()
                );
                return Ok(());
            }
            let text = match std::fs::read(path) {
                Ok(text) => text,
                Err(e) => {
                    eprintln!("keygate scan: note: skipped {}: {e}", path.display());
                    return Ok(());
                }
            };
            let shown = path.display().to_string();
            self.tokens(&text, 1, &mut |mut token| {
                token.location.path.clone_from(&shown);
                tokens.push(token);
            });
        }
        Ok(())
    }

    /// The history of the git repository `path` is in: every line any commit on any ref added.
    fn scan_history(&self, path: &Path, tokens: &mut Vec<Token>) -> Result<(), CliError> {
        let dir = if path.is_dir() {
            path
        } else {
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
        };
        let mut child = Process::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "log",
                "--all",
                "--format=commit %H",
                "-p",
                "--unified=0",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                "--no-renames",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CliError::usage(format!("--git needs git: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| CliError::Unavailable("git's output could not be read".to_owned()))?;
        let mut history = History::default();
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(CliError::Unavailable(format!("reading git log: {e}"))),
            }
            if let Some((added, at)) = history.line(&line) {
                let location = history.location(at);
                self.tokens(added, at, &mut |mut token| {
                    token.location = location.clone();
                    tokens.push(token);
                });
            }
        }
        let mut errors = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut errors);
        }
        let status = child
            .wait()
            .map_err(|e| CliError::Unavailable(format!("git: {e}")))?;
        if !status.success() {
            return Err(CliError::usage(format!(
                "--git: {} is not in a git repository with history ({})",
                dir.display(),
                errors.trim()
            )));
        }
        Ok(())
    }
}

/// The state of reading `git log -p --unified=0`: the commit and file, and the line number of
/// the current hunk's next added line.
///
/// Headers (`--- a/…`, `+++ b/…`) come only after a `diff --git` line, which ends a hunk, so
/// inside a hunk a line starting with `+` is always content, even one reading `+++ b/…`.
#[derive(Default)]
struct History {
    commit: String,
    path: Option<String>,
    in_hunk: bool,
    next: usize,
}

impl History {
    /// Reads one line of the log; an added line's content and its line number in the file.
    fn line<'l>(&mut self, line: &'l [u8]) -> Option<(&'l [u8], usize)> {
        if self.in_hunk {
            match line.first() {
                Some(b'+') => {
                    self.next += 1;
                    return self.path.as_ref().map(|_| (&line[1..], self.next - 1));
                }
                // A removed line, or "\ No newline at end of file".
                Some(b'-' | b'\\') => return None,
                _ => self.in_hunk = false,
            }
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        if let Some(commit) = text.strip_prefix("commit ") {
            commit.clone_into(&mut self.commit);
            self.path = None;
        } else if let Some(path) = text.strip_prefix("+++ ") {
            self.path = path.strip_prefix("b/").map(str::to_owned);
        } else if let Some(hunk) = text.strip_prefix("@@ ") {
            // "@@ -a[,b] +c[,d] @@": added lines are numbered from c.
            if let Some(start) = hunk
                .split(' ')
                .nth(1)
                .and_then(|added| added.strip_prefix('+'))
                .and_then(|added| added.split(',').next()?.parse().ok())
            {
                self.next = start;
                self.in_hunk = true;
            }
        }
        None
    }

    fn location(&self, line: usize) -> Location {
        Location {
            commit: Some(self.commit.clone()),
            path: self.path.clone().unwrap_or_default(),
            line,
        }
    }
}

/// gitleaks rules (TOML, a whole `.gitleaks.toml`; `useDefault` keeps gitleaks' own rules), as
/// in docs/secret-scanning.md.
fn gitleaks_rules(formats: &[KeyFormat]) -> String {
    let mut text = String::from(
        "# keygate API keys, for gitleaks 8: save as .gitleaks.toml, then `gitleaks git .`\n[extend]\nuseDefault = true\n",
    );
    for format in formats {
        let prefix = format.prefix();
        text.push_str(&format!(
            "\n[[rules]]\nid = \"keygate-{}\"\ndescription = \"keygate API key ({prefix})\"\nregex = '''{}'''\nkeywords = [\"{prefix}_\"]\ntags = [\"api-key\", \"keygate\"]\n",
            prefix.replace('_', "-"),
            format.scanner_regex()
        ));
    }
    text.truncate(text.trim_end().len());
    text
}

/// TruffleHog custom detectors (YAML, for `trufflehog … --config FILE`), as in
/// docs/secret-scanning.md.
fn trufflehog_rules(formats: &[KeyFormat]) -> String {
    let mut text = String::from(
        "# keygate API keys, for TruffleHog: save as keygate.yaml, then `trufflehog git file://. --config=keygate.yaml`\ndetectors:\n",
    );
    for format in formats {
        let prefix = format.prefix();
        text.push_str(&format!(
            "  - name: keygate-{}\n    keywords:\n      - {prefix}_\n    regex:\n      key: '{}'\n",
            prefix.replace('_', "-"),
            format.scanner_regex()
        ));
    }
    text.truncate(text.trim_end().len());
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_numbers_added_lines_and_ignores_removed_ones() {
        let log = "commit abc\n\
diff --git a/f.txt b/f.txt\n\
--- a/f.txt\n\
+++ b/f.txt\n\
@@ -3 +3,2 @@\n\
-old\n\
+++ b/not-a-header\n\
+second\n\
\\ No newline at end of file\n\
@@ -9,0 +10 @@\n\
+tenth\n\
diff --git a/g.txt b/g.txt\n\
--- a/g.txt\n\
+++ b/g.txt\n\
@@ -1,2 +0,0 @@\n\
--- a/looks-like-a-header\n\
-gone\n\
commit def\n\
+++ /dev/null\n\
@@ -1 +0,0 @@\n\
-gone\n";
        let mut history = History::default();
        let mut added = Vec::new();
        for line in log.split_inclusive('\n') {
            if let Some((text, at)) = history.line(line.as_bytes()) {
                added.push((
                    String::from_utf8_lossy(text).trim_end().to_owned(),
                    at,
                    history.location(at).path,
                ));
            }
        }
        assert_eq!(
            added,
            [
                ("++ b/not-a-header".to_owned(), 3, "f.txt".to_owned()),
                ("second".to_owned(), 4, "f.txt".to_owned()),
                ("tenth".to_owned(), 10, "f.txt".to_owned()),
            ]
        );
    }

    #[test]
    fn only_tokens_with_a_valid_checksum_are_found_and_lines_are_counted() {
        let formats = [KeyFormat::new("acme_live").unwrap()];
        let (_, key) = formats[0].generate();
        let key = key.expose_secret().to_owned();
        let mut bad = key.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'a' { b'b' } else { b'a' };
        let text = format!(
            "line one\nx={key}\n{}\nother_live_AAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n\"{key}\"\n",
            String::from_utf8(bad).unwrap()
        );
        let matcher = Matcher::new(&formats).unwrap();
        let mut lines = Vec::new();
        matcher.tokens(text.as_bytes(), 1, &mut |token| {
            assert!(!token.masked.contains(&key[key.len() - 10..]));
            lines.push(token.location.line);
        });
        assert_eq!(lines, [2, 5]);
    }

    #[test]
    fn rules_are_the_scanning_guides() {
        // docs/secret-scanning.md's rules for `acme_live`, whose regex a test of the keygate
        // crate checks against the library's: the printed rules are the same, comment aside.
        let guide = include_str!("../../../docs/secret-scanning.md");
        let formats = [KeyFormat::new("acme_live").unwrap()];
        for rules in [gitleaks_rules(&formats), trufflehog_rules(&formats)] {
            let (comment, body) = rules.split_once('\n').unwrap();
            assert!(comment.starts_with("# keygate API keys"));
            assert!(guide.contains(body), "not in the guide:\n{body}");
        }
    }
}
