//! What each command does.

use std::io::{BufRead, Write};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use keygate::store::{KeyFilter, PageRequest};
use keygate::{
    Admin, Invalidation, KeyAdmin, KeyFormat, KeyId, KeyRecord, KeyState, Keyring, Metadata,
    NewKey, Pepper, Peppers, Scope,
};

use crate::cli::{
    Cli, Command, CreateArgs, ExpireArgs, ListArgs, RateSetting, ScopesArgs, StateArg,
};
use crate::error::CliError;
use crate::output::{Environments, Output, quota_text, rate_text, time_text};
use crate::store::Store;

/// Runs the parsed command.
pub(crate) async fn run(cli: Cli) -> Result<(), CliError> {
    let out = Output::new(cli.json);
    let now = SystemTime::now();
    // Everything that can be wrong with the input is refused before the store is opened (or
    // created): a usage error never leaves anything behind.
    check_input(&cli, now)?;
    if let Command::Scan(args) = &cli.command {
        // Opens the store only if it exists: a scan creates nothing.
        return crate::scan::scan(&cli, args, out).await;
    }
    let mints = matches!(
        cli.command,
        Command::Create(_) | Command::Rotate(_) | Command::Serve(_)
    );
    let given = if mints || matches!(cli.command, Command::Peppers) {
        given_peppers(&cli)?
    } else {
        None
    };
    if cli.development_pepper && given.is_some() {
        eprintln!(
            "keygate: note: using the public development pepper (--development-pepper): keys hashed with it protect nothing"
        );
    }
    let store = if mints && given.is_none() {
        // Without a pepper only a development store will do: never create a store for that.
        Store::open_existing(&cli.database_url)
            .await?
            .ok_or_else(|| {
                CliError::Settings(format!(
                    "{NO_PEPPER} (there is no key store yet); nothing was written"
                ))
            })?
    } else {
        Store::open(&cli.database_url).await?
    };
    // The environments the store records (by prefix), to name each key's and to mint in.
    let environments = recorded_environments(&store).await?;
    let out = out.with_environments(&environments);
    if let Command::Create(args) = &cli.command
        && let Some(name) = given_environment(args.environment.as_deref())
    {
        // Before anything is written (a first `create` records the prefix and peppers).
        environment_prefix(&environments, name)
            .map_err(|e| CliError::usage(format!("{e}; nothing was written")))?;
    }
    // The prefix of a new key, checked against the store's before anything is written.
    let format = match &cli.command {
        Command::Create(_) | Command::Serve(_) => {
            Some(new_key_format(&store, given_prefix(&cli)).await?)
        }
        _ => None,
    };
    let peppers = if mints {
        Some(checked_peppers(&store, given, format.as_ref()).await?)
    } else {
        given
    };
    let mut changes = Changes::new(&store, actor(&cli), channel(&cli).await?);
    let minting = Minting {
        peppers: peppers.as_ref(),
        format: format.as_ref(),
    };
    let result = execute(&cli, &store, minting, &mut changes, out, now).await;
    // Whatever happened, the events of the changes made are written before exiting, and the
    // services are told of every change that was made.
    let recorded = changes.flush().await;
    if changes.failed_publishes() > 0 {
        eprintln!(
            "keygate: warning: the change was made, but it could not be published to Redis; \
             services will see it when their cached copy expires (their cache TTL, 30 s by default)"
        );
    }
    result.and(recorded)
}

/// The services' Redis invalidation channel (`--redis-url`), which every change is published
/// on; building it does not connect.
async fn channel(cli: &Cli) -> Result<Option<Arc<dyn Invalidation>>, CliError> {
    let Some(url) = &cli.redis_url else {
        return Ok(None);
    };
    let channel = keygate_redis::RedisInvalidation::builder(url)
        .prefix(&cli.redis_prefix)
        .build()
        .await
        .map_err(|_| CliError::usage(crate::publish::BAD_URL))?;
    Ok(Some(Arc::new(channel)))
}

/// A read-only handle that reads quota balances where the services count them: their Redis
/// meter (`--redis-meter`), or the counters their in-process meters save in the store. With
/// the source's name, for the output.
async fn balance_reader(
    cli: &Cli,
    store: &Store,
    redis_meter: bool,
) -> Result<(Admin, &'static str), CliError> {
    if !redis_meter {
        return Ok((store.admin_builder().build(), "store"));
    }
    let meter = self::redis_meter(cli).await?;
    Ok((store.admin_builder().quota_meter(meter).build(), "redis"))
}

/// The services' Redis quota meter (`--redis-meter`): at `--redis-url`, under
/// `--redis-prefix`. Building it does not connect.
async fn redis_meter(cli: &Cli) -> Result<Arc<dyn keygate::quota::QuotaMeter>, CliError> {
    let Some(url) = &cli.redis_url else {
        return Err(CliError::usage(
            "--redis-meter reads the services' Redis: give --redis-url (or KEYGATE_REDIS_URL)",
        ));
    };
    let meter = keygate_redis::RedisQuotaMeter::builder(url.as_str())
        .prefix(&cli.redis_prefix)
        .build()
        .await
        .map_err(|_| CliError::usage(crate::publish::BAD_URL))?;
    Ok(Arc::new(meter))
}

/// Who makes the changes: `--actor`, else `KEYGATE_ACTOR` (both through clap), else `USER`.
fn actor(cli: &Cli) -> Option<String> {
    cli.actor
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// The management handles a command used, so that their audit events are flushed at the end.
struct Changes<'a> {
    store: &'a Store,
    actor: Option<String>,
    /// Where every change is published (`--redis-url`).
    channel: Option<Arc<dyn Invalidation>>,
    admins: Vec<Admin>,
}

impl<'a> Changes<'a> {
    fn new(
        store: &'a Store,
        actor: Option<String>,
        channel: Option<Arc<dyn Invalidation>>,
    ) -> Self {
        Self {
            store,
            actor,
            channel,
            admins: Vec::new(),
        }
    }

    /// A management handle that mints with `keyring` (if any), records each change with the
    /// actor, and publishes it.
    fn handle(&mut self, keyring: Option<Keyring>) -> Admin {
        let mut builder = self.store.admin_builder();
        if let Some(keyring) = keyring {
            builder = builder.keyring(keyring);
        }
        if let Some(channel) = &self.channel {
            builder = builder.shared_invalidation(Arc::clone(channel));
        }
        let admin = builder.build();
        let admin = match &self.actor {
            Some(actor) => admin.actor(actor),
            None => admin,
        };
        self.admins.push(admin.clone());
        admin
    }

    /// A management handle that mints with `keyring`.
    fn admin_minting(&mut self, keyring: Keyring) -> Admin {
        self.handle(Some(keyring))
    }

    /// A management handle for changes that mint no key (it has no keyring, so no pepper).
    fn admin(&mut self) -> Admin {
        self.handle(None)
    }

    /// Changes that could not be published to Redis.
    fn failed_publishes(&self) -> u64 {
        self.admins.iter().map(Admin::failed_publishes).sum()
    }

    /// Writes the audit events of the changes made. A write that fails is retried a few
    /// times; if it still fails, the command fails (exit 3) saying that the change was made.
    async fn flush(&self) -> Result<(), CliError> {
        for admin in &self.admins {
            let mut failures = admin.audit_stats().failed_writes;
            let mut attempts = 0;
            loop {
                let stats = admin.flush_audit().await;
                if stats.failed_writes == failures {
                    break;
                }
                failures = stats.failed_writes;
                attempts += 1;
                if attempts == 3 {
                    return Err(CliError::Unavailable(
                        "the change was made, but its audit event could not be written to the key store".into(),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            let stats = admin.audit_stats();
            if stats.lost > 0 || stats.dropped > 0 {
                return Err(CliError::Unavailable(
                    "the change was made, but its audit event was lost".into(),
                ));
            }
        }
        Ok(())
    }
}

/// What a command that mints keys mints them with, once checked against the store.
#[derive(Clone, Copy)]
struct Minting<'a> {
    /// The peppers (of `create`, `rotate` and `peppers`, when given or found).
    peppers: Option<&'a Peppers>,
    /// The key format of `create`.
    format: Option<&'a KeyFormat>,
}

async fn execute(
    cli: &Cli,
    store: &Store,
    minting: Minting<'_>,
    changes: &mut Changes<'_>,
    out: Output<'_>,
    now: SystemTime,
) -> Result<(), CliError> {
    match &cli.command {
        // Run by `run` before any store is opened (a scan creates nothing).
        Command::Scan(_) => {}
        Command::Migrate => {
            let version = store.schema_version().await?.unwrap_or_default();
            if out.is_json() {
                out.json_line(&serde_json::json!({ "schema_version": version }));
            } else {
                out.line(&format!("key store is at schema version {version}"));
            }
        }
        Command::Create(args) => {
            let mut spec = new_key(args, now)?;
            let format = minting
                .format
                .cloned()
                .ok_or_else(|| CliError::Unavailable("no key format resolved".into()))?;
            let keyring = minting_keyring(
                format,
                minting_peppers(minting.peppers)?,
                out.environments(),
            )?;
            if let Some(name) = given_environment(args.environment.as_deref()) {
                known_environment(&keyring, name)?;
                spec = spec.environment(name);
            }
            let created = changes.admin_minting(keyring).create_key(spec).await?;
            let r = &created.record;
            let note = format!(
                "Created key \"{}\" (id {}{}{}{}{})",
                r.name,
                r.id,
                r.owner
                    .as_deref()
                    .map(|o| format!(", owner {o}"))
                    .unwrap_or_default(),
                if r.scopes.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", scopes {}",
                        r.scopes
                            .iter()
                            .map(Scope::as_str)
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                },
                r.rate_limit
                    .map(|limit| format!(", rate limit {limit}"))
                    .unwrap_or_default(),
                if r.limits.is_empty() {
                    String::new()
                } else {
                    format!(", limits {}", r.limits)
                },
            );
            out.new_key(r, &created.key, now, &note);
        }
        Command::List(args) => {
            let prefix = match given_environment(args.environment.as_deref()) {
                Some(name) => Some(environment_prefix(out.environments(), name)?),
                None => None,
            };
            let records = list(store.admin(), args, prefix, now).await?;
            out.list(&records, now);
        }
        Command::Show(arg) => {
            let record = store.admin().get(&key_id(&arg.id)?).await?;
            out.show(&record, now);
        }
        Command::Rename { id, new_name } => {
            let id = key_id(id)?;
            let record = changes.admin().rename(&id, new_name).await?;
            out.changed(
                &record,
                now,
                &format!("renamed key {id} to \"{}\"", record.name),
            );
        }
        Command::Scopes(args) => {
            let record = scopes(&changes.admin(), args).await?;
            let text = record
                .scopes
                .iter()
                .map(Scope::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            out.changed(
                &record,
                now,
                &format!(
                    "key {} scopes: {}",
                    record.id,
                    if text.is_empty() { "-" } else { &text }
                ),
            );
        }
        Command::Expire(args) => {
            let id = key_id(&args.id)?;
            let at = expiry(args, now)?;
            let record = changes.admin().set_expiry(&id, at).await?;
            // The lifetime policy may have given a key asked to never expire its default.
            out.changed(
                &record,
                now,
                &match record.expires_at {
                    Some(set) if at.is_none() => format!(
                        "key {id} expires at {} (the lifetime policy's default lifetime)",
                        time_text(Some(set))
                    ),
                    Some(set) => format!("key {id} expires at {}", time_text(Some(set))),
                    None => format!("key {id} never expires"),
                },
            );
        }
        Command::Limit(args) => {
            let id = key_id(&args.id)?;
            let record = changes
                .admin()
                .set_rate_limit(&id, args.rate.limit())
                .await?;
            out.changed(
                &record,
                now,
                &format!("key {id} rate limit: {}", rate_text(&record)),
            );
        }
        Command::Quota(args) => {
            let id = key_id(&args.id)?;
            if let Some(credits) = args.add_credits {
                let record = changes.admin().add_credits(&id, credits).await?;
                out.changed(
                    &record,
                    now,
                    &format!(
                        "key {id}: {} to its balance ({} added in all)",
                        crate::output::credits_added(credits),
                        record.quota_granted
                    ),
                );
            } else if let Some(quota) = args.quota {
                let record = changes.admin().set_quota(&id, quota.quota()).await?;
                out.changed(
                    &record,
                    now,
                    &format!("key {id} quota: {}", quota_text(record.quota.as_ref())),
                );
            } else {
                let record = store.admin().get(&id).await?;
                let (admin, source) = balance_reader(cli, store, args.redis_meter).await?;
                let balance = admin.quota_balance(&id).await?;
                out.balance(&record, &balance, source);
            }
        }
        Command::Limits(args) => {
            let id = key_id(&args.id)?;
            // One handle reads and writes, like `scopes`: the change is recorded, published
            // and invalidated as every other change is.
            let admin = changes.admin();
            let limits = if args.clear {
                keygate::rate::NamedLimits::new()
            } else {
                let current = admin.get(&id).await?;
                let (merged, absent) = crate::limits::merge(current.limits, &args.changes)?;
                for name in absent {
                    eprintln!("keygate: note: key {id} had no limit {name} to remove");
                }
                merged
            };
            let record = admin.set_limits(&id, limits).await?;
            out.changed(
                &record,
                now,
                &format!("key {id} limits: {}", crate::limits::text(&record.limits)),
            );
        }
        Command::Disable(arg) => {
            let id = key_id(&arg.id)?;
            let record = changes.admin().disable(&id).await?;
            out.changed(
                &record,
                now,
                &format!("disabled key {id} (undo with `keygate enable {id}`)"),
            );
        }
        Command::Enable(arg) => {
            let id = key_id(&arg.id)?;
            let record = changes.admin().enable(&id).await?;
            out.changed(&record, now, &format!("enabled key {id}"));
        }
        Command::Revoke(args) => match (&args.id, &args.owner) {
            (_, Some(owner)) => {
                let interactive = out.is_terminal() && std::io::stdin().is_terminal_stdin();
                crate::owners::revoke(
                    args,
                    owner,
                    store.admin(),
                    || changes.admin(),
                    out,
                    now,
                    interactive.then_some(confirm),
                )
                .await?;
            }
            (Some(id), None) => {
                let id = key_id(id)?;
                let record = changes.admin().revoke(&id).await?;
                out.changed(
                    &record,
                    now,
                    &format!("revoked key {id}: it will never authenticate again"),
                );
            }
            // clap requires one of them.
            (None, None) => return Err(CliError::usage("give a key id or --owner")),
        },
        Command::Owners(command) => {
            let reader = async |redis_meter| balance_reader(cli, store, redis_meter).await;
            crate::owners::run(command, store.admin(), || changes.admin(), reader, out, now)
                .await?;
        }
        Command::Rotate(args) => {
            let id = key_id(&args.id)?;
            let grace = duration(&args.grace, "--grace")?;
            let old = store.admin().get(&id).await?;
            // The replacement keeps the old key's prefix, whatever --prefix says.
            let keyring = Keyring::new(format(&old.prefix)?, minting_peppers(minting.peppers)?);
            let rotated = changes.admin_minting(keyring).rotate(&id, grace).await?;
            let until = if rotated.old.revoked_at.is_some() {
                format!("the old key {id} is revoked now")
            } else {
                format!(
                    "the old key {id} keeps working until {}",
                    time_text(rotated.old.expires_at)
                )
            };
            let note = format!(
                "Rotated key \"{}\": new id {}; {until}",
                rotated.new.record.name, rotated.new.record.id
            );
            out.new_key(&rotated.new.record, &rotated.new.key, now, &note);
        }
        Command::Delete(args) => {
            let id = key_id(&args.id)?;
            let record = store.admin().get(&id).await?;
            if !args.yes {
                if !out.is_terminal() || !std::io::stdin().is_terminal_stdin() {
                    return Err(CliError::usage(format!(
                        "refusing to delete key {id} without confirmation: pass --yes"
                    )));
                }
                if !confirm(&format!(
                    "Delete key {id} (\"{}\") for good? It cannot be undone; `keygate revoke` keeps it for audit. [y/N] ",
                    record.name
                )) {
                    return Err(CliError::usage("not deleted"));
                }
            }
            changes.admin().delete(&id).await?;
            if out.is_json() {
                out.json_line(&serde_json::json!({ "id": id.as_str(), "deleted": true }));
            } else {
                out.line(&format!("deleted key {id}"));
            }
        }
        Command::Audit(args) => crate::audit::audit(store, args, out, now).await?,
        Command::Usage(args) => crate::audit::usage(store, args, out, now).await?,
        Command::Peppers => peppers_report(store, minting.peppers, out).await?,
        Command::Policy(command) => {
            crate::policy::policy(store, || changes.admin(), command, out).await?;
        }
        Command::Serve(args) => {
            let format = minting
                .format
                .cloned()
                .ok_or_else(|| CliError::Unavailable("no key format resolved".into()))?;
            let keyring = minting_keyring(
                format,
                minting_peppers(minting.peppers)?,
                out.environments(),
            )?;
            let listen = crate::serve::listen_addr(args)?;
            let notices = crate::serve::notices_config(args)?;
            let meter = if args.redis_meter {
                Some(redis_meter(cli).await?)
            } else {
                None
            };
            crate::serve::serve(
                store,
                keyring,
                changes.channel.clone(),
                meter,
                listen,
                notices,
                out,
            )
            .await?;
        }
    }
    Ok(())
}

/// The checked peppers of a command that mints keys.
fn minting_peppers(peppers: Option<&Peppers>) -> Result<Peppers, CliError> {
    peppers
        .cloned()
        .ok_or_else(|| CliError::Settings(NO_PEPPER.to_owned()))
}

const NO_PEPPER: &str = "no pepper given: set KEYGATE_PEPPER (or --pepper-file) to the deployment's secret pepper, or pass --development-pepper for a development store whose keys protect nothing";

/// The environments the store records, by prefix (empty without any).
async fn recorded_environments(store: &Store) -> Result<Environments, CliError> {
    let settings = store.keys().settings().await?;
    Ok(settings
        .iter()
        .flat_map(keygate::store::StoreSettings::environments)
        .map(|(name, prefix)| (prefix.to_owned(), name.to_owned()))
        .collect())
}

/// The keyring new keys are minted with: `format` (the deployment's default prefix) and,
/// when the store records environments and `format`'s prefix is one of them, every recorded
/// environment, the default first, so `create --environment` can mint in any of them.
fn minting_keyring(
    format: KeyFormat,
    peppers: Peppers,
    environments: &Environments,
) -> Result<Keyring, CliError> {
    let Some(default) = environments.get(format.prefix()) else {
        return Ok(Keyring::new(format, peppers));
    };
    let mut builder = Keyring::builder().environment(default, format.clone());
    for (prefix, name) in environments {
        if prefix != format.prefix() {
            builder = builder.environment(name, self::format(prefix)?);
        }
    }
    builder
        .build(peppers)
        .map_err(|e| CliError::Settings(format!("the key store's environments: {e}")))
}

/// The environment the command line gives (`--environment` or `KEYGATE_ENVIRONMENT`); an
/// empty one is none, as for `KEYGATE_PREFIX`.
fn given_environment(given: Option<&str>) -> Option<&str> {
    given.map(str::trim).filter(|name| !name.is_empty())
}

/// Refuses an environment the keyring lacks (exit 1), naming those the store records.
fn known_environment(keyring: &Keyring, name: &str) -> Result<(), CliError> {
    if keyring.environment(name).is_some() {
        return Ok(());
    }
    let known: Vec<&str> = keyring.environments().iter().map(|e| e.name()).collect();
    Err(CliError::usage(if known.is_empty() {
        format!(
            "unknown environment `{name}`: the key store records no environments (a service whose keyring has several records them at its first start); nothing was written"
        )
    } else {
        format!(
            "unknown environment `{name}`: the key store records {}; nothing was written",
            known.join(", ")
        )
    }))
}

/// The prefix of environment `name` as the store records it; an unknown one is refused.
fn environment_prefix<'a>(environments: &'a Environments, name: &str) -> Result<&'a str, CliError> {
    environments
        .iter()
        .find_map(|(prefix, recorded)| (recorded == name).then_some(prefix.as_str()))
        .ok_or_else(|| {
            let known: Vec<&str> = environments.values().map(String::as_str).collect();
            CliError::usage(if known.is_empty() {
                format!("unknown environment `{name}`: the key store records no environments")
            } else {
                format!(
                    "unknown environment `{name}`: the key store records {}",
                    known.join(", ")
                )
            })
        })
}

/// The prefix of keys minted when none is given and the store recorded none.
pub(crate) const DEFAULT_PREFIX: &str = "kg";

/// The prefix the command line gives (`--prefix` or `KEYGATE_PREFIX`); an empty one is none,
/// as for `KEYGATE_PEPPER`.
pub(crate) fn given_prefix(cli: &Cli) -> Option<&str> {
    cli.prefix
        .as_deref()
        .filter(|prefix| !prefix.trim().is_empty())
}

/// The key format of `create`: the prefix given (`--prefix` / `KEYGATE_PREFIX`), else the one
/// the store recorded, else [`DEFAULT_PREFIX`]. A prefix given that differs from the store's is
/// refused (exit 6) before anything is written. Recorded by [`checked_peppers`] when the store
/// has none.
async fn new_key_format(store: &Store, given: Option<&str>) -> Result<KeyFormat, CliError> {
    let settings = store.keys().settings().await?;
    let recorded = settings
        .as_ref()
        .and_then(keygate::store::StoreSettings::prefix);
    match (given.map(format).transpose()?, recorded) {
        (Some(given), Some(recorded)) if given.prefix() != recorded => {
            Err(CliError::Settings(format!(
                "the key store's keys use prefix `{recorded}`, and --prefix / KEYGATE_PREFIX gives `{}`: leave the prefix out to use the store's, or keep keys with prefix `{}` in a key store of their own (--database-url); nothing was written",
                given.prefix(),
                given.prefix(),
            )))
        }
        (Some(given), _) => Ok(given),
        (None, Some(recorded)) => format(recorded),
        (None, None) => format(DEFAULT_PREFIX),
    }
}

/// The peppers for a command that mints keys: those given, else the development pepper on a
/// development store (with a note on stderr); checked against the store's settings, and
/// recorded there on first use, with the prefix of `format` (a key to be created) when the
/// store has none. A refusal writes nothing.
async fn checked_peppers(
    store: &Store,
    given: Option<Peppers>,
    format: Option<&KeyFormat>,
) -> Result<Peppers, CliError> {
    let peppers = match given {
        Some(peppers) => peppers,
        None => {
            let development = store
                .keys()
                .settings()
                .await?
                .is_some_and(|settings| settings.is_development());
            if !development {
                return Err(CliError::Settings(format!(
                    "{NO_PEPPER} (this key store is not a development store); nothing was written"
                )));
            }
            eprintln!(
                "keygate: note: this key store is a development store: using the public development pepper (its keys protect nothing)"
            );
            Peppers::development()
        }
    };
    match format {
        Some(format) => {
            let keyring = Keyring::new(format.clone(), peppers.clone());
            keygate::store::check_keyring(store.keys(), store.admin(), &keyring).await?;
        }
        None => {
            keygate::store::check_peppers(store.keys(), store.admin(), &peppers).await?;
        }
    }
    Ok(peppers)
}

/// The peppers the command line gives (`--development-pepper`, `--pepper-file` or
/// `KEYGATE_PEPPER`), parsed; `None` when none is given. Never a default.
pub(crate) fn given_peppers(cli: &Cli) -> Result<Option<Peppers>, CliError> {
    if cli.development_pepper {
        return Ok(Some(Peppers::development()));
    }
    let text = match &cli.pepper_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            CliError::usage(format!(
                "cannot read the pepper file {}: {e}",
                path.display()
            ))
        })?,
        None => match std::env::var(keygate::pepper::PEPPER_ENV) {
            Ok(text) if !text.trim().is_empty() => text,
            Ok(_) | Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(CliError::usage(format!(
                    "{} is not valid UTF-8",
                    keygate::pepper::PEPPER_ENV
                )));
            }
        },
    };
    Peppers::parse(&text)
        .map(Some)
        .map_err(|e| CliError::usage(e.to_string()))
}

/// `keygate peppers`: keys per pepper version, the fingerprints recorded, and how the peppers
/// given (if any) compare.
async fn peppers_report(
    store: &Store,
    given: Option<&Peppers>,
    out: Output<'_>,
) -> Result<(), CliError> {
    let counts: std::collections::BTreeMap<u32, u64> =
        store.admin().pepper_versions().await?.into_iter().collect();
    let settings = store.keys().settings().await?.unwrap_or_default();
    let recorded = settings.fingerprints();
    let mut versions: std::collections::BTreeSet<u32> = counts.keys().copied().collect();
    versions.extend(recorded.keys().copied());
    if let Some(given) = given {
        versions.extend(given.iter().map(Pepper::version));
    }
    let current = given.map(|p| p.current().version());
    let rows: Vec<PepperRow> = versions
        .iter()
        .rev()
        .map(|&version| {
            let pepper = given.and_then(|p| p.get(version));
            let fingerprint = recorded.get(&version).map(|f| (*f).to_owned());
            let configured = match (pepper, &fingerprint) {
                _ if given.is_none() => "-",
                (None, _) => "no",
                (Some(p), Some(f)) if p.fingerprint() != *f => "DIFFERS",
                (Some(_), Some(_)) => "matches",
                (Some(_), None) => "not recorded yet",
            };
            PepperRow {
                version,
                keys: counts.get(&version).copied().unwrap_or(0),
                fingerprint,
                configured,
                current: current == Some(version),
            }
        })
        .collect();
    if out.is_json() {
        out.json_line(&serde_json::json!({
            "development_store": settings.is_development(),
            "prefix": settings.prefix(),
            "environments": settings.environments(),
            "versions": rows.iter().map(|r| serde_json::json!({
                "version": r.version,
                "keys": r.keys,
                "fingerprint": r.fingerprint,
                "configured": given.map(|_| r.configured),
                "current": r.current,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let table = crate::output::pepper_table(rows.iter().map(|r| {
        [
            if r.current {
                format!("{} (current)", r.version)
            } else {
                r.version.to_string()
            },
            r.keys.to_string(),
            r.fingerprint.clone().unwrap_or_else(|| "-".into()),
            r.configured.to_owned(),
        ]
    }));
    if rows.is_empty() {
        out.line("no keys and no pepper fingerprints recorded yet");
    } else {
        out.line(&table);
    }
    out.line(&format!(
        "development store: {}",
        if settings.is_development() {
            "yes (keys hashed with the public development pepper: they protect nothing)"
        } else {
            "no"
        }
    ));
    out.line(&format!(
        "key prefix: {}",
        settings.prefix().unwrap_or(
            "none recorded yet (recorded by a service's first start, or the first create)"
        )
    ));
    let environments = settings.environments();
    if !environments.is_empty() {
        let listed: Vec<String> = environments
            .iter()
            .map(|(name, prefix)| format!("{name} ({prefix})"))
            .collect();
        out.line(&format!("environments: {}", listed.join(", ")));
    }
    if given.is_none() && !rows.is_empty() && !settings.is_development() {
        out.line("(set KEYGATE_PEPPER to also check your peppers against the fingerprints)");
    }
    for r in &rows {
        match (given, r.configured) {
            (Some(_), "no") if r.keys > 0 => out.line(&format!(
                "version {}: {} key(s) under a pepper not given: they are refused until it is configured",
                r.version, r.keys
            )),
            (Some(_), "matches" | "not recorded yet") if !r.current && r.keys == 0 => {
                out.line(&format!(
                    "version {}: no key left under it: its pepper can be retired",
                    r.version
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

struct PepperRow {
    version: u32,
    keys: u64,
    fingerprint: Option<String>,
    configured: &'static str,
    current: bool,
}

/// Validates the command's input without touching the store.
fn check_input(cli: &Cli, now: SystemTime) -> Result<(), CliError> {
    if let Some(url) = &cli.redis_url {
        crate::publish::check_url(url)?;
    }
    match &cli.command {
        Command::Migrate => {}
        Command::List(args) => {
            if let Some(window) = &args.expiring_within {
                duration(window, "--expiring-within")?;
            }
        }
        Command::Peppers => {
            given_peppers(cli)?;
        }
        Command::Create(args) => {
            new_key(args, now)?;
            if let Some(prefix) = given_prefix(cli) {
                format(prefix)?;
            }
            given_peppers(cli)?;
        }
        Command::Show(arg) | Command::Disable(arg) | Command::Enable(arg) => {
            key_id(&arg.id)?;
        }
        Command::Revoke(args) => {
            if let Some(id) = &args.id {
                key_id(id)?;
            }
            if let Some(owner) = &args.owner {
                crate::owners::owner_id(owner)?;
            }
        }
        Command::Owners(command) => crate::owners::check(command, now)?,
        Command::Rename { id, .. } => {
            key_id(id)?;
        }
        Command::Scopes(args) => {
            key_id(&args.id)?;
            for text in args.add.iter().chain(&args.remove) {
                scope(text)?;
            }
        }
        Command::Expire(args) => {
            key_id(&args.id)?;
            expiry(args, now)?;
        }
        Command::Rotate(args) => {
            key_id(&args.id)?;
            let grace = duration(&args.grace, "--grace")?;
            keygate::record::Rotation::new(grace).map_err(|e| CliError::usage(e.to_string()))?;
            given_peppers(cli)?;
        }
        Command::Limit(args) => {
            // The policy itself was parsed with the command line.
            key_id(&args.id)?;
        }
        Command::Quota(args) => {
            // The quota itself was parsed with the command line.
            key_id(&args.id)?;
        }
        Command::Limits(args) => {
            // Each entry was parsed with the command line; a name given twice is refused here.
            key_id(&args.id)?;
            crate::limits::check_changes(&args.changes)?;
        }
        Command::Delete(args) => {
            key_id(&args.id)?;
        }
        Command::Audit(args) => {
            crate::audit::audit_query(args, now)?;
        }
        Command::Usage(args) => {
            crate::audit::usage_range(args, now)?;
        }
        Command::Serve(args) => {
            crate::serve::listen_addr(args)?;
            crate::serve::notices_config(args)?;
            given_peppers(cli)?;
        }
        Command::Policy(command) => {
            if let crate::cli::PolicyCommand::Set(args) = command {
                crate::policy::policy_of(args)?;
            }
        }
        Command::Scan(_) => {
            given_peppers(cli)?;
        }
    }
    Ok(())
}

trait StdinTerminal {
    fn is_terminal_stdin(&self) -> bool;
}

impl StdinTerminal for std::io::Stdin {
    fn is_terminal_stdin(&self) -> bool {
        std::io::IsTerminal::is_terminal(self)
    }
}

fn confirm(question: &str) -> bool {
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{question}");
    let _ = stderr.flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
}

/// A key id; the input is not echoed back (it might be a whole key pasted by mistake).
pub(crate) fn key_id(text: &str) -> Result<KeyId, CliError> {
    KeyId::from_str(text.trim()).map_err(|_| {
        CliError::usage(
            "malformed key id: expected the 12 letters and digits after the prefix (see `keygate list`)",
        )
    })
}

fn format(prefix: &str) -> Result<KeyFormat, CliError> {
    KeyFormat::new(prefix).map_err(|e| CliError::usage(e.to_string()))
}

pub(crate) fn duration(text: &str, flag: &str) -> Result<Duration, CliError> {
    humantime::parse_duration(text.trim()).map_err(|_| {
        CliError::usage(format!(
            "bad duration {text:?} for {flag}: use a number and a unit, like 90s, 15m, 24h or 30d"
        ))
    })
}

fn time(text: &str, flag: &str) -> Result<SystemTime, CliError> {
    humantime::parse_rfc3339_weak(text.trim()).map_err(|_| {
        CliError::usage(format!(
            "bad time {text:?} for {flag}: use RFC 3339 in UTC, like 2027-01-31T00:00:00Z"
        ))
    })
}

fn scope(text: &str) -> Result<Scope, CliError> {
    Scope::new(text).map_err(|e| CliError::usage(e.to_string()))
}

fn new_key(args: &CreateArgs, now: SystemTime) -> Result<NewKey, CliError> {
    let mut spec = NewKey::new(args.name.clone());
    if let Some(owner) = &args.owner {
        spec = spec.owner(owner.clone());
    }
    let scopes = args
        .scopes
        .iter()
        .map(|s| scope(s))
        .collect::<Result<Vec<_>, _>>()?;
    spec = spec.scopes(scopes);
    if let Some(after) = &args.expires_in {
        spec = spec.expires_at(now + duration(after, "--expires-in")?);
    }
    if let Some(at) = &args.expires_at {
        spec = spec.expires_at(time(at, "--expires-at")?);
    }
    let mut metadata = Metadata::new();
    for entry in &args.meta {
        let (key, value) = entry
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| CliError::usage(format!("bad --meta {entry:?}: use KEY=VALUE")))?;
        metadata.insert(
            key.trim().to_owned(),
            serde_json::Value::String(value.to_owned()),
        );
    }
    spec = spec.metadata(metadata);
    let ranges = args
        .allow_ip
        .iter()
        .map(|text| cidr(text))
        .collect::<Result<Vec<_>, _>>()?;
    spec = spec.allowed_ips(ranges);
    if let Some(limit) = args.rate.and_then(RateSetting::limit) {
        spec = spec.rate_limit(limit);
    }
    if let Some(quota) = args.quota.and_then(crate::cli::QuotaSetting::quota) {
        spec = spec.quota(quota);
    }
    if !args.limits.is_empty() {
        spec = spec.limits(crate::limits::from_entries(&args.limits)?);
    }
    if args.admin {
        let mut admin = vec![scope(keygate_admin::READ_SCOPE)?];
        if !args.read_only {
            admin.push(scope(keygate_admin::WRITE_SCOPE)?);
        }
        // Granted once, even when --scope names them too.
        admin.retain(|s| !args.scopes.iter().any(|given| given.trim() == s.as_str()));
        spec = spec.scopes(admin);
    }
    if args.canary {
        spec = spec.canary();
    }
    Ok(spec)
}

/// A CIDR range; a bare address means that one address.
fn cidr(text: &str) -> Result<IpNet, CliError> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            CliError::usage(format!(
                "bad --allow-ip {text:?}: use an address or CIDR range, like 10.0.0.0/8 or 2001:db8::/32"
            ))
        })
}

/// Keys matching `args`; with `prefix`, only keys of that prefix (an environment's: the store
/// filters by it), and with `--expiring-within`, only active keys expiring within the window
/// from `now`, soonest first (the store does not filter by expiry, so pages are filtered here).
async fn list(
    admin: &dyn KeyAdmin,
    args: &ListArgs,
    prefix: Option<&str>,
    now: SystemTime,
) -> Result<Vec<KeyRecord>, CliError> {
    let window_end = match &args.expiring_within {
        Some(window) => Some(now + duration(window, "--expiring-within")?),
        None => None,
    };
    let state = match args.state {
        _ if window_end.is_some() => Some(KeyState::Active),
        StateArg::Active => Some(KeyState::Active),
        StateArg::Disabled => Some(KeyState::Disabled),
        StateArg::Revoked => Some(KeyState::Revoked),
        StateArg::Expired => Some(KeyState::Expired),
        StateArg::All => None,
    };
    let mut filter = KeyFilter::default();
    filter.owner.clone_from(&args.owner);
    filter.state = state;
    filter.name_contains.clone_from(&args.search);
    filter.prefix = prefix.map(str::to_owned);
    let expiring = |record: &KeyRecord| {
        window_end.is_none_or(|end| {
            record.state(now) == KeyState::Active && record.expires_at.is_some_and(|at| at <= end)
        })
    };
    let mut records = Vec::new();
    let mut page = PageRequest::first(args.limit.min(PageRequest::MAX_LIMIT));
    while records.len() < args.limit {
        page.limit = (args.limit - records.len()).min(PageRequest::MAX_LIMIT);
        let got = admin.list(&filter, page).await?;
        records.extend(got.keys.into_iter().filter(expiring));
        match got.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    if window_end.is_some() {
        records.sort_by_key(|record| (record.expires_at, record.id));
    }
    Ok(records)
}

async fn scopes(admin: &dyn KeyAdmin, args: &ScopesArgs) -> Result<KeyRecord, CliError> {
    let id = key_id(&args.id)?;
    let add = args
        .add
        .iter()
        .map(|s| scope(s))
        .collect::<Result<Vec<_>, _>>()?;
    let remove = args
        .remove
        .iter()
        .map(|s| scope(s))
        .collect::<Result<Vec<_>, _>>()?;
    let current = admin.get(&id).await?;
    let mut scopes: Vec<Scope> = current
        .scopes
        .into_iter()
        .filter(|s| !remove.contains(s))
        .collect();
    for scope in add {
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    Ok(admin.set_scopes(&id, scopes).await?)
}

fn expiry(args: &ExpireArgs, now: SystemTime) -> Result<Option<SystemTime>, CliError> {
    if args.never {
        return Ok(None);
    }
    if let Some(after) = &args.in_ {
        return Ok(Some(now + duration(after, "--in")?));
    }
    match &args.at {
        Some(at) => Ok(Some(time(at, "--at")?)),
        None => Err(CliError::usage(
            "say when: --in DURATION, --at TIME or --never",
        )),
    }
}
