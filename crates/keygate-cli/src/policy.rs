//! `keygate policy`: show, set and clear the deployment's key lifetime policy, kept in the
//! key store's settings (see `keygate::policy`).

use keygate::Admin;
use keygate::policy::{LifetimePolicy, WritePolicyError, read_policy};

use crate::cli::{PolicyCommand, PolicySetArgs};
use crate::commands::duration;
use crate::error::CliError;
use crate::output::Output;
use crate::store::Store;

/// The policy `keygate policy set` gives, validated (before the store is opened).
pub(crate) fn policy_of(args: &PolicySetArgs) -> Result<LifetimePolicy, CliError> {
    let parse =
        |text: &Option<String>, flag| text.as_deref().map(|t| duration(t, flag)).transpose();
    let policy = LifetimePolicy {
        require_expiry: args.require_expiry,
        default_lifetime: parse(&args.default_lifetime, "--default-lifetime")?,
        max_lifetime: parse(&args.max_lifetime, "--max-lifetime")?,
        max_idle: parse(&args.max_idle, "--max-idle")?,
    };
    policy
        .validate()
        .map_err(|e| CliError::usage(format!("{e}; nothing was written")))?;
    Ok(policy)
}

/// Runs `keygate policy`; a change goes through `admin`, which audits it (`policy_changed`,
/// with the actor).
pub(crate) async fn policy(
    store: &Store,
    admin: impl FnOnce() -> Admin,
    command: &PolicyCommand,
    out: Output<'_>,
) -> Result<(), CliError> {
    let policy = match command {
        PolicyCommand::Show => read_policy(store.keys()).await?,
        PolicyCommand::Set(args) => {
            let policy = policy_of(args)?;
            write(&admin(), &policy).await?;
            policy
        }
        PolicyCommand::Clear => {
            let policy = LifetimePolicy::default();
            write(&admin(), &policy).await?;
            policy
        }
    };
    if out.is_json() {
        out.json_line(&json(&policy));
    } else {
        out.line(&format!("lifetime policy: {policy}"));
    }
    Ok(())
}

async fn write(admin: &Admin, policy: &LifetimePolicy) -> Result<(), CliError> {
    admin
        .set_lifetime_policy(policy)
        .await
        .map_err(|e| match e {
            WritePolicyError::Store(error) => error.into(),
            invalid => CliError::usage(format!("{invalid}; nothing was written")),
        })
}

/// The policy as JSON: each rule, durations in seconds (null when off).
pub(crate) fn json(policy: &LifetimePolicy) -> serde_json::Value {
    let seconds = |d: Option<std::time::Duration>| d.map(|d| d.as_secs());
    serde_json::json!({
        "require_expiry": policy.require_expiry,
        "default_lifetime_seconds": seconds(policy.default_lifetime),
        "max_lifetime_seconds": seconds(policy.max_lifetime),
        "max_idle_seconds": seconds(policy.max_idle),
    })
}
