//! `rosey-loadgen`: a load-generating worker. It joins a bench run over NATS (the run's id and
//! the server's URL are all it needs), takes its slice of each phase the run hands it, runs it on
//! the harness's phase engine on this host's clock, and sends back its histograms and
//! accounting. It leaves when the run ends. See README.md, "Load from several hosts".

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "rosey-loadgen",
    version,
    about = "A Rosey bench load worker: joins a run over NATS and offers its share of the load",
    long_about = "A Rosey bench load worker. Start `cargo xtask bench --remote-workers N` on the \
                  coordinating host; it prints the run id and waits. On each load host run \
                  `rosey-loadgen --nats-url <the run's NATS> --run-id <id>`. Each worker sends its \
                  share of every phase that can be handed out (its ids, its part of the rate), on its \
                  own clock, and reports its histograms and accounting; the run merges them."
)]
struct Args {
    /// URL of the NATS server the run uses (reachable from this host).
    #[arg(long, env = "NATS_URL")]
    nats_url: String,
    /// The run to join, as `cargo xtask bench` prints it.
    #[arg(long, env = "ROSEY_RUN_ID")]
    run_id: String,
    /// This worker's name, unique in the run (default: <host>-<pid>).
    #[arg(long)]
    name: Option<String>,
    /// How this worker's host is named in the results (default: the host's name).
    #[arg(long)]
    host_label: Option<String>,
    /// Give up when no run welcomed the worker within this many seconds.
    #[arg(long, default_value_t = 600.0)]
    join_timeout_s: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    if !(args.join_timeout_s.is_finite() && args.join_timeout_s > 0.0) {
        eprintln!("error: --join-timeout-s must be a positive number of seconds");
        return ExitCode::from(harness::exit::HARNESS_ERROR);
    }
    let opts = harness::workers::worker::WorkerOptions {
        nats_url: args.nats_url,
        run_id: args.run_id,
        name: args
            .name
            .unwrap_or_else(harness::workers::worker::default_name),
        join_timeout: Duration::from_secs_f64(args.join_timeout_s),
        host: args
            .host_label
            .unwrap_or_else(harness::workers::worker::host_name),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(harness::exit::HARNESS_ERROR);
        }
    };
    match runtime.block_on(harness::workers::worker::serve(opts, |line| {
        eprintln!("{line}")
    })) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(harness::exit::HARNESS_ERROR)
        }
    }
}
