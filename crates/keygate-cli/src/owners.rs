//! `keygate owners …` and `keygate revoke --owner`: owner records and bulk actions on their keys.

use std::time::SystemTime;

use comfy_table::{ContentArrangement, Table, presets};
use keygate::owner::{NewOwner, OwnerRecord, OwnerUpdate, validate_owner_id};
use keygate::store::MAX_OWNERS_PAGE;
use keygate::{Admin, KeyAdmin, KeyRecord, Metadata};
use serde_json::{Value, json};

use crate::cli::{OwnersCommand, RevokeArgs};
use crate::error::CliError;
use crate::output::{Output, time_text};

/// Checks an owner id given on the command line, before the store is opened.
pub(crate) fn owner_id(text: &str) -> Result<&str, CliError> {
    validate_owner_id(text).map_err(|e| CliError::usage(e.to_string()))?;
    Ok(text)
}

/// `KEY=VALUE` entries as metadata.
pub(crate) fn metadata(entries: &[String]) -> Result<Metadata, CliError> {
    let mut metadata = Metadata::new();
    for entry in entries {
        let (key, value) = entry
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| CliError::usage(format!("bad --meta {entry:?}: use KEY=VALUE")))?;
        metadata.insert(
            key.trim().to_owned(),
            serde_json::Value::String(value.to_owned()),
        );
    }
    Ok(metadata)
}

/// Validates an `owners` command without touching the store.
pub(crate) fn check(command: &OwnersCommand, now: SystemTime) -> Result<(), CliError> {
    match command {
        OwnersCommand::Create(args) => {
            new_owner(args)?
                .into_record(now)
                .map_err(|e| CliError::usage(e.to_string()))?;
        }
        OwnersCommand::List(args) => {
            if args.limit == 0 {
                return Err(CliError::usage("bad --limit 0: use at least 1"));
            }
        }
        OwnersCommand::Update(args) => {
            owner_id(&args.id)?;
            crate::limits::check_changes(&args.limits)?;
            update(args)?
                .validate()
                .map_err(|e| CliError::usage(e.to_string()))?;
        }
        OwnersCommand::Quota(args) => {
            owner_id(&args.id)?;
        }
        OwnersCommand::Show(arg)
        | OwnersCommand::Delete(arg)
        | OwnersCommand::Disable(arg)
        | OwnersCommand::Enable(arg) => {
            owner_id(&arg.id)?;
        }
    }
    Ok(())
}

fn new_owner(args: &crate::cli::OwnerCreateArgs) -> Result<NewOwner, CliError> {
    owner_id(&args.id)?;
    let mut owner = NewOwner::new(args.id.clone()).metadata(metadata(&args.meta)?);
    if let Some(name) = &args.name {
        owner = owner.name(name.clone());
    }
    if let Some(limit) = args.rate_limit.and_then(crate::cli::OwnerRate::limit) {
        owner = owner.rate_limit(limit);
    }
    if let Some(quota) = args.quota.and_then(crate::cli::QuotaSetting::quota) {
        owner = owner.quota(quota);
    }
    if !args.limits.is_empty() {
        owner = owner.limits(crate::limits::from_entries(&args.limits)?);
    }
    Ok(owner)
}

fn update(args: &crate::cli::OwnerUpdateArgs) -> Result<OwnerUpdate, CliError> {
    let mut update = OwnerUpdate::new();
    if let Some(name) = &args.name {
        update = update.name(name.clone());
    }
    if !args.meta.is_empty() {
        update = update.metadata(metadata(&args.meta)?);
    }
    if let Some(rate) = args.rate_limit {
        update = update.rate_limit(rate.limit());
    }
    if let Some(quota) = args.quota {
        update = update.quota(quota.quota());
    }
    Ok(update)
}

/// Runs an `owners` command: reads through `store`, changes through `admin` (which records
/// and publishes each change), reads quota balances through the handle `balance_reader`
/// builds (given `--redis-meter`), with the name of where it reads.
pub(crate) async fn run(
    command: &OwnersCommand,
    store: &dyn KeyAdmin,
    admin: impl FnOnce() -> Admin,
    balance_reader: impl AsyncFnOnce(bool) -> Result<(Admin, &'static str), CliError>,
    out: Output<'_>,
    now: SystemTime,
) -> Result<(), CliError> {
    match command {
        OwnersCommand::Create(args) => {
            let owner = admin().create_owner(new_owner(args)?).await?;
            owner_changed(out, &owner, &format!("created owner {:?}", owner.id));
        }
        OwnersCommand::List(args) => {
            let mut owners = Vec::new();
            let mut after: Option<String> = None;
            while owners.len() < args.limit {
                let want = (args.limit - owners.len()).min(MAX_OWNERS_PAGE);
                let page = store.list_owners(after.as_deref(), want).await?;
                let full = page.len() == want;
                after = page.last().map(|o| o.id.clone());
                owners.extend(page);
                if !full {
                    break;
                }
            }
            list(out, &owners);
        }
        OwnersCommand::Show(arg) => {
            let owner = store.get_owner(&arg.id).await?;
            let keys = store.owner_key_count(&arg.id).await?;
            show(out, &owner, keys);
        }
        OwnersCommand::Update(args) => {
            let mut change = update(args)?;
            if !args.limits.is_empty() {
                // Merged into the owner's current set: the names not given stay.
                let current = store.get_owner(&args.id).await?;
                let (merged, absent) = crate::limits::merge(current.limits, &args.limits)?;
                for name in absent {
                    eprintln!(
                        "keygate: note: owner {:?} had no limit {name} to remove",
                        args.id
                    );
                }
                change = change.limits(merged);
            }
            let owner = admin().update_owner(&args.id, change).await?;
            owner_changed(out, &owner, &format!("updated owner {:?}", owner.id));
        }
        OwnersCommand::Quota(args) => match args.add_credits {
            Some(credits) => {
                let update = OwnerUpdate::new().add_credits(credits);
                let owner = admin().update_owner(&args.id, update).await?;
                owner_changed(
                    out,
                    &owner,
                    &format!(
                        "owner {:?}: {} to its shared balance ({} added in all)",
                        owner.id,
                        crate::output::credits_added(credits),
                        owner.quota_granted
                    ),
                );
            }
            None => {
                let (reader, source) = balance_reader(args.redis_meter).await?;
                let balance = reader.owner_quota_balance(&args.id).await?;
                out.owner_balance(&args.id, &balance, source);
            }
        },
        OwnersCommand::Delete(arg) => {
            admin().delete_owner(&arg.id).await?;
            if out.is_json() {
                out.json_line(&json!({ "id": arg.id, "deleted": true }));
            } else {
                out.line(&format!("deleted owner {:?}", arg.id));
            }
        }
        OwnersCommand::Disable(arg) => {
            let changed = admin().disable_owner(&arg.id).await?;
            keys_changed(
                out,
                &changed,
                now,
                &format!(
                    "disabled {} key(s) of owner {:?} (undo with `keygate owners enable {}`)",
                    changed.len(),
                    arg.id,
                    arg.id
                ),
            );
        }
        OwnersCommand::Enable(arg) => {
            let changed = admin().enable_owner(&arg.id).await?;
            keys_changed(
                out,
                &changed,
                now,
                &format!("enabled {} key(s) of owner {:?}", changed.len(), arg.id),
            );
        }
    }
    Ok(())
}

/// `keygate revoke --owner ID`: every key of the owner, after confirmation.
///
/// `confirm` asks the operator (`None`: not on a terminal, so `--yes` is required).
pub(crate) async fn revoke(
    args: &RevokeArgs,
    owner: &str,
    store: &dyn KeyAdmin,
    admin: impl FnOnce() -> Admin,
    out: Output<'_>,
    now: SystemTime,
    confirm: Option<impl FnOnce(&str) -> bool>,
) -> Result<(), CliError> {
    let record = store.get_owner(owner).await?;
    if !args.yes {
        let Some(confirm) = confirm else {
            return Err(CliError::usage(format!(
                "refusing to revoke every key of owner {owner:?} without confirmation: pass --yes"
            )));
        };
        let keys = store.owner_key_count(owner).await?;
        if !confirm(&format!(
            "Revoke every key of owner {owner:?} (\"{}\", {keys} key(s)) for good? Revocation cannot be undone. [y/N] ",
            record.name
        )) {
            return Err(CliError::usage("not revoked"));
        }
    }
    let changed = admin().revoke_owner(owner).await?;
    keys_changed(
        out,
        &changed,
        now,
        &format!(
            "revoked {} key(s) of owner {owner:?}: they will never authenticate again",
            changed.len()
        ),
    );
    Ok(())
}

fn keys_changed(out: Output<'_>, changed: &[KeyRecord], now: SystemTime, message: &str) {
    if out.is_json() {
        for record in changed {
            out.json_line(&out.record_json(record, now));
        }
    } else {
        out.line(message);
    }
}

fn owner_changed(out: Output<'_>, owner: &OwnerRecord, message: &str) {
    if out.is_json() {
        out.json_line(&owner_json(owner, None));
    } else {
        out.line(message);
    }
}

fn limit_text(owner: &OwnerRecord) -> String {
    owner
        .rate_limit
        .map_or_else(|| "none".to_owned(), |limit| limit.to_string())
}

pub(crate) fn owner_json(owner: &OwnerRecord, keys: Option<u64>) -> Value {
    let mut value = json!({
        "id": owner.id,
        "name": owner.name,
        "metadata": Value::Object(owner.metadata.clone()),
        "rate_limit": owner.rate_limit.map(|l| l.to_string()),
        "quota": owner.quota.map(|q| q.to_string()),
        "quota_granted": owner.quota_granted,
        "limits": crate::limits::json(&owner.limits),
        "created_at": humantime::format_rfc3339_seconds(owner.created_at).to_string(),
        "updated_at": humantime::format_rfc3339_seconds(owner.updated_at).to_string(),
    });
    if let Some(keys) = keys {
        value["keys"] = json!(keys);
    }
    value
}

fn list(out: Output<'_>, owners: &[OwnerRecord]) {
    if out.is_json() {
        for owner in owners {
            out.json_line(&owner_json(owner, None));
        }
        return;
    }
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(["ID", "NAME", "RATE LIMIT", "QUOTA", "LIMITS", "CREATED"]);
    for owner in owners {
        table.add_row([
            format!("{:?}", owner.id).trim_matches('"').to_owned(),
            owner.name.clone(),
            limit_text(owner),
            crate::output::quota_text(owner.quota.as_ref()),
            crate::limits::text(&owner.limits),
            time_text(Some(owner.created_at)),
        ]);
    }
    out.line(&table.trim_fmt());
}

fn show(out: Output<'_>, owner: &OwnerRecord, keys: u64) {
    if out.is_json() {
        out.json_line(&owner_json(owner, Some(keys)));
        return;
    }
    let metadata = if owner.metadata.is_empty() {
        "-".to_owned()
    } else {
        Value::Object(owner.metadata.clone()).to_string()
    };
    for (label, value) in [
        ("id", owner.id.clone()),
        ("name", owner.name.clone()),
        ("keys", keys.to_string()),
        ("rate limit", limit_text(owner)),
        (
            "quota",
            crate::output::granted_quota_text(owner.quota.as_ref(), owner.quota_granted),
        ),
        ("limits", crate::limits::text(&owner.limits)),
        ("metadata", metadata),
        ("created", time_text(Some(owner.created_at))),
        ("updated", time_text(Some(owner.updated_at))),
    ] {
        out.line(&format!("{label:<12} {value}"));
    }
}
