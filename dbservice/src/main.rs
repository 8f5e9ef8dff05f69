//! `rosey-dbservice`: the database service as a process. Parses flags and the optional TOML
//! config file into a [`Config`], installs logging, turns SIGINT/SIGTERM into a clean shutdown
//! and runs [`rosey_dbservice::run`].

use clap::Parser;
use rosey_dbservice::{Config, FileConfig, Mode};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The Rosey database service: stores the bot's events in SQLite and answers its queries over NATS.
///
/// Speaks the seed's protocol (subjects `rosey.db.*`, JSON payloads) plus the documented
/// additions. Settings come from built-in defaults, then the --config file, then these flags
/// (flags win). Secrets can also come from the environment (ROSEY_NATS_PASSWORD,
/// ROSEY_NATS_TOKEN) so they do not show in the process list.
#[derive(Debug, Parser)]
#[command(name = "rosey-dbservice", version, about, long_about)]
struct Args {
    /// TOML config file. Keys: db_path, mode, commit_notices, log_level, batch_max_events,
    /// batch_max_wait_us, batch_linger_us, channel_capacity, subscription_capacity, max_payload_bytes,
    /// fault_stats_delay_ms, fault_notice_delay_us, read_connections, ack_wait_ms, max_ack_pending,
    /// synchronous_full, maintenance_interval_secs, shutdown_timeout_ms, max_buffered_bytes,
    /// max_deliver, stream_replicas, and a [nats] table with url, user, password, token, nkey_seed_file, creds_file,
    /// tls_required, tls_ca_file, tls_cert_file, tls_key_file, name. Unknown keys are an error.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// NATS server URL(s), comma separated [default: nats://localhost:4222].
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// NATS user for user/password authentication (needs --nats-password).
    #[arg(long, value_name = "USER")]
    nats_user: Option<String>,
    /// NATS password for user/password authentication.
    #[arg(
        long,
        env = "ROSEY_NATS_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    nats_password: Option<String>,
    /// NATS token authentication.
    #[arg(
        long,
        env = "ROSEY_NATS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    nats_token: Option<String>,
    /// File holding an nkey seed for nkey authentication.
    #[arg(long, value_name = "FILE")]
    nats_nkey_seed_file: Option<PathBuf>,
    /// NATS .creds file (JWT + nkey) for decentralised authentication.
    #[arg(long, value_name = "FILE")]
    nats_creds_file: Option<PathBuf>,
    /// Refuse to connect unless the server offers TLS.
    #[arg(long)]
    nats_tls_required: bool,
    /// PEM CA certificate(s) to verify the server with.
    #[arg(long, value_name = "FILE")]
    nats_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (needs --nats-tls-key-file).
    #[arg(long, value_name = "FILE")]
    nats_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, value_name = "FILE")]
    nats_tls_key_file: Option<PathBuf>,
    /// Connection name shown in the server's monitoring [default: rosey-dbservice].
    #[arg(long, value_name = "NAME")]
    nats_name: Option<String>,

    /// SQLite database file, created if missing [default: bot_data.db]. One service per
    /// database: it holds an exclusive lock on "<PATH>.lock" (which records its pid), and a
    /// second one exits with an error naming that pid and file.
    #[arg(long, value_name = "PATH")]
    db_path: Option<PathBuf>,
    /// Log level: error, warn (or warning), info, debug, trace, or a tracing filter such as
    /// "rosey_dbservice=debug,async_nats=warn" [default: info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// core: plain subscriptions, as the seed (events sent while the service is down are lost).
    /// durable: events are kept in the JetStream stream ROSEY_DB_EVENTS and acknowledged only
    /// after they are committed; nothing is lost or applied twice across crashes and restarts.
    /// [default: core]
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Publish a commit notice on rosey.db.committed after each transaction, listing the
    /// Rosey-Event-Id header of every event it committed (delivery proof for clients and the
    /// benchmark harness).
    #[arg(long)]
    commit_notices: bool,

    /// Group commit: most events per write transaction [default: 1000].
    #[arg(long, value_name = "N")]
    batch_max_events: Option<usize>,
    /// Group commit: longest a transaction stays open taking events already queued, in
    /// microseconds; the writer never waits for more; 0 means one event per transaction
    /// [default: 500].
    #[arg(long, value_name = "MICROS")]
    batch_max_wait_us: Option<u64>,
    /// Group commit, opt-in: when the queue runs empty, wait up to this long (microseconds,
    /// from a transaction's first event) for more events before committing: fewer, larger
    /// transactions under moderate load for up to this much latency [default: 0, never wait].
    #[arg(long, value_name = "MICROS")]
    batch_linger_us: Option<u64>,
    /// Capacity of the queue in front of the writer thread [default: 16384].
    #[arg(long, value_name = "N")]
    channel_capacity: Option<usize>,
    /// Messages the NATS client buffers for the event subscription before dropping them as a
    /// slow consumer (core mode) [default: 262144].
    #[arg(long, value_name = "N")]
    subscription_capacity: Option<usize>,
    /// Larger messages are rejected as malformed [default: 65536].
    #[arg(long, value_name = "BYTES")]
    max_payload_bytes: Option<usize>,
    /// Read-only SQLite connections for queries [default: 2].
    #[arg(long, value_name = "N")]
    read_connections: Option<usize>,
    /// Durable mode: milliseconds before an unacknowledged event is redelivered [default: 30000].
    #[arg(long, value_name = "MS")]
    ack_wait_ms: Option<u64>,
    /// Durable mode: most events handed out but not yet acknowledged [default: 20000].
    #[arg(long, value_name = "N")]
    max_ack_pending: Option<usize>,
    /// fsync every commit (synchronous=FULL): committed data survives power loss, not only
    /// process crashes. Slower.
    #[arg(long)]
    synchronous_full: bool,
    /// Seconds between maintenance runs (old-row cleanup, incremental vacuum in small steps
    /// between write batches, ANALYZE); 0 disables
    /// [default: 86400].
    #[arg(long, value_name = "SECS")]
    maintenance_interval_secs: Option<u64>,
    /// Deadline of each shutdown step in milliseconds [default: 10000].
    #[arg(long, value_name = "MS")]
    shutdown_timeout_ms: Option<u64>,
    /// Core mode: most payload bytes of events waiting for the writer; events beyond it are
    /// dropped, counted ("dropped" on rosey.db.service.ping) and logged [default: 268435456].
    #[arg(long, value_name = "BYTES")]
    max_buffered_bytes: Option<usize>,
    /// Durable mode: deliveries of one event before it is given up as a dead letter (recorded
    /// in the dead_letters table, counted, logged, never redelivered) [default: 10].
    #[arg(long, value_name = "N")]
    max_deliver: Option<u64>,
    /// Durable mode: copies of the stream JetStream keeps (1 on a single server; 3 on a
    /// three-node cluster, so the stream survives the loss of a node) [default: 1].
    #[arg(long, value_name = "N")]
    stream_replicas: Option<usize>,

    /// FAULT INJECTION, for testing the benchmark regression gate only: add this many
    /// milliseconds of delay inside every rosey.db.query.channel_stats request. Off (0) by
    /// default; never set it in production.
    #[arg(long, value_name = "MS")]
    fault_stats_delay_ms: Option<u64>,
    /// FAULT INJECTION, for testing the benchmark regression gate only: publish every commit
    /// notice this many microseconds after its transaction commits (commits, acks and other
    /// events are not delayed). Off (0) by default; never set it in production.
    #[arg(long, value_name = "MICROS")]
    fault_notice_delay_us: Option<u64>,
}

fn build_config(args: Args) -> anyhow::Result<(Config, String)> {
    let mut config = Config::new(rosey_protocol::connect::DEFAULT_NATS_URL, "bot_data.db");
    let mut log_level = "info".to_owned();
    if let Some(path) = &args.config {
        let file = FileConfig::load(path)?;
        if let Some(l) = file.log_level.clone() {
            log_level = l;
        }
        file.apply_to(&mut config);
    }
    let n = &mut config.nats;
    macro_rules! set {
        ($target:expr, $value:expr) => {
            if let Some(v) = $value {
                $target = v;
            }
        };
        ($target:expr, some $value:expr) => {
            if let Some(v) = $value {
                $target = Some(v);
            }
        };
    }
    set!(n.url, args.nats_url);
    set!(n.user, some args.nats_user);
    set!(n.password, some args.nats_password);
    set!(n.token, some args.nats_token);
    set!(n.nkey_seed_file, some args.nats_nkey_seed_file);
    set!(n.creds_file, some args.nats_creds_file);
    set!(n.tls_ca_file, some args.nats_tls_ca_file);
    set!(n.tls_cert_file, some args.nats_tls_cert_file);
    set!(n.tls_key_file, some args.nats_tls_key_file);
    set!(n.name, some args.nats_name);
    n.tls_required |= args.nats_tls_required;
    set!(config.db_path, args.db_path);
    set!(log_level, args.log_level);
    set!(config.mode, args.mode);
    config.commit_notices |= args.commit_notices;
    set!(config.batch_max_events, args.batch_max_events);
    set!(
        config.batch_max_wait,
        args.batch_max_wait_us.map(Duration::from_micros)
    );
    set!(
        config.batch_linger,
        args.batch_linger_us.map(Duration::from_micros)
    );
    set!(config.channel_capacity, args.channel_capacity);
    set!(config.subscription_capacity, args.subscription_capacity);
    set!(config.max_payload_bytes, args.max_payload_bytes);
    set!(config.read_connections, args.read_connections);
    set!(config.ack_wait, args.ack_wait_ms.map(Duration::from_millis));
    set!(config.max_ack_pending, args.max_ack_pending);
    config.synchronous_full |= args.synchronous_full;
    if let Some(s) = args.maintenance_interval_secs {
        config.maintenance_interval = (s > 0).then(|| Duration::from_secs(s));
    }
    set!(
        config.shutdown_timeout,
        args.shutdown_timeout_ms.map(Duration::from_millis)
    );
    set!(config.max_buffered_bytes, args.max_buffered_bytes);
    set!(config.max_deliver, args.max_deliver);
    set!(config.stream_replicas, args.stream_replicas);
    if let Some(ms) = args.fault_stats_delay_ms {
        config.fault_stats_delay = (ms > 0).then(|| Duration::from_millis(ms));
    }
    if let Some(us) = args.fault_notice_delay_us {
        config.fault_notice_delay = (us > 0).then(|| Duration::from_micros(us));
    }
    config.validate()?;
    Ok((config, log_level))
}

/// Accepts the seed's Python level names as well as tracing filters.
fn log_filter(level: &str) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    let level = match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        "critical" => "error".to_owned(),
        l if ["error", "warn", "info", "debug", "trace", "off"].contains(&l) => l.to_owned(),
        _ => level.to_owned(),
    };
    tracing_subscriber::EnvFilter::try_new(&level)
        .map_err(|e| anyhow::anyhow!("invalid log level {level:?}: {e}"))
}

async fn shutdown_signal(token: CancellationToken) {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot listen for SIGINT");
                std::future::pending::<()>().await;
            }
            tracing::info!("SIGINT received");
        }
        _ = term => tracing::info!("SIGTERM received"),
    }
    token.cancel();
}

fn main() -> ExitCode {
    let result = (|| -> anyhow::Result<()> {
        let (config, log_level) = build_config(Args::parse())?;
        tracing_subscriber::fmt()
            .with_env_filter(log_filter(&log_level)?)
            .with_writer(std::io::stderr)
            .init();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let token = CancellationToken::new();
            let signals = tokio::spawn(shutdown_signal(token.clone()));
            let result = rosey_dbservice::run(config, token).await;
            signals.abort();
            result
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rosey-dbservice: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
