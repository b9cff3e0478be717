//! The web console over HTTP: the page and its assets are served without a key, with the
//! strict Content-Security-Policy and their content types, under any mount path; every API
//! route the page calls still needs an admin key; and the page's sources keep to the rules the
//! CSP and the no-storage design set (no inline script or style, no HTML built from data, no
//! cookie or web storage, nothing from another origin). The page itself is driven in a real
//! browser by examples/axum-quickstart/tests/console_browser.rs (keys, the environment picker,
//! owners and their bulk actions, usage, audit).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::Router;
use axum::body::Body;
use common::fixture;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate_admin::{AdminApi, CONSOLE_CSP};
use tower::ServiceExt;

/// GET `path` on `app` without credentials: status, headers, body.
async fn get(app: &Router, path: &str) -> (StatusCode, HeaderMap, String) {
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

const ASSETS: [(&str, &str); 3] = [
    ("/console", "text/html; charset=utf-8"),
    ("/console.js", "text/javascript; charset=utf-8"),
    ("/console.css", "text/css; charset=utf-8"),
];

#[test]
fn the_csp_is_the_strict_one() {
    let directives: Vec<&str> = CONSOLE_CSP.split(';').map(str::trim).collect();
    for expected in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            directives.contains(&expected),
            "{expected} in {CONSOLE_CSP}"
        );
    }
    assert_eq!(directives.len(), 8, "{CONSOLE_CSP}");
    assert!(!CONSOLE_CSP.contains("unsafe"), "{CONSOLE_CSP}");
}

#[tokio::test]
async fn the_page_and_its_assets_load_without_a_key_with_the_csp_and_their_types() {
    let f = fixture().await;
    for (path, content_type) in ASSETS {
        let (status, headers, body) = get(&f.app, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            CONSOLE_CSP,
            "{path}"
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{path}");
        assert!(!headers.contains_key(header::SET_COOKIE), "{path}");
        assert!(body.len() > 100, "{path}: {body}");
    }
}

#[tokio::test]
async fn every_api_route_the_console_calls_needs_a_key() {
    let f = fixture().await;
    // The routes of the document are the API: each refuses a request without a key.
    let (_, _, document) = get(&f.app, "/openapi.json").await;
    let document: serde_json::Value = serde_json::from_str(&document).unwrap();
    let mut checked = 0;
    for (route, item) in document["paths"].as_object().unwrap() {
        let path = route.replace("{id}", f.target.as_str());
        for method in ["get", "put", "post", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let answer = common::send_to(&f.app, &m, &path, None, None).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {route}");
            checked += 1;
        }
    }
    assert!(checked >= 16, "{checked} routes");
    // And the paths the script calls are among them: keys, environments, owners, usage, audit,
    // all relative.
    let (_, _, script) = get(&f.app, "/console.js").await;
    for call in [
        "api(\"GET\", \"keys",
        "api(\"POST\", \"keys\"",
        "api(\"GET\", \"environments\")",
        "api(\"GET\", \"owners/\" + encodeURIComponent(id))",
        "\"owners/\" + encodeURIComponent(owner.id) + \"/\" + verb.toLowerCase()",
        "path: \"owners\"",
        "\"owners/\" + encodeURIComponent(owner.id) + \"/quota\"",
        "\"owners/\" + encodeURIComponent(owner.id) + \"/credits\"",
        "api(\"GET\", \"usage\"",
        "\"audit\" +",
    ] {
        assert!(script.contains(call), "{call:?} in console.js");
    }
    for (route, _) in document["paths"].as_object().unwrap() {
        assert!(!script.contains(&format!("\"{route}")), "absolute {route}");
    }
}

#[tokio::test]
async fn the_console_works_nested_under_any_path() {
    let f = fixture().await;
    let app: Router = Router::new().nest("/ops/keygate", f.app.clone());
    for (path, content_type) in ASSETS {
        let (status, headers, _) = get(&app, &format!("/ops/keygate{path}")).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], content_type);
    }
    // The page names its assets relatively (resolved against /ops/keygate/console they are
    // /ops/keygate/console.js and .css), and the script derives the API's base from its own URL.
    let (_, _, page) = get(&app, "/ops/keygate/console").await;
    assert!(page.contains(r#"<script src="console.js" defer></script>"#));
    assert!(page.contains(r#"<link rel="stylesheet" href="console.css">"#));
    let (_, _, script) = get(&app, "/ops/keygate/console.js").await;
    assert!(script.contains(r#"new URL(".", script ? script.src : location.href)"#));
    assert!(script.contains("fetch(new URL(path, base), init)"));
}

#[tokio::test]
async fn the_console_can_be_left_out() {
    let f = fixture().await;
    let app: Router = AdminApi::new(f.verifier.admin(), f.verifier.clone())
        .console(false)
        .router();
    for (path, _) in ASSETS {
        let (status, _, _) = get(&app, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _, _) = get(&app, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_audit_filter_offers_every_action() {
    let f = fixture().await;
    let (_, _, page) = get(&f.app, "/console").await;
    let select = page
        .split("<select id=\"audit-action\">")
        .nth(1)
        .and_then(|rest| rest.split("</select>").next())
        .expect("the audit page's action filter");
    for action in keygate::audit::Action::ALL {
        let name = action.as_str();
        assert!(
            select.contains(&format!("<option value=\"{name}\">{name}</option>")),
            "the action filter lacks {name}"
        );
    }
}

#[tokio::test]
async fn the_sources_keep_to_the_csp_and_store_nothing() {
    let f = fixture().await;
    let (_, _, page) = get(&f.app, "/console").await;
    let (_, _, script) = get(&f.app, "/console.js").await;
    let (_, _, style) = get(&f.app, "/console.css").await;
    let lower = page.to_lowercase();
    // One script, by URL; no inline script, style element or attribute, or event handler.
    assert_eq!(lower.matches("<script").count(), 1);
    assert!(lower.contains("<script src=\"console.js\" defer></script>"));
    assert!(!lower.contains("<style"), "a <style> element");
    assert!(!lower.contains(" style="), "a style attribute");
    assert!(!lower.contains("javascript:"), "a javascript: URL");
    for handler in [
        " onclick=",
        " onload=",
        " onsubmit=",
        " onerror=",
        " oninput=",
    ] {
        assert!(!lower.contains(handler), "{handler}");
    }
    // Nothing from another origin.
    for source in [&page, &script, &style] {
        // (The SVG namespace is a name, not a URL loaded.)
        let source = source.replace("http://www.w3.org/2000/svg", "");
        assert!(!source.contains("http://"), "an http:// URL");
        assert!(!source.contains("https://"), "an https:// URL");
        assert!(!source.contains("@import"), "an @import");
    }
    // No HTML from strings, no eval, no cookie, no web storage.
    for banned in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "document.cookie",
        "localStorage",
        "sessionStorage",
        "indexedDB",
        ".style.",
        "setAttribute(\"style\"",
    ] {
        assert!(!script.contains(banned), "console.js uses {banned}");
    }
    // The key goes as a bearer header, never with credentials (cookies) or a referrer.
    assert!(script.contains(r#"Authorization: "Bearer " + adminKey"#));
    assert!(script.contains(r#"credentials: "omit""#));
}
