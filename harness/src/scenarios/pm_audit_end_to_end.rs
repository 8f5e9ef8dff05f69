//! PM command auditing end to end: moderator PM commands (and refused ones from a user below the
//! moderator rank and from someone not in the channel) go to the bot on the platform subject;
//! the bot audits each on `rosey.db.action.pm_command` (pending + final for an authorised
//! command, one `denied` record for a refused one). Commit notices prove the audit writes; then
//! the SQLite file is read and every command's rows are checked: user, command, arguments and the
//! real result (`success`, `error` with the reply's error text, `denied`).
//!
//! Accounting: sent = commands, committed = commands whose audit rows were all found and correct
//! in the database, lost = the rest. Rows that exist but are wrong are counted as
//! `audit_mismatches`. Every command carries a unique tag in its arguments so its rows can be
//! found without relying on timestamps.

use super::scripted::{self, BotLoadParams};
use crate::load::{Message, Script};
use crate::results::ScenarioResult;
use crate::scenario::{BoxFuture, ScenarioContext, ScenarioDef};
use anyhow::Context;
use bytes::Bytes;
use rosey_protocol::platform::{self, PlatformUser, PrivateMessage};
use rosey_protocol::to_seed_json;
use std::collections::HashMap;
use std::path::Path;

pub const DEF: ScenarioDef = ScenarioDef {
    name: "pm_audit_end_to_end",
    title: "PM command audit end to end",
    description: "moderator and refused PM commands through the bot, open loop; every audit row (pending, final, denied) verified in the SQLite file after commit notices prove the writes",
    needs_services: true,
    check: crate::config::check_params::<BotLoadParams>,
    run: run_def,
};

fn run_def(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(run(ctx))
}

const MODERATOR: &str = "audit-mod";
const REGULAR: &str = "audit-user";
const STRANGER: &str = "audit-ghost";

/// How the final audit record of a command must look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Error,
    Denied,
}

/// One scripted command.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Command {
    user: &'static str,
    command: &'static str,
    args: String,
    outcome: Outcome,
}

impl Command {
    /// The audit rows' `details` as the service stores them (seed format), in order; for error
    /// and denied records only the prefix is fixed (the error text follows).
    fn expected_details(&self) -> Vec<(String, bool)> {
        let base = format!("cmd={}, args: {}", self.command, self.args);
        match self.outcome {
            Outcome::Success => vec![
                (format!("{base}, result: pending"), true),
                (format!("{base}, result: success"), true),
            ],
            Outcome::Error => vec![
                (format!("{base}, result: pending"), true),
                (format!("{base}, result: error, error: "), false),
            ],
            Outcome::Denied => vec![(format!("{base}, result: denied, error: "), false)],
        }
    }
}

/// Command `i`, tagged with `tag` (unique per command).
fn command(i: u64, tag: &str) -> Command {
    let (user, command, args, outcome) = match i % 10 {
        0 => (REGULAR, "stats", tag.to_owned(), Outcome::Denied),
        5 => (STRANGER, "help", tag.to_owned(), Outcome::Denied),
        1 | 6 => (MODERATOR, "stats", tag.to_owned(), Outcome::Success),
        2 => (MODERATOR, "help", tag.to_owned(), Outcome::Success),
        3 => (MODERATOR, "user", format!("nobody-{tag}"), Outcome::Error),
        4 => (MODERATOR, "frobnicate", tag.to_owned(), Outcome::Error),
        7 => (MODERATOR, "info", tag.to_owned(), Outcome::Success),
        8 => (MODERATOR, "status", tag.to_owned(), Outcome::Success),
        _ => (MODERATOR, "users", tag.to_owned(), Outcome::Success),
    };
    Command {
        user,
        command,
        args,
        outcome,
    }
}

async fn run(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: BotLoadParams = ctx.params()?;
    let channel = scripted::bot_channel(ctx).await?;
    let db_path = ctx.services().await?.db_path().to_owned();
    let mut result = ctx.result(p.load_info());
    result.load.payload_bytes = None;
    scripted::join_users(
        ctx,
        &channel,
        vec![
            PlatformUser::new(MODERATOR, 3.0),
            PlatformUser::new(REGULAR, 1.0),
        ],
        "setup",
    )
    .await?;

    let subject = platform::in_subject(&channel, platform::kind::PM);
    // The tag of command i is its correlation id, `<id prefix of the phase><i>`.
    let script = Script::new(&["pm_command"], move |prefix, i| {
        let c = command(i, &format!("{prefix}{i}"));
        Message {
            kind: 0,
            subject: subject.clone(),
            payload: Bytes::from(to_seed_json(&PrivateMessage {
                user: c.user.into(),
                content: format!("{} {}", c.command, c.args),
                correlation_id: None,
            })),
            expected_events: if c.outcome == Outcome::Denied { 1 } else { 2 },
        }
    });
    let measured_prefix = ctx.id_prefix("m");
    let plan = p.plan(ctx, script).await?;
    let count = plan.phase.count;
    let outcome = super::warm_then_measure(
        ctx,
        &plan,
        &mut result,
        "PM command intended send time → commit notice of its last audit record",
    )
    .await?;
    let proven = outcome.record.confirmed;

    // The commit notices proved the writes; now read what was written.
    let expected: Vec<Command> = (0..count)
        .map(|i| command(i, &format!("{measured_prefix}{i}")))
        .collect();
    let check = tokio::task::spawn_blocking(move || verify(&db_path, &expected))
        .await
        .context("audit check thread")??;
    result.accounting.sent = count;
    result.accounting.committed = check.verified;
    result.accounting.lost = count.saturating_sub(check.verified);
    result
        .metrics
        .insert("audit_events_proven".into(), proven as f64);
    result
        .metrics
        .insert("audit_rows_expected".into(), check.rows_expected as f64);
    result
        .metrics
        .insert("audit_rows_found".into(), check.rows_found as f64);
    result
        .metrics
        .insert("audit_mismatches".into(), check.mismatches as f64);
    result
        .metrics
        .insert("commands_denied".into(), check.denied as f64);
    result
        .metrics
        .insert("commands_error".into(), check.errors as f64);
    result
        .metrics
        .insert("commands_success".into(), check.successes as f64);
    for m in check.examples {
        result.notes.push(format!("audit mismatch: {m}"));
    }
    result.notes.push(format!(
        "per 10 commands: 6 moderator commands that succeed, 2 that fail (unknown user, unknown command), \
         2 refused ({REGULAR} below the moderator rank, {STRANGER} not in the channel)"
    ));
    Ok(result)
}

/// What the database check found.
#[derive(Debug, Default)]
struct Check {
    verified: u64,
    rows_expected: u64,
    rows_found: u64,
    mismatches: u64,
    successes: u64,
    errors: u64,
    denied: u64,
    examples: Vec<String>,
}

/// The `args` of a stored `details` text (`cmd=<c>, args: <args>, result: ...`).
fn args_of(details: &str) -> Option<&str> {
    let rest = details.split_once(", args: ")?.1;
    Some(rest.split_once(", result: ").map_or(rest, |(a, _)| a))
}

/// Read the audit rows and check every command's rows against what it must have produced.
fn verify(db_path: &Path, commands: &[Command]) -> anyhow::Result<Check> {
    // The audit log through the database service's library, on a read-only connection: every
    // row, newest first, so reversed into the order they were written.
    let mut db = rosey_dbservice::db::Database::open_read_only(db_path)
        .with_context(|| format!("open {} read-only", db_path.display()))?;
    let actions = db
        .get_user_actions(i64::MAX)
        .context("read the audit log")?;
    db.close()?;
    let mut rows: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for action in actions.into_iter().rev() {
        if action.action_type != "pm_command" {
            continue;
        }
        let details = action.details.unwrap_or_default();
        if let Some(args) = args_of(&details) {
            rows.entry(args.to_owned())
                .or_default()
                .push((action.username, details));
        }
    }
    let mut check = Check::default();
    for c in commands {
        let expected = c.expected_details();
        check.rows_expected += expected.len() as u64;
        let found = rows.get(&c.args).map(Vec::as_slice).unwrap_or_default();
        check.rows_found += found.len() as u64;
        if found.is_empty() {
            continue;
        }
        let matches = found.len() == expected.len()
            && found
                .iter()
                .zip(&expected)
                .all(|((user, details), (want, exact))| {
                    user == c.user
                        && if *exact {
                            details == want
                        } else {
                            details.starts_with(want.as_str()) && details.len() > want.len()
                        }
                });
        if matches {
            check.verified += 1;
            match c.outcome {
                Outcome::Success => check.successes += 1,
                Outcome::Error => check.errors += 1,
                Outcome::Denied => check.denied += 1,
            }
        } else {
            check.mismatches += 1;
            if check.examples.len() < 5 {
                check.examples.push(format!(
                    "{} `{} {}`: expected {:?}, found {:?}",
                    c.user, c.command, c.args, expected, found
                ));
            }
        }
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_mix_and_expected_rows() {
        let denied = command(10, "t");
        assert_eq!((denied.user, denied.outcome), (REGULAR, Outcome::Denied));
        assert_eq!(
            denied.expected_details(),
            vec![(
                "cmd=stats, args: t, result: denied, error: ".to_owned(),
                false
            )]
        );
        let err = command(3, "t");
        assert_eq!(err.args, "nobody-t");
        assert_eq!(
            err.expected_details()[0].0,
            "cmd=user, args: nobody-t, result: pending"
        );
        let ok = command(7, "t");
        assert_eq!(
            ok.expected_details()[1],
            ("cmd=info, args: t, result: success".to_owned(), true)
        );
        assert_eq!(
            args_of(
                "cmd=user, args: nobody-x.1, result: error, error: User 'nobody-x.1' not found"
            ),
            Some("nobody-x.1")
        );
        assert_eq!(args_of("cmd=help"), None);
    }

    #[test]
    fn verify_reads_rows_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut db = rosey_dbservice::db::Database::new(&path);
        db.open().unwrap();
        let cmds = vec![
            command(7, "a"),
            command(0, "b"),
            command(4, "c"),
            command(8, "d"),
        ];
        let rows = [
            (MODERATOR, "cmd=info, args: a, result: pending"),
            (MODERATOR, "cmd=info, args: a, result: success"),
            (
                REGULAR,
                "cmd=stats, args: b, result: denied, error: rank 1.0 below moderator rank 2.0",
            ),
            (MODERATOR, "cmd=frobnicate, args: c, result: pending"),
            (MODERATOR, "cmd=frobnicate, args: c, result: success"),
        ];
        for (u, d) in rows {
            db.log_user_action(u, "pm_command", Some(d)).unwrap();
        }
        // Audit rows of other kinds are not PM commands.
        db.log_user_action(
            MODERATOR,
            "kick",
            Some("cmd=info, args: d, result: success"),
        )
        .unwrap();
        db.close().unwrap();
        let check = verify(&path, &cmds).unwrap();
        assert_eq!(
            (
                check.verified,
                check.mismatches,
                check.rows_found,
                check.rows_expected
            ),
            (2, 1, 5, 7)
        );
        assert_eq!((check.successes, check.denied), (1, 1));
    }
}
