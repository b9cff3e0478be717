//! The example's own check, against the machine's PostgreSQL and Redis
//! (`KEYGATE_TEST_POSTGRES_URL`, `KEYGATE_TEST_REDIS_URL`; unset skips, set but unreachable
//! fails): two instances share a key's limit, and a revoke made elsewhere is refused by both
//! within a second, over each invalidation channel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use example_multi_instance::{Channel, Config, app, verifier};
use keygate::{KeyAdmin, NewKey};
use tower::ServiceExt;

/// A schema of its own on the test server, dropped at the end: the store records its
/// deployment's prefix and peppers, so this example must not share a schema with other
/// deployments (benchmarks, other tests) on the same database.
struct Schema {
    admin: keygate_sqlx::sqlx::PgPool,
    name: String,
}

impl Schema {
    async fn create(base: &str) -> Self {
        let admin = keygate_sqlx::sqlx::PgPool::connect(base).await.unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!("kgex_{}_{nanos}", std::process::id());
        keygate_sqlx::sqlx::query(keygate_sqlx::sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {name}"
        )))
        .execute(&admin)
        .await
        .unwrap();
        Self { admin, name }
    }

    /// `base` with this schema as the search path.
    fn url(&self, base: &str) -> String {
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}options=-c%20search_path%3D{}", self.name)
    }

    async fn drop_now(self) {
        let _ = keygate_sqlx::sqlx::query(keygate_sqlx::sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.name
        )))
        .execute(&self.admin)
        .await;
    }
}

fn config(channel: Channel, schema: &Schema) -> Option<Config> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(base), Some(redis_url)) = (
        var("KEYGATE_TEST_POSTGRES_URL"),
        var("KEYGATE_TEST_REDIS_URL"),
    ) else {
        return None;
    };
    Some(Config {
        database_url: schema.url(&base),
        redis_url,
        channel,
        prefix: "kgex".to_owned(),
        // run.sh's demo pepper: the test and the demo may share the database.
        peppers: keygate::Peppers::parse("1:multi-instance-demo-pepper-not-a-secret-0123456789")
            .unwrap(),
        redis_prefix: format!("keygate-example-{}", std::process::id()),
        cache_ttl: Duration::from_secs(30),
        stale_if_error: Duration::ZERO,
        fail_closed: false,
        failure_limit: None,
    })
}

async fn status(app: &axum::Router, key: &str) -> StatusCode {
    let request = Request::get("/hello")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(request).await.unwrap().status()
}

async fn subscribed(verifier: &keygate::Verifier) {
    let started = Instant::now();
    while verifier.invalidation_subscribed() != Some(true) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not subscribed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_limit_and_both_refuse_a_revoked_key() {
    let Some(base) = std::env::var("KEYGATE_TEST_POSTGRES_URL")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        println!("note: KEYGATE_TEST_POSTGRES_URL / KEYGATE_TEST_REDIS_URL not set: skipped");
        return;
    };
    let schema = Schema::create(&base).await;
    for channel in [Channel::Postgres, Channel::Redis] {
        let Some(config) = config(channel, &schema) else {
            println!("note: KEYGATE_TEST_REDIS_URL not set: skipped");
            return;
        };
        let (a, b, operator) = (
            verifier(&config).await.unwrap(),
            verifier(&config).await.unwrap(),
            verifier(&config).await.unwrap(),
        );
        subscribed(&a).await;
        subscribed(&b).await;
        let (app_a, app_b) = (app(a, "a"), app(b, "b"));
        let created = operator
            .admin()
            .create_key(
                NewKey::new("example")
                    .rate_limit("10/1m".parse::<keygate::rate::RatePolicy>().unwrap()),
            )
            .await
            .unwrap();
        let key = created.key.expose_secret().to_owned();
        let mut codes = Vec::new();
        for i in 0..12 {
            let app = if i % 2 == 0 { &app_a } else { &app_b };
            codes.push(status(app, &key).await);
        }
        let allowed = codes.iter().filter(|c| **c == StatusCode::OK).count();
        let limited = codes
            .iter()
            .filter(|c| **c == StatusCode::TOO_MANY_REQUESTS)
            .count();
        assert_eq!((allowed, limited), (10, 2), "{channel:?}: {codes:?}");

        operator.admin().revoke(&created.record.id).await.unwrap();
        let revoked = Instant::now();
        for app in [&app_a, &app_b] {
            while status(app, &key).await != StatusCode::UNAUTHORIZED {
                assert!(
                    revoked.elapsed() < Duration::from_secs(1),
                    "{channel:?}: the revoked key is still accepted after 1 s"
                );
            }
        }
        println!(
            "{channel:?}: both instances refuse after {:?}",
            revoked.elapsed()
        );
    }
    schema.drop_now().await;
}
