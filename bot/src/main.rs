//! `rosey-bot`: runs the bot until SIGINT or SIGTERM.
//!
//! Settings come from an optional `--config` TOML file (see `rosey_bot::Config`), overridden by
//! flags (and the environment variables named in `--help`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use rosey_bot::{CancellationToken, Config};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "rosey-bot",
    version,
    about = "The Rosey chat bot: platform events in, database events and PM commands out"
)]
struct Args {
    /// TOML config file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// NATS server URL(s), comma separated.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// NATS user (with --nats-password).
    #[arg(long)]
    nats_user: Option<String>,
    /// NATS password.
    #[arg(long, env = "ROSEY_NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// NATS token.
    #[arg(long, env = "ROSEY_NATS_TOKEN", hide_env_values = true)]
    nats_token: Option<String>,
    /// File with an nkey seed.
    #[arg(long)]
    nats_nkey_seed_file: Option<PathBuf>,
    /// NATS .creds file.
    #[arg(long)]
    nats_creds_file: Option<PathBuf>,
    /// Require TLS (implied by any --nats-tls-*-file).
    #[arg(long)]
    nats_tls_required: bool,
    /// CA certificate(s) for the server's TLS certificate (PEM; implies TLS).
    #[arg(long)]
    nats_tls_ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS (PEM, with --nats-tls-key-file).
    #[arg(long)]
    nats_tls_cert_file: Option<PathBuf>,
    /// Client certificate key (PEM).
    #[arg(long)]
    nats_tls_key_file: Option<PathBuf>,
    /// Connection name shown by the server.
    #[arg(long)]
    nats_name: Option<String>,
    /// Channel (platform) name: the `<channel>` of `rosey.platform.<channel>.…`.
    #[arg(long)]
    channel: Option<String>,
    /// The bot's user name.
    #[arg(long)]
    bot_name: Option<String>,
    /// Lowest rank allowed to run PM commands.
    #[arg(long)]
    moderator_rank: Option<f64>,
    /// Seconds between user-count samples.
    #[arg(long)]
    user_count_interval: Option<f64>,
    /// Seconds between status updates.
    #[arg(long)]
    status_interval: Option<f64>,
    /// Seconds between outbound-queue polls.
    #[arg(long)]
    outbound_interval: Option<f64>,
    /// Per-request timeout in seconds for database queries.
    #[arg(long)]
    request_timeout: Option<f64>,
    /// Publish database events to JetStream, each confirmed by the stream and published again
    /// until stored (for a database service in durable mode): a NATS outage then loses none of
    /// the events the bot received. Without it, core NATS, as the seed.
    #[arg(long)]
    durable_events: bool,
    /// Log filter (tracing-subscriber syntax), e.g. `info` or `rosey_bot=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

fn secs(v: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("invalid {what}: {v}"))
}

fn build_config(args: &Args) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_toml_str(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Config::default(),
    };
    let n = &mut config.nats;
    if let Some(url) = &args.nats_url {
        n.url.clone_from(url);
    }
    set(&mut n.user, &args.nats_user);
    set(&mut n.password, &args.nats_password);
    set(&mut n.token, &args.nats_token);
    set(&mut n.nkey_seed_file, &args.nats_nkey_seed_file);
    set(&mut n.creds_file, &args.nats_creds_file);
    set(&mut n.tls_ca_file, &args.nats_tls_ca_file);
    set(&mut n.tls_cert_file, &args.nats_tls_cert_file);
    set(&mut n.tls_key_file, &args.nats_tls_key_file);
    set(&mut n.name, &args.nats_name);
    n.tls_required |= args.nats_tls_required;
    if let Some(c) = &args.channel {
        config.channel.clone_from(c);
    }
    if let Some(b) = &args.bot_name {
        config.bot_name.clone_from(b);
    }
    if let Some(r) = args.moderator_rank {
        config.moderator_rank = r;
    }
    if let Some(v) = args.user_count_interval {
        config.intervals.user_count = secs(v, "user-count interval")?;
    }
    if let Some(v) = args.status_interval {
        config.intervals.status = secs(v, "status interval")?;
    }
    if let Some(v) = args.outbound_interval {
        config.intervals.outbound = secs(v, "outbound interval")?;
    }
    if let Some(v) = args.request_timeout {
        config.requests.timeout = secs(v, "request timeout")?;
    }
    config.durable_events |= args.durable_events;
    config.validate()?;
    Ok(config)
}

/// Overrides `slot` with the flag's value when the flag was given.
fn set<T: Clone>(slot: &mut Option<T>, flag: &Option<T>) {
    if flag.is_some() {
        slot.clone_from(flag);
    }
}

/// Fires the token on SIGINT or SIGTERM.
async fn wait_for_signal(token: CancellationToken) -> Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("signal received: shutting down");
    token.cancel();
    Ok(())
}

async fn real_main(args: Args) -> Result<()> {
    let config = build_config(&args)?;
    let token = CancellationToken::new();
    let signals = tokio::spawn(wait_for_signal(token.clone()));
    let result = rosey_bot::run(config, token).await;
    signals.abort();
    result
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rosey-bot: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rosey-bot: {e:#}");
            ExitCode::FAILURE
        }
    }
}
