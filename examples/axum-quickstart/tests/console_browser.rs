//! The web console in a real browser: headless Chromium driven over WebDriver (chromedriver)
//! against the axum quickstart binary, started on SQLite in an empty directory.
//!
//! An admin key is minted with `keygate create --admin` (the `keygate` binary `cargo test
//! --workspace` builds beside this test; the library when it is missing), typed into the
//! console; a key is created in the console and copied from the page; the quickstart accepts
//! it (200); it is revoked in the console, with the confirmation; the quickstart refuses it
//! within 1 s; the usage chart and the audit view show exactly those requests. A second test
//! serves the admin API in process with a keyring of two environments and an owner: picking an
//! environment lists its keys only, and the owners view disables all of an owner's keys after
//! the confirmation. Screenshots of each state go to target/console-screenshots/ for review.
//!
//! Chromium and chromedriver: `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's
//! `chromium` and `chromium-driver`), or `KEYGATE_CHROMIUM` and `KEYGATE_CHROMEDRIVER`. When
//! they are missing the test prints a note and passes, unless `KEYGATE_TEST_BROWSER=1` (as
//! `.ci/run` sets), where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(missing_docs)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use keygate::{KeyAdmin, KeyFormat, Keyring, NewKey, Peppers, Verifier};
use keygate_sqlx::SqliteStore;
use serde_json::{Value, json};

mod common;

use common::tour::{self, Quickstart};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// A child process, killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Chromium and chromedriver, if installed.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |env: &str, default: &str| {
        let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
        path.is_file().then_some(path)
    };
    Some((
        find("KEYGATE_CHROMIUM", "/usr/bin/chromium")?,
        find("KEYGATE_CHROMEDRIVER", "/usr/bin/chromedriver")?,
    ))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The quickstart in `dir`, and the console's URL from its tour.
fn start_quickstart(dir: &Path) -> (Quickstart, String) {
    let quickstart = Quickstart::start(env!("CARGO_BIN_EXE_example-axum-quickstart"), dir);
    let tour = &quickstart.tour;
    assert!(
        tour.contains("keygate create --admin"),
        "the tour does not say how to mint an admin key:\n{tour}"
    );
    let console = tour
        .lines()
        .find_map(|line| line.split("web console: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no console URL in:\n{tour}"))
        .to_owned();
    assert_eq!(console, format!("{}/keygate/console", quickstart.url));
    (quickstart, console)
}

/// An admin key for the quickstart's store in `dir`: with the `keygate` binary beside this
/// test, as an operator would, else through the library.
fn mint_admin_key(dir: &Path) -> String {
    if let Some(bin) = tour::cli() {
        let out = tour::keygate(
            &bin,
            dir,
            &["create", "--admin", "--name", "console-operator", "--json"],
        );
        let created: Value = serde_json::from_slice(&out.stdout).unwrap();
        return created["key"].as_str().unwrap().to_owned();
    }
    println!("note: target/debug/keygate is not built: minting the admin key with the library");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = SqliteStore::open(dir.join("keygate.db")).await.unwrap();
            let keyring =
                Keyring::new(KeyFormat::new("demo_test").unwrap(), Peppers::development());
            let verifier = Verifier::builder(keyring, store).start().await.unwrap();
            let spec = NewKey::new("console-operator")
                .scope(keygate_admin::READ_SCOPE)
                .unwrap()
                .scope(keygate_admin::WRITE_SCOPE)
                .unwrap();
            let created = verifier.admin().create_key(spec).await.unwrap();
            created.key.expose_secret().to_owned()
        })
}

/// `GET /hello` with `key` on a fresh connection: the status.
fn hello(url: &str, key: &str) -> u16 {
    tour::get(url, "/hello", Some(key))
}

/// chromedriver on a free loopback port, answering.
fn start_chromedriver(chromedriver: &Path) -> (Killed, String) {
    let port = free_port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "chromedriver does not answer on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("http://127.0.0.1:{port}"))
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Page {
    client: Client,
    shots: PathBuf,
}

impl Page {
    async fn shot(&self, name: &str) -> Result<()> {
        let png = self.client.screenshot().await?;
        std::fs::write(self.shots.join(format!("{name}.png")), png)?;
        Ok(())
    }

    async fn wait(&self, css: &str) -> Result<fantoccini::elements::Element> {
        Ok(self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await?)
    }

    /// Clicks the element `css` finds, again if the page re-rendered it meanwhile.
    async fn click(&self, css: &str) -> Result<()> {
        let mut tries = 0;
        loop {
            match self.wait(css).await?.click().await {
                Ok(()) => return Ok(()),
                Err(e) if tries < 5 && e.to_string().contains("stale element") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let input = self.wait(css).await?;
        input.clear().await?;
        input.send_keys(text).await?;
        Ok(())
    }

    async fn text(&self, css: &str) -> Result<String> {
        Ok(self.wait(css).await?.text().await?)
    }

    async fn js(&self, script: &str) -> Result<Value> {
        Ok(self.client.execute(script, vec![]).await?)
    }

    /// Polls `check` until it holds, at most `secs` seconds (an error, such as an element
    /// re-rendered while read, counts as not yet).
    async fn until<F, Fut>(&self, what: &str, secs: u64, mut check: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let started = Instant::now();
        loop {
            let last = match check().await {
                Ok(true) => return Ok(()),
                Ok(false) => String::new(),
                Err(e) => format!(" (last: {e})"),
            };
            if started.elapsed() > Duration::from_secs(secs) {
                return Err(format!("{what}: not within {secs} s{last}").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Chromium and chromedriver, or `None` (after a note) when the browser tests are skipped;
/// missing with `KEYGATE_TEST_BROWSER=1`, a failure.
fn browser_or_skip() -> Option<(PathBuf, PathBuf)> {
    let required = std::env::var("KEYGATE_TEST_BROWSER").is_ok_and(|v| v == "1");
    let found = browser();
    if found.is_none() {
        assert!(
            !required,
            "KEYGATE_TEST_BROWSER=1 but chromium or chromedriver is missing ($KEYGATE_CHROMIUM \
             or /usr/bin/chromium, $KEYGATE_CHROMEDRIVER or /usr/bin/chromedriver): \
             apt-get install chromium chromium-driver"
        );
        println!(
            "note: the console's browser test is skipped: chromium or chromedriver is missing \
             ($KEYGATE_CHROMIUM or /usr/bin/chromium, $KEYGATE_CHROMEDRIVER or \
             /usr/bin/chromedriver; apt-get install chromium chromium-driver); \
             KEYGATE_TEST_BROWSER=1 makes this a failure"
        );
    }
    found
}

/// What a browser test runs with: chromedriver (killed when dropped) and its URL, a profile
/// directory, and a runtime.
fn browser_parts(
    chromedriver: &Path,
) -> (Killed, String, tempfile::TempDir, tokio::runtime::Runtime) {
    let (driver, driver_url) = start_chromedriver(chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (driver, driver_url, profile, runtime)
}

/// A headless Chromium session through the chromedriver at `driver_url`, with its profile in
/// `profile`.
async fn open_page(chromium: &Path, driver_url: &str, profile: &Path) -> Page {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1280,800",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(driver_url)
        .await
        .expect("a WebDriver session with chromedriver");
    Page {
        client,
        shots: screenshots_dir(),
    }
}

/// Ends the session; a failed `outcome` fails the test, after a screenshot `{failure}.png`.
async fn finish(page: Page, outcome: Result<()>, failure: &str) {
    if outcome.is_err() {
        let _ = page.shot(failure).await;
    }
    let _ = page.client.close().await;
    if let Err(e) = outcome {
        panic!("{e} (screenshot: target/console-screenshots/{failure}.png)");
    }
}

#[test]
fn the_console_creates_copies_and_revokes_a_key_in_chromium() {
    let Some((chromium, chromedriver)) = browser_or_skip() else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (quickstart, console) = start_quickstart(dir.path());
    let url = quickstart.url.clone();
    let admin_key = mint_admin_key(dir.path());
    let (_driver, driver_url, profile, runtime) = browser_parts(&chromedriver);
    runtime.block_on(async {
        let page = open_page(&chromium, &driver_url, profile.path()).await;
        let outcome = drive(&page, &url, &console, &admin_key).await;
        finish(page, outcome, "failure").await;
    });
    println!(
        "console browser test: {:?}; screenshots in {}",
        started.elapsed(),
        screenshots_dir().display()
    );
}

/// The operator's path through the console.
async fn drive(page: &Page, url: &str, console: &str, admin_key: &str) -> Result<()> {
    let client = &page.client;
    client.set_window_size(1280, 800).await?;
    client.goto(console).await?;
    // The style sheet applied under the CSP (the header bar's colour comes from it), and the
    // script ran (it focuses the key field).
    let bar = page
        .wait("header.top")
        .await?
        .css_value("background-color")
        .await?;
    assert!(
        bar == "rgb(36, 41, 47)" || bar == "rgba(36, 41, 47, 1)",
        "console.css not applied: {bar}"
    );
    page.until("the sign-in field focused", 5, || async {
        Ok(page.js("return document.activeElement.id").await? == json!("login-key"))
    })
    .await?;
    page.shot("01-sign-in").await?;

    // A wrong key is refused with a message; the admin key signs in.
    page.type_into("#login-key", "demo_test_notakey").await?;
    page.click("#login-form button[type=submit]").await?;
    page.until("the refusal shown", 5, || async {
        Ok(!page.text("#login-error").await?.is_empty())
    })
    .await?;
    // From the keyboard: the key, then Enter.
    page.type_into("#login-key", &format!("{admin_key}\u{E007}"))
        .await?;
    page.wait("#keys-body tr[data-key-id]").await?;
    // The key field is emptied, and nothing is kept outside the tab's memory.
    assert_eq!(
        page.wait("#login-key").await?.prop("value").await?,
        Some(String::new())
    );
    let kept = page
        .js("return [document.cookie, localStorage.length, sessionStorage.length]")
        .await?;
    assert_eq!(kept, json!(["", 0, 0]), "cookie or web storage used");
    page.shot("02-keys").await?;

    // Create a key; the dialog shows it once, with the warning and a copy button.
    page.click("#new-key").await?;
    // A name with markup in it: shown as text, never parsed.
    let name = "<img src=x onerror=alert(1)> made in the console";
    page.type_into("#create-name", name).await?;
    page.type_into("#create-scopes", "greetings:read").await?;
    page.shot("03-create-form").await?;
    page.click("#create-submit").await?;
    page.wait("#secret-dialog[open]").await?;
    let warning = page.text("#secret-warning").await?;
    assert!(warning.contains("will not be shown again"), "{warning}");
    let key = page
        .wait("#secret-value")
        .await?
        .prop("value")
        .await?
        .unwrap_or_default();
    // (Assertion messages never show a key: a test's output is a log too.)
    assert!(key.starts_with("demo_test_"), "not a demo_test key");
    page.click("#secret-copy").await?;
    page.until("the copy acknowledged", 5, || async {
        Ok(!page.text("#secret-copied").await?.is_empty())
    })
    .await?;
    // What the copy button put on the clipboard, where the browser lets the page read it back
    // (headless Chromium may not): the same key.
    let copied = page
        .js("return navigator.clipboard.readText().catch(() => null)")
        .await
        .unwrap_or(Value::Null);
    if let Value::String(copied) = copied {
        assert!(copied == key, "the clipboard holds another text");
    }
    page.shot("04-created-key").await?;
    page.click("#secret-done").await?;
    // Closed, the key leaves the page (waited for: the dialog's close event clears it; and
    // compared without printing it).
    page.until("the key cleared from the page", 5, || async {
        Ok(page
            .wait("#secret-value")
            .await?
            .prop("value")
            .await?
            .is_none_or(|v| v.is_empty()))
    })
    .await?;
    let id: String = key["demo_test_".len()..]
        .chars()
        .take(12)
        .collect::<String>();
    let row = page
        .wait(&format!("#keys-body tr[data-key-id=\"{id}\"]"))
        .await?;
    assert!(row.text().await?.contains(name), "{}", row.text().await?);
    assert_eq!(
        page.js("return document.querySelectorAll('main img, dialog img').length")
            .await?,
        json!(0),
        "data rendered as HTML"
    );

    // The quickstart accepts it.
    let mut allowed = 0u64;
    for _ in 0..3 {
        assert_eq!(hello(url, &key), 200);
        allowed += 1;
    }

    // Revoke it in the console, with the confirmation; the quickstart refuses it within 1 s.
    page.click(&format!(
        "#keys-body tr[data-key-id=\"{id}\"] button.manage"
    ))
    .await?;
    page.wait("#view-key:not([hidden])").await?;
    let fields = page.text("#key-fields").await?;
    assert!(
        fields.contains(&id) && fields.contains("greetings:read"),
        "{fields}"
    );
    page.shot("05-key-detail").await?;
    page.click("#key-revoke").await?;
    page.wait("#confirm-dialog[open]").await?;
    // The dialog opens on Cancel: Enter alone does not revoke.
    assert_eq!(
        page.js("return document.activeElement.id").await?,
        json!("confirm-no")
    );
    assert!(!page.wait("#confirm-grace").await?.is_displayed().await?);
    page.shot("06-confirm-revoke").await?;
    let revoked_at = Instant::now();
    page.click("#confirm-yes").await?;
    let mut denied = 0u64;
    loop {
        match hello(url, &key) {
            200 => allowed += 1,
            401 => {
                denied += 1;
                break;
            }
            other => return Err(format!("/hello answered {other}").into()),
        }
        if revoked_at.elapsed() > Duration::from_secs(5) {
            return Err("the revoked key is still accepted after 5 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused_after = revoked_at.elapsed();
    assert!(
        refused_after < Duration::from_secs(1),
        "revoked in the console, still accepted for {refused_after:?}"
    );
    for _ in 0..2 {
        assert_eq!(hello(url, &key), 401);
        denied += 1;
    }
    page.until("the key shown revoked", 5, || async {
        Ok(page.text("#key-fields").await?.contains("revoked"))
    })
    .await?;

    // The usage chart shows those requests (the quickstart writes its audit trail in batches,
    // within about a second).
    page.click("#key-usage").await?;
    let expected = format!("{allowed} allowed, {denied} denied");
    page.until("the usage of the key", 10, || async {
        page.click("#usage-filter button[type=submit]").await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
        Ok(page.text("#usage-summary").await?.contains(&expected))
    })
    .await?;
    let bar = page
        .js(
            "const g = [...document.querySelectorAll('#usage-svg g.day')].filter(g => g.dataset.allowed !== '0'); \
             return g.map(g => [g.dataset.allowed, g.dataset.denied, g.querySelectorAll('rect').length]);",
        )
        .await?;
    assert_eq!(
        bar,
        json!([[allowed.to_string(), denied.to_string(), 2]]),
        "the chart's bars"
    );
    page.shot("07-usage-chart").await?;

    // The audit view, filtered to the key: its requests, allowed and denied, and the revocation
    // by the admin key.
    page.click("#tab-audit").await?;
    page.type_into("#audit-key", &id).await?;
    let admin_id: String = admin_key["demo_test_".len()..].chars().take(12).collect();
    page.until("the key's audit trail", 10, || async {
        page.click("#audit-filter button[type=submit]").await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let rows = page
            .js("return [...document.querySelectorAll('#audit-body tr')].map(r => [...r.cells].map(c => c.textContent))")
            .await?;
        let rows = rows.as_array().cloned().unwrap_or_default();
        let count = |f: &dyn Fn(&Value) -> bool| rows.iter().filter(|r| f(r)).count() as u64;
        let requests_allowed = count(&|r| r[1] == "request" && r[3] == "allowed");
        let requests_denied = count(&|r| r[1] == "request" && r[3] == "denied: revoked");
        let revoked_by_admin = count(&|r| r[1] == "revoked" && r[6] == admin_id.as_str());
        let created_by_admin = count(&|r| r[1] == "created" && r[6] == admin_id.as_str());
        Ok(requests_allowed == allowed
            && requests_denied == denied
            && revoked_by_admin == 1
            && created_by_admin == 1)
    })
    .await?;
    page.shot("08-audit").await?;
    // Filters: only the denied requests.
    page.wait("#audit-outcome")
        .await?
        .select_by_value("denied")
        .await?;
    page.click("#audit-filter button[type=submit]").await?;
    page.until("the denied filter", 5, || async {
        let outcomes = page
            .js("return [...document.querySelectorAll('#audit-body tr')].map(r => r.cells[3].textContent)")
            .await?;
        Ok(outcomes.as_array().is_some_and(|o| {
            o.len() as u64 == denied && o.iter().all(|v| v == "denied: revoked")
        }))
    })
    .await?;

    // The other changes, on the demo key: rename, scopes, rate limit, expiry, disable and
    // enable (confirmed), rotate (confirmed; the new key shown once works).
    edit_and_rotate(page, url).await?;

    // A phone's width: no sideways scrolling, tables as cards.
    client.set_window_size(390, 844).await?;
    page.click("#tab-keys").await?;
    page.wait("#keys-body tr[data-key-id]").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fits = page
        .js("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        .await?;
    assert_eq!(
        fits,
        json!(true),
        "the keys view scrolls sideways at 390 px"
    );
    page.shot("10-phone-keys").await?;
    page.click("#tab-usage").await?;
    page.wait("#usage-svg").await?;
    page.shot("11-phone-usage").await?;

    // Reloading forgets the key: back to sign-in.
    client.set_window_size(1280, 800).await?;
    client.refresh().await?;
    page.wait("#view-login:not([hidden])").await?;
    assert!(
        page.wait("#view-keys")
            .await?
            .attr("hidden")
            .await?
            .is_some()
    );
    Ok(())
}

/// Finds the demo key by name, changes each property through its form, disables and enables
/// it, and rotates it: each change shows on the key's page; the rotated key works.
async fn edit_and_rotate(page: &Page, url: &str) -> Result<()> {
    page.click("#tab-keys").await?;
    page.type_into("#keys-search", "quickstart demo").await?;
    page.click("#keys-filter button[type=submit]").await?;
    page.until("the search", 5, || async {
        Ok(page
            .js("return [...document.querySelectorAll('#keys-body tr')].map(r => r.cells[0].textContent)")
            .await?
            == json!(["axum quickstart demo"]))
    })
    .await?;
    page.click("#keys-body tr button.manage").await?;
    page.wait("#view-key:not([hidden])").await?;
    let fields = || async { page.text("#key-fields").await };
    for (form, value, shown) in [
        ("#edit-name", "demo, renamed", "demo, renamed"),
        (
            "#edit-scopes",
            "greetings:read, greetings:write",
            "greetings:read greetings:write",
        ),
        ("#edit-rate", "100/1s burst 200", "100/1s burst 200"),
        ("#edit-quota", "10000/day", "10000/day"),
        (
            "#edit-limits",
            "writes: 10/1s burst 20, reads: 100/1s",
            "reads: 100/1s, writes: 10/1s burst 20",
        ),
        ("#edit-expiry", "2099-01-31", "2099-01-31 00:00:00"),
    ] {
        page.type_into(&format!("{form} input"), value).await?;
        page.click(&format!("{form} button[type=submit]")).await?;
        page.until(&format!("{form} saved"), 5, || async {
            Ok(fields().await?.contains(shown))
        })
        .await?;
    }
    // What the quota has left, read from the service's meter: the whole day's, reset at
    // midnight UTC.
    let left = || async { page.text("#key-quota-left").await };
    page.until("the day's balance", 5, || async {
        let text = left().await?;
        Ok(text.starts_with("10000 left, resets ") && text.ends_with(" 00:00:00 UTC"))
    })
    .await?;
    // Credits are added to a credits quota only: refused on 10000/day, then shown once added.
    page.type_into("#edit-credits-value", "7").await?;
    page.click("#edit-credits button[type=submit]").await?;
    page.until("the refused top-up", 5, || async {
        Ok(page.text("#status").await?.contains("not credits"))
    })
    .await?;
    assert!(fields().await?.contains("10000/day"), "nothing changed");
    page.type_into("#edit-quota-value", "credits 5").await?;
    page.click("#edit-quota button[type=submit]").await?;
    page.until("the credits quota", 5, || async {
        Ok(fields().await?.contains("credits 5"))
    })
    .await?;
    page.type_into("#edit-credits-value", "7").await?;
    page.click("#edit-credits button[type=submit]").await?;
    page.until("the top-up", 5, || async {
        Ok(fields().await?.contains("credits 5, 7 credits added"))
    })
    .await?;
    // A new kind of quota starts afresh: 5, and the 7 added, never refilled.
    page.until("the credit balance", 5, || async {
        Ok(left().await? == "12 left")
    })
    .await?;
    // The form shows what is set, in the form it takes.
    let limits = page.wait("#edit-limits-value").await?.prop("value").await?;
    assert_eq!(
        limits.as_deref(),
        Some("reads: 100/1s, writes: 10/1s burst 20")
    );
    // Text that is not "name: policy" pairs, and a policy the API refuses, are errors that
    // change nothing.
    for (typed, error) in [
        ("writes 10/1s", "name: policy"),
        ("writes: often", "limits.writes"),
    ] {
        page.type_into("#edit-limits-value", typed).await?;
        page.click("#edit-limits button[type=submit]").await?;
        page.until(&format!("the error for {typed:?}"), 5, || async {
            Ok(page.text("#status").await?.contains(error))
        })
        .await?;
        assert!(
            fields()
                .await?
                .contains("reads: 100/1s, writes: 10/1s burst 20"),
            "{typed:?} changed the limits"
        );
    }
    // Emptied, the quota and the named limits are removed.
    for (form, shown) in [("#edit-quota", "Quota"), ("#edit-limits", "Named limits")] {
        page.wait(&format!("{form} input")).await?.clear().await?;
        page.click(&format!("{form} button[type=submit]")).await?;
        let script = format!(
            "return [...document.querySelectorAll('#key-fields dt')]\
             .find(dt => dt.textContent === '{shown}').nextElementSibling.textContent"
        );
        page.until(&format!("{form} emptied"), 5, || async {
            Ok(page.js(&script).await? == json!("none"))
        })
        .await?;
    }
    for (button, state) in [("#key-disable", "disabled"), ("#key-enable", "active")] {
        page.click(button).await?;
        page.wait("#confirm-dialog[open]").await?;
        page.click("#confirm-yes").await?;
        page.until(&format!("the key {state}"), 5, || async {
            Ok(page.text("#key-fields .state").await? == state)
        })
        .await?;
    }
    page.click("#key-rotate").await?;
    page.wait("#confirm-dialog[open]").await?;
    assert!(page.wait("#confirm-grace").await?.is_displayed().await?);
    // An empty grace is asked again, not taken as 0 (which revokes the old key at once).
    page.wait("#confirm-grace-value").await?.clear().await?;
    page.click("#confirm-yes").await?;
    page.until("the grace period asked again", 5, || async {
        Ok(page.text("#confirm-error").await?.contains("whole seconds"))
    })
    .await?;
    assert_eq!(
        page.text("#key-fields .state").await?,
        "active",
        "not rotated"
    );
    // A 0 typed and cancelled does not carry over to the next rotation.
    page.type_into("#confirm-grace-value", "0").await?;
    page.click("#confirm-no").await?;
    page.click("#key-rotate").await?;
    page.wait("#confirm-dialog[open]").await?;
    let grace = page
        .wait("#confirm-grace-value")
        .await?
        .prop("value")
        .await?;
    assert_eq!(
        grace.as_deref(),
        Some("86400"),
        "the grace starts at its default"
    );
    page.type_into("#confirm-grace-value", "60").await?;
    page.click("#confirm-yes").await?;
    page.wait("#secret-dialog[open]").await?;
    let rotated = page
        .wait("#secret-value")
        .await?
        .prop("value")
        .await?
        .unwrap_or_default();
    assert!(rotated.starts_with("demo_test_"), "not a demo_test key");
    page.shot("09-rotated-key").await?;
    page.click("#secret-done").await?;
    // The page now shows the new key, made from the old one.
    let new_id: String = rotated["demo_test_".len()..].chars().take(12).collect();
    let new_fields = fields().await?;
    assert!(
        new_fields.contains(&new_id) && !new_fields.contains("Rotated from\nnone"),
        "{new_fields}"
    );
    assert_eq!(hello(url, &rotated), 200, "the rotated key");
    // Back to the list, unfiltered again.
    page.click("#key-back").await?;
    page.wait("#keys-search").await?.clear().await?;
    page.click("#keys-filter button[type=submit]").await?;
    Ok(())
}

/// An admin API with the console, in process on a free loopback port, over a memory store
/// whose keyring has two environments (`live`, the default, and `test`), seeded with an owner
/// whose name and metadata hold markup and with keys of both environments: the console's
/// URL, the admin key, the admin handle (to check the store) and the seeded keys' ids by name.
struct Seeded {
    console: String,
    admin_key: String,
    admin: keygate::Admin,
    ids: std::collections::BTreeMap<&'static str, keygate::KeyId>,
}

/// The owner the owners view is driven on; its name is markup, shown as text.
const OWNER_ID: &str = "acme-corp";
const OWNER_NAME: &str = "<b>Acme</b> & \"Co\"";

async fn seeded_admin_api() -> Result<Seeded> {
    use keygate::MemoryStore;
    use keygate::audit::MemoryAuditTrail;
    use keygate::owner::NewOwner;

    let keyring = Keyring::builder()
        .environment("live", KeyFormat::new("shop_live")?)
        .environment("test", KeyFormat::new("shop_test")?)
        .build(Peppers::development())?;
    let store = MemoryStore::new();
    let trail = MemoryAuditTrail::new().key_store(store.clone());
    let verifier = Verifier::builder(keyring, store)
        .audit_sink(trail.clone())
        .build();
    let admin = verifier.admin();
    let operator = admin
        .create_key(
            NewKey::new("console-operator")
                .scope(keygate_admin::READ_SCOPE)?
                .scope(keygate_admin::WRITE_SCOPE)?,
        )
        .await?;
    let metadata = json!({"note": "<script>alert(1)</script>"});
    let Value::Object(metadata) = metadata else {
        unreachable!("an object")
    };
    admin
        .create_owner(
            NewOwner::new(OWNER_ID)
                .name(OWNER_NAME)
                .metadata(metadata)
                .quota("credits 5".parse()?),
        )
        .await?;
    let mut ids = std::collections::BTreeMap::new();
    for (name, owner, environment) in [
        ("acme live", Some(OWNER_ID), "live"),
        ("acme test", Some(OWNER_ID), "test"),
        ("globex test", Some("globex"), "test"),
        ("unowned live", None, "live"),
    ] {
        let mut spec = NewKey::new(name).environment(environment);
        if let Some(owner) = owner {
            spec = spec.owner(owner);
        }
        ids.insert(name, admin.create_key(spec).await?.record.id);
    }
    let app: axum::Router = keygate_admin::AdminApi::new(admin.clone(), verifier)
        .audit_trail(trail)
        .router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let _ = axum::serve(listener, service).await;
    });
    Ok(Seeded {
        console: format!("http://{address}/console"),
        admin_key: operator.key.expose_secret().to_owned(),
        admin,
        ids,
    })
}

#[test]
fn the_console_filters_by_environment_and_disables_an_owners_keys_in_chromium() {
    let Some((chromium, chromedriver)) = browser_or_skip() else {
        return;
    };
    let (_driver, driver_url, profile, runtime) = browser_parts(&chromedriver);
    runtime.block_on(async {
        let seeded = seeded_admin_api().await.unwrap();
        let page = open_page(&chromium, &driver_url, profile.path()).await;
        let outcome = drive_environments_and_owners(&page, &seeded).await;
        finish(page, outcome, "failure-owners").await;
    });
}

/// The ids in the rows of table body `body` (`#keys-body`), as the page shows them.
async fn row_ids(page: &Page, body: &str) -> Result<Value> {
    page.js(&format!(
        "return [...document.querySelectorAll('{body} tr')].map(r => r.dataset.keyId).sort()"
    ))
    .await
}

fn sorted_ids(seeded: &Seeded, names: &[&str]) -> Value {
    let mut ids: Vec<String> = names.iter().map(|n| seeded.ids[n].to_string()).collect();
    ids.sort();
    json!(ids)
}

/// Picks each environment in the key list, then opens the owner in the owners view and
/// disables its keys (confirmed): the page shows them disabled, and so does the store.
async fn drive_environments_and_owners(page: &Page, seeded: &Seeded) -> Result<()> {
    let client = &page.client;
    client.set_window_size(1280, 800).await?;
    client.goto(&seeded.console).await?;
    page.type_into("#login-key", &format!("{}\u{E007}", seeded.admin_key))
        .await?;
    page.wait("#keys-body tr[data-key-id]").await?;

    // The environment picker offers the keyring's environments (from GET /environments).
    page.until("the environments offered", 5, || async {
        Ok(page
            .js("return [...document.querySelectorAll('#keys-environment option')].map(o => [o.value, o.textContent])")
            .await?
            == json!([["", "all"], ["live", "live (shop_live)"], ["test", "test (shop_test)"]]))
    })
    .await?;
    assert!(page.wait("#keys-environment").await?.is_displayed().await?);
    // Picking one lists its keys only (no Search click: the pick is enough).
    let test_keys = sorted_ids(seeded, &["acme test", "globex test"]);
    page.wait("#keys-environment")
        .await?
        .select_by_value("test")
        .await?;
    page.until("the test keys listed", 5, || async {
        Ok(row_ids(page, "#keys-body").await? == test_keys)
    })
    .await?;
    page.shot("12-environment-test").await?;
    let operator: String = seeded.admin_key["shop_live_".len()..]
        .chars()
        .take(12)
        .collect();
    let mut live: Vec<String> = ["acme live", "unowned live"]
        .iter()
        .map(|n| seeded.ids[n].to_string())
        .chain([operator])
        .collect();
    live.sort();
    page.wait("#keys-environment")
        .await?
        .select_by_value("live")
        .await?;
    page.until("the live keys listed", 5, || async {
        Ok(row_ids(page, "#keys-body").await? == json!(live))
    })
    .await?;
    // "all" again: every key.
    page.wait("#keys-environment")
        .await?
        .select_by_value("")
        .await?;
    page.until("every key listed", 5, || async {
        Ok(row_ids(page, "#keys-body").await?.as_array().map(Vec::len) == Some(5))
    })
    .await?;

    // The owners view lists the owner, its name shown as the text it is.
    page.click("#tab-owners").await?;
    let row = format!("#owners-body tr[data-owner-id=\"{OWNER_ID}\"]");
    page.wait(&row).await?;
    let name = page
        .js(&format!(
            "return document.querySelector('{}').cells[0].textContent",
            row.replace('\'', "\\'")
        ))
        .await?;
    assert_eq!(name, json!(OWNER_NAME), "the owner's name, as text");
    page.shot("13-owners").await?;

    // Its page: its record and its two keys, active.
    page.click(&format!("{row} button.manage")).await?;
    page.wait("#view-owner:not([hidden])").await?;
    let acme = sorted_ids(seeded, &["acme live", "acme test"]);
    page.until("the owner's keys listed", 5, || async {
        Ok(row_ids(page, "#owner-keys-body").await? == acme)
    })
    .await?;
    let fields = page.text("#owner-fields").await?;
    assert!(
        fields.contains(OWNER_NAME) && fields.contains("<script>alert(1)</script>"),
        "{fields}"
    );
    assert_eq!(
        page.js("return document.querySelectorAll('main b, main script, dialog b').length")
            .await?,
        json!(0),
        "owner data rendered as HTML"
    );
    // Its shared credits: the balance shown, then a top-up of 7 counted in it.
    page.until("the owner's balance", 5, || async {
        Ok(page.text("#owner-quota-left").await? == "5 left")
    })
    .await?;
    page.type_into("#owner-credits-value", "7").await?;
    page.click("#owner-credits button[type=submit]").await?;
    page.until("the owner's top-up", 5, || async {
        Ok(page
            .text("#owner-fields")
            .await?
            .contains("credits 5, 7 credits added")
            && page.text("#owner-quota-left").await? == "12 left")
    })
    .await?;
    let said = page.text("#status").await?;
    assert!(said.contains("7 credits added"), "{said}");
    assert_eq!(seeded.admin.get_owner(OWNER_ID).await?.quota_granted, 7);
    let states = || async {
        page.js("return [...document.querySelectorAll('#owner-keys-body tr')].map(r => r.cells[3].textContent)")
            .await
    };
    assert_eq!(states().await?, json!(["active", "active"]));

    // Disable its keys: a confirmation first, opening on Cancel.
    page.click("#owner-disable").await?;
    page.wait("#confirm-dialog[open]").await?;
    assert_eq!(
        page.js("return document.activeElement.id").await?,
        json!("confirm-no")
    );
    let title = page.text("#confirm-title").await?;
    assert!(title.contains(OWNER_NAME), "{title}");
    page.shot("14-confirm-owner-disable").await?;
    page.click("#confirm-yes").await?;
    page.until("the owner's keys shown disabled", 5, || async {
        Ok(states().await? == json!(["disabled", "disabled"]))
    })
    .await?;
    let said = page.text("#status").await?;
    assert!(
        said.contains("2 key(s)") && said.contains("disabled"),
        "{said}"
    );
    page.shot("15-owner-keys-disabled").await?;
    // The store agrees; the other owner's key is untouched.
    let now = std::time::SystemTime::now();
    for (name, expected) in [
        ("acme live", keygate::KeyState::Disabled),
        ("acme test", keygate::KeyState::Disabled),
        ("globex test", keygate::KeyState::Active),
    ] {
        let record = seeded.admin.get(&seeded.ids[name]).await?;
        assert_eq!(record.state(now), expected, "{name}");
    }
    Ok(())
}
