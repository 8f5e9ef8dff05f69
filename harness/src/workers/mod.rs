//! Distributed load: workers (`rosey-loadgen`, `cargo xtask worker`) that join a run over NATS,
//! each run a slice of a phase on the one phase engine ([`crate::load::run_phase`]) on their own
//! clock, and send back what they recorded; the coordinator (the bench run) merges the slices
//! into one phase outcome with a per-worker breakdown.
//!
//! A phase of `count` messages at `rate` over `n` workers: worker `k` sends the messages whose
//! index `i` has `i mod n = k`, at `rate / n`, its schedule starting `k / rate` after the common
//! start, so together they offer the single process's schedule. Latency runs from each message's
//! intended time to its proof on the worker's own host (no clock is compared across hosts); the
//! histograms travel in HdrHistogram's V2 encoding and are added up (`Histogram::add`).
//!
//! The conversation, under `rosey.bench.workers.<run id>.`:
//! * `join` (request, worker → coordinator): a worker announces itself until it is welcomed.
//! * `<worker>.slice` (request, coordinator → worker): the worker's slice; it prepares
//!   (connections, subscriptions) and answers ready, or with what it cannot do.
//! * `go.<phase>` (coordinator): every worker starts its slice.
//! * `<worker>.alive` (worker, every [`HEARTBEAT`]): alive, and how far it has come.
//! * `<worker>.report` (worker): its outcome, or the error that ended its slice.
//! * `abort.<phase>` and `bye` (coordinator): stop the slice; leave.
//!
//! A worker that stays silent for [`SILENCE`] during a phase has vanished: the phase fails with
//! its name and how far it had come, rather than shrinking to the workers that are left.

pub mod local;
pub mod worker;

use crate::histogram;
use crate::load::{
    DrainUntil, HopOutcome, Ids, InstanceNotices, KindOutcome, PhaseOutcome, PhaseSpec, Proof,
    Script, SendStats, SendVia,
};
use crate::record::{PhaseRecord, Unconfirmed};
use anyhow::Context;
use async_nats::Client;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime};

/// How often a busy worker says it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// A worker silent this long during a phase has vanished.
pub const SILENCE: Duration = Duration::from_secs(3);
/// At most this many never-confirmed messages (index, intended time) travel back per worker.
pub const MAX_UNCONFIRMED: usize = 20_000;

/// The subjects of one run's workers.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// The subjects of run `run_id` (a NATS token: letters, digits, `-`, `_`).
    pub fn new(run_id: &str) -> anyhow::Result<Subjects> {
        check_token("run id", run_id)?;
        Ok(Subjects {
            prefix: format!("rosey.bench.workers.{run_id}"),
        })
    }
    pub fn join(&self) -> String {
        format!("{}.join", self.prefix)
    }
    pub fn slice(&self, worker: &str) -> String {
        format!("{}.{worker}.slice", self.prefix)
    }
    pub fn go(&self, phase: u64) -> String {
        format!("{}.go.{phase}", self.prefix)
    }
    /// Every phase's go.
    pub fn go_all(&self) -> String {
        format!("{}.go.*", self.prefix)
    }
    pub fn abort(&self, phase: u64) -> String {
        format!("{}.abort.{phase}", self.prefix)
    }
    pub fn alive(&self, worker: &str) -> String {
        format!("{}.{worker}.alive", self.prefix)
    }
    /// Every worker's heartbeat.
    pub fn alive_all(&self) -> String {
        format!("{}.*.alive", self.prefix)
    }
    pub fn report(&self, worker: &str) -> String {
        format!("{}.{worker}.report", self.prefix)
    }
    pub fn report_all(&self) -> String {
        format!("{}.*.report", self.prefix)
    }
    pub fn bye(&self) -> String {
        format!("{}.bye", self.prefix)
    }
}

/// A run id or worker name must be one NATS subject token.
pub fn check_token(what: &str, s: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{what} {s:?} must be 1 to 64 letters, digits, '-' or '_'"
    );
    Ok(())
}

/// A worker announcing itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hello {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
}

/// The coordinator's answer to [`Hello`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Welcome {
    /// Position among the run's workers (0-based), or why the worker is not wanted.
    pub result: Result<u32, String>,
}

/// What each message of a slice is, in words a worker can rebuild the script from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RemoteScript {
    /// `rosey.db.message.log`, seed-shaped, message text of `payload_bytes`
    /// ([`crate::scenarios::message_log_payload`]), one commit notice each.
    MessageLog { payload_bytes: usize },
}

impl RemoteScript {
    /// The script (which remembers that it can be handed to workers).
    pub fn script(&self) -> Script {
        let mut script = match self {
            RemoteScript::MessageLog { payload_bytes } => Script::uniform(
                rosey_protocol::subjects::MESSAGE_LOG,
                crate::scenarios::message_log_payload(*payload_bytes),
            ),
        };
        script.remote = Some(self.clone());
        script
    }
}

/// One worker's part of a phase.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Slice {
    pub phase: u64,
    /// Ids of this worker's messages start with it (unique per worker).
    pub id_prefix: String,
    /// `None`: as fast as the client takes them.
    pub rate_per_s: Option<f64>,
    pub count: u64,
    /// Wait after `go` before the schedule starts (the worker's place in the common schedule).
    pub stagger_ns: u64,
    pub publishers: u32,
    pub script: RemoteScript,
    pub drain_timeout_ms: u64,
}

/// A worker's answer to a [`Slice`]: ready, or why it cannot run it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ready {
    pub result: Result<(), String>,
}

/// A worker's sign of life during a slice.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    pub phase: u64,
    /// Messages handed to the client so far.
    pub sent: u64,
}

/// How a worker's slice ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub phase: u64,
    pub result: Result<RemoteOutcome, String>,
}

/// A [`PhaseOutcome`] as it travels: instants become offsets from the slice's own start,
/// histograms their V2 deflate encoding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteOutcome {
    pub sent: u64,
    pub confirmed: u64,
    pub duplicated: u64,
    pub unknown: u64,
    pub rejected: u64,
    pub latency: String,
    /// One per second from the slice's start.
    pub intervals: Vec<String>,
    /// One per second of intended send time from the slice's start.
    #[serde(default)]
    pub by_intended: Vec<String>,
    pub first_confirm_ns: Option<u64>,
    pub last_confirm_ns: Option<u64>,
    /// Never-confirmed messages: (index within the slice, intended offset in ns); at most
    /// [`MAX_UNCONFIRMED`].
    pub unconfirmed: Vec<(u64, u64)>,
    pub send_delay: String,
    pub send_errors: u64,
    pub drained: bool,
    pub drain_time_ns: u64,
    pub elapsed_ns: u64,
    pub kinds: Vec<RemoteKind>,
    pub duplicate_events: u64,
    pub skipped_redeliveries: u64,
    pub unexpected_events: u64,
    pub extra_messages: u64,
    pub rejected_examples: Vec<String>,
    pub notices_by_instance: Vec<RemoteInstance>,
    pub pub_acks: u64,
    pub pub_ack_errors: u64,
    pub pub_retries: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteKind {
    pub name: String,
    pub sent: u64,
    pub committed: u64,
    pub latency: String,
    pub unproven_sent: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteInstance {
    pub instance: String,
    pub first_ns: u64,
    pub last_ns: u64,
    pub notices: u64,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl RemoteOutcome {
    /// The travelling form of a worker's outcome.
    pub fn from_outcome(o: &PhaseOutcome) -> anyhow::Result<RemoteOutcome> {
        let r = &o.record;
        let since = |t: Instant| ns(t.saturating_duration_since(r.start));
        Ok(RemoteOutcome {
            sent: r.sent,
            confirmed: r.confirmed,
            duplicated: r.duplicated,
            unknown: r.unknown,
            rejected: r.rejected,
            latency: histogram::encode(&r.latency)?,
            intervals: r
                .intervals
                .iter()
                .map(|iv| histogram::encode(&iv.histogram.unpack()))
                .collect::<anyhow::Result<_>>()?,
            by_intended: r
                .by_intended
                .iter()
                .map(|iv| histogram::encode(&iv.histogram.unpack()))
                .collect::<anyhow::Result<_>>()?,
            first_confirm_ns: r.first_confirm.map(since),
            last_confirm_ns: r.last_confirm.map(since),
            unconfirmed: r
                .unconfirmed
                .iter()
                .take(MAX_UNCONFIRMED)
                .map(|u| (u.index, ns(u.intended)))
                .collect(),
            send_delay: histogram::encode(&o.send.send_delay)?,
            send_errors: o.send.errors,
            drained: o.drained,
            drain_time_ns: ns(o.drain_time),
            elapsed_ns: ns(o.elapsed),
            kinds: o
                .kinds
                .iter()
                .map(|k| {
                    Ok(RemoteKind {
                        name: k.name.clone(),
                        sent: k.sent,
                        committed: k.committed,
                        latency: histogram::encode(&k.latency)?,
                        unproven_sent: k.unproven_sent,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            duplicate_events: o.duplicate_events,
            skipped_redeliveries: o.skipped_redeliveries,
            unexpected_events: o.unexpected_events,
            extra_messages: o.extra_messages,
            rejected_examples: o.rejected_examples.clone(),
            notices_by_instance: o
                .notices_by_instance
                .iter()
                .map(|n| RemoteInstance {
                    instance: n.instance.clone(),
                    first_ns: since(n.first),
                    last_ns: since(n.last),
                    notices: n.notices,
                })
                .collect(),
            pub_acks: o.pub_acks,
            pub_ack_errors: o.pub_ack_errors,
            pub_retries: o.pub_retries,
        })
    }
}

/// Messages of a `count`-message phase that worker `k` of `n` sends (indices `k`, `k + n`, …).
pub fn slice_count(count: u64, n: u64, k: u64) -> u64 {
    if k >= count {
        0
    } else {
        (count - k).div_ceil(n)
    }
}

/// One worker's figures in a merged phase.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerFigures {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub sent: u64,
    pub committed: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// The worker's own send delay p99 (how well it kept its schedule), µs.
    pub send_delay_p99_us: f64,
    pub latency_p50_us: Option<f64>,
    pub latency_p99_us: Option<f64>,
}

/// A worker's slice as the coordinator merges it.
pub struct SliceResult<'a> {
    pub hello: &'a Hello,
    /// Worker `k` of `n`.
    pub k: u64,
    pub outcome: &'a RemoteOutcome,
}

/// The phase outcome of all slices together, as if one process had run the phase from `start`:
/// counts add up, histograms are added, worker `k`'s message `j` is the phase's message
/// `j·n + k`, and each worker's offsets are taken as offsets from `start` (each worker timed
/// from its own start, which lay within milliseconds of the common one).
pub fn merge(
    slices: &[SliceResult<'_>],
    n: u64,
    rate_per_s: Option<f64>,
    start: Instant,
    start_wall: SystemTime,
) -> anyhow::Result<(PhaseOutcome, Vec<WorkerFigures>)> {
    let mut latency = histogram::new_histogram();
    let mut send_delay = histogram::new_histogram();
    let mut intervals: Vec<hdrhistogram::Histogram<u64>> = Vec::new();
    let mut by_intended: Vec<hdrhistogram::Histogram<u64>> = Vec::new();
    let mut kinds: Vec<KindOutcome> = Vec::new();
    let mut instances: Vec<InstanceNotices> = Vec::new();
    let mut unconfirmed = Vec::new();
    let mut figures = Vec::new();
    let mut m = PhaseOutcome {
        record: PhaseRecord {
            sent: 0,
            confirmed: 0,
            duplicated: 0,
            unknown: 0,
            rejected: 0,
            latency: histogram::new_histogram(),
            intervals: Vec::new(),
            by_intended: Vec::new(),
            start,
            start_wall,
            first_confirm: None,
            last_confirm: None,
            unconfirmed: Vec::new(),
        },
        send: SendStats::empty(),
        drained: true,
        drain_time: Duration::ZERO,
        elapsed: Duration::ZERO,
        start,
        kinds: Vec::new(),
        duplicate_events: 0,
        skipped_redeliveries: 0,
        unexpected_events: 0,
        extra_messages: 0,
        rejected_examples: Vec::new(),
        notices_by_instance: Vec::new(),
        pub_acks: 0,
        pub_ack_errors: 0,
        pub_retries: 0,
        hops: Vec::<HopOutcome>::new(),
    };
    let add = |into: &mut hdrhistogram::Histogram<u64>, encoded: &str, what: &str, who: &str| {
        let h = histogram::decode(encoded).with_context(|| format!("worker {who}'s {what}"))?;
        into.add(&h)
            .map_err(|e| anyhow::anyhow!("adding worker {who}'s {what}: {e:?}"))
    };
    for s in slices {
        let (o, who) = (s.outcome, s.hello.name.as_str());
        let stagger = match rate_per_s {
            Some(rate) => Duration::from_secs_f64(s.k as f64 / rate),
            None => Duration::ZERO,
        };
        let at = |offset_ns: u64| start + stagger + Duration::from_nanos(offset_ns);
        let r = &mut m.record;
        r.sent += o.sent;
        r.confirmed += o.confirmed;
        r.duplicated += o.duplicated;
        r.unknown += o.unknown;
        r.rejected += o.rejected;
        let mut own_latency = histogram::new_histogram();
        add(&mut own_latency, &o.latency, "latency", who)?;
        latency
            .add(&own_latency)
            .map_err(|e| anyhow::anyhow!("adding worker {who}'s latency: {e:?}"))?;
        for (i, encoded) in o.intervals.iter().enumerate() {
            if intervals.len() <= i {
                intervals.push(histogram::new_histogram());
            }
            add(&mut intervals[i], encoded, "interval histogram", who)?;
        }
        for (i, encoded) in o.by_intended.iter().enumerate() {
            if by_intended.len() <= i {
                by_intended.push(histogram::new_histogram());
            }
            add(&mut by_intended[i], encoded, "interval histogram", who)?;
        }
        if let Some(f) = o.first_confirm_ns.map(at) {
            r.first_confirm = Some(r.first_confirm.map_or(f, |x| x.min(f)));
        }
        if let Some(l) = o.last_confirm_ns.map(at) {
            r.last_confirm = Some(r.last_confirm.map_or(l, |x| x.max(l)));
        }
        unconfirmed.extend(o.unconfirmed.iter().map(|(j, intended)| Unconfirmed {
            index: j * n + s.k,
            intended: stagger + Duration::from_nanos(*intended),
        }));
        let mut own_delay = histogram::new_histogram();
        add(&mut own_delay, &o.send_delay, "send delay", who)?;
        send_delay
            .add(&own_delay)
            .map_err(|e| anyhow::anyhow!("adding worker {who}'s send delay: {e:?}"))?;
        m.send.errors += o.send_errors;
        m.drained &= o.drained;
        m.drain_time = m.drain_time.max(Duration::from_nanos(o.drain_time_ns));
        m.elapsed = m.elapsed.max(stagger + Duration::from_nanos(o.elapsed_ns));
        for k in &o.kinds {
            let idx = match kinds.iter().position(|x| x.name == k.name) {
                Some(i) => i,
                None => {
                    kinds.push(KindOutcome {
                        name: k.name.clone(),
                        sent: 0,
                        committed: 0,
                        latency: histogram::new_histogram(),
                        unproven_sent: 0,
                    });
                    kinds.len() - 1
                }
            };
            let into = &mut kinds[idx];
            into.sent += k.sent;
            into.committed += k.committed;
            into.unproven_sent += k.unproven_sent;
            add(&mut into.latency, &k.latency, "kind latency", who)?;
        }
        m.duplicate_events += o.duplicate_events;
        m.skipped_redeliveries += o.skipped_redeliveries;
        m.unexpected_events += o.unexpected_events;
        m.extra_messages += o.extra_messages;
        m.rejected_examples
            .extend(o.rejected_examples.iter().take(3).cloned());
        for i in &o.notices_by_instance {
            let (first, last) = (at(i.first_ns), at(i.last_ns));
            match instances.iter_mut().find(|x| x.instance == i.instance) {
                Some(x) => {
                    x.first = x.first.min(first);
                    x.last = x.last.max(last);
                    x.notices += i.notices;
                }
                None => instances.push(InstanceNotices {
                    instance: i.instance.clone(),
                    first,
                    last,
                    notices: i.notices,
                }),
            }
        }
        m.pub_acks += o.pub_acks;
        m.pub_ack_errors += o.pub_ack_errors;
        m.pub_retries += o.pub_retries;
        let q = |h: &hdrhistogram::Histogram<u64>, q: f64| {
            (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1e3)
        };
        figures.push(WorkerFigures {
            name: s.hello.name.clone(),
            host: s.hello.host.clone(),
            pid: s.hello.pid,
            sent: o.sent,
            committed: o.confirmed,
            lost: o.sent.saturating_sub(o.confirmed),
            duplicated: o.duplicated + o.duplicate_events,
            send_delay_p99_us: q(&own_delay, 0.99).unwrap_or(0.0),
            latency_p50_us: q(&own_latency, 0.5),
            latency_p99_us: q(&own_latency, 0.99),
        });
    }
    unconfirmed.sort_by_key(|u| u.index);
    instances.sort_by_key(|i| i.first);
    m.record.latency = latency;
    m.record.intervals = crate::record::pack_seconds(&intervals, "latency");
    m.record.by_intended = crate::record::pack_seconds(&by_intended, "latency_by_intended");
    m.record.unconfirmed = unconfirmed;
    m.send.send_delay = send_delay;
    m.kinds = kinds;
    m.notices_by_instance = instances;
    Ok((m, figures))
}

/// Whether `spec` can be handed to workers: a script they can rebuild, core publishes, commit
/// notices naming the messages' own ids, no taps, a drain until every message is proven.
pub fn remote_script(spec: &PhaseSpec) -> Option<&RemoteScript> {
    let plain = matches!(spec.proof, Proof::CommitNotices(Ids::Direct))
        && spec.via == SendVia::Core
        && spec.taps.points.is_empty()
        && spec.drain_until == DrainUntil::All
        && spec.burst_size == 1
        && spec.harness_fault.is_zero();
    spec.script.remote.as_ref().filter(|_| plain)
}

/// Where a run's load workers come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WorkerSource {
    /// None: the harness process offers every phase.
    #[default]
    None,
    /// `count` containers on this host, from an image built around this `rosey-loadgen` binary.
    Containers {
        count: u32,
        binary: std::path::PathBuf,
    },
    /// `count` child processes of this `rosey-loadgen` binary.
    Processes {
        count: u32,
        binary: std::path::PathBuf,
    },
    /// `count` workers started by hand (on other hosts), joining by the run's id.
    Remote { count: u32 },
}

impl WorkerSource {
    /// The environment's `load_generators` (none when the harness process offers the load).
    pub fn describe(&self) -> Option<String> {
        match self {
            WorkerSource::None => None,
            WorkerSource::Containers { count, .. } => Some(format!("{count} worker containers")),
            WorkerSource::Processes { count, .. } => Some(format!("{count} worker processes")),
            WorkerSource::Remote { count } => Some(format!("{count} remote workers")),
        }
    }
}

/// The workers of a run, as the coordinator sees them.
pub struct Workers {
    client: Client,
    subjects: Subjects,
    members: Vec<Hello>,
    /// The workers' processes on this host (containers), for the resource sampler.
    processes: Vec<(String, u32)>,
    /// Phases handed out so far (each gets its own number).
    phases: std::sync::atomic::AtomicU64,
}

impl Workers {
    /// Welcome workers on `run_id`'s join subject until `n` have joined; `waiting` is told once,
    /// when the first second passed without all of them. Fails after `timeout` naming how many
    /// came.
    pub async fn gather(
        client: &Client,
        run_id: &str,
        n: u32,
        timeout: Duration,
        waiting: impl Fn(u32),
    ) -> anyhow::Result<Workers> {
        anyhow::ensure!(n > 0, "at least one worker");
        let subjects = Subjects::new(run_id)?;
        let mut joins = client
            .subscribe(subjects.join())
            .await
            .context("subscribe to worker joins")?;
        crate::load::ensure_subscribed(client).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut told = false;
        let mut members: Vec<Hello> = Vec::new();
        while members.len() < n as usize {
            let tick = tokio::time::Instant::now() + Duration::from_secs(1);
            let msg = tokio::select! {
                m = joins.next() => m.context("the join subscription ended")?,
                () = tokio::time::sleep_until(tick.min(deadline)) => {
                    anyhow::ensure!(
                        tokio::time::Instant::now() < deadline,
                        "{} of {n} workers joined run {run_id} within {:.0} s; start them with \
                         `rosey-loadgen --nats-url <url> --run-id {run_id}` (or `cargo xtask worker`), \
                         reaching the same NATS server",
                        members.len(),
                        timeout.as_secs_f64()
                    );
                    if !told {
                        told = true;
                        waiting(u32::try_from(members.len()).unwrap_or(u32::MAX));
                    }
                    continue;
                }
            };
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let answer = match serde_json::from_slice::<Hello>(&msg.payload) {
                Err(e) => Welcome {
                    result: Err(format!("not a worker hello: {e}")),
                },
                Ok(h) => match members.iter().position(|m| m.name == h.name) {
                    // A repeated hello (its first answer was lost): the same place.
                    Some(i) => Welcome {
                        result: Ok(u32::try_from(i).unwrap_or(u32::MAX)),
                    },
                    None => match check_token("worker name", &h.name) {
                        Err(e) => Welcome {
                            result: Err(format!("{e:#}")),
                        },
                        Ok(()) => {
                            members.push(h);
                            Welcome {
                                result: Ok(u32::try_from(members.len() - 1).unwrap_or(u32::MAX)),
                            }
                        }
                    },
                },
            };
            let body = serde_json::to_vec(&answer).context("encode welcome")?;
            client
                .publish(reply, body.into())
                .await
                .context("answer a worker")?;
        }
        client.flush().await.context("flush welcomes")?;
        Ok(Workers {
            client: client.clone(),
            subjects,
            members,
            processes: Vec::new(),
            phases: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The workers' processes on this host, sampled with the others (name, host pid).
    pub fn with_processes(mut self, processes: Vec<(String, u32)>) -> Workers {
        self.processes = processes;
        self
    }

    /// See [`Workers::with_processes`].
    pub fn processes(&self) -> &[(String, u32)] {
        &self.processes
    }

    /// The workers, in their order in every phase.
    pub fn members(&self) -> &[Hello] {
        &self.members
    }

    /// Run `spec` (whose script is `script`) over the workers: each gets its slice, all start
    /// together, and their outcomes are merged. `publishers` is the phase's connection count,
    /// shared out among the workers (at least one each). Fails, naming the worker, when one
    /// refuses its slice, reports an error, or vanishes.
    pub async fn run_phase(
        &self,
        spec: &PhaseSpec,
        script: &RemoteScript,
        publishers: u32,
        progress: &indicatif::ProgressBar,
    ) -> anyhow::Result<(PhaseOutcome, Vec<WorkerFigures>)> {
        let n = self.members.len() as u64;
        let phase = self
            .phases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut alive = self
            .client
            .subscribe(self.subjects.alive_all())
            .await
            .context("subscribe to worker heartbeats")?;
        let mut reports = self
            .client
            .subscribe(self.subjects.report_all())
            .await
            .context("subscribe to worker reports")?;
        crate::load::ensure_subscribed(&self.client).await?;
        for (k, w) in self.members.iter().enumerate() {
            let k = k as u64;
            let slice = Slice {
                phase,
                id_prefix: format!("{}{}.", spec.id_prefix, w.name),
                rate_per_s: spec.rate_per_s.map(|r| r / n as f64),
                count: slice_count(spec.count, n, k),
                stagger_ns: spec
                    .rate_per_s
                    .map_or(0, |r| ns(Duration::from_secs_f64(k as f64 / r))),
                publishers: (publishers / u32::try_from(n).unwrap_or(u32::MAX)).max(1),
                script: script.clone(),
                drain_timeout_ms: u64::try_from(spec.drain_timeout.as_millis()).unwrap_or(u64::MAX),
            };
            let answer = tokio::time::timeout(
                Duration::from_secs(30),
                self.client.request(
                    self.subjects.slice(&w.name),
                    serde_json::to_vec(&slice)?.into(),
                ),
            )
            .await
            .map_err(|_| anyhow::anyhow!("worker {} did not take its slice within 30 s", w.name))?
            .with_context(|| format!("handing worker {} its slice", w.name))?;
            let ready: Ready = serde_json::from_slice(&answer.payload)
                .with_context(|| format!("worker {}'s answer to its slice", w.name))?;
            if let Err(e) = ready.result {
                self.abort(phase).await;
                anyhow::bail!("worker {} cannot run its slice: {e}", w.name);
            }
        }
        let start_wall = SystemTime::now();
        let start = Instant::now();
        self.client
            .publish(self.subjects.go(phase), "go".into())
            .await
            .context("start the workers")?;
        self.client.flush().await.context("start the workers")?;
        progress.set_length(spec.count);
        progress.set_position(0);

        let mut heard = vec![Instant::now(); n as usize];
        let mut sent = vec![0u64; n as usize];
        let mut done: Vec<Option<RemoteOutcome>> = vec![None; n as usize];
        let expected = spec.rate_per_s.map_or(Duration::ZERO, |r| {
            Duration::from_secs_f64(spec.count as f64 / r)
        });
        let deadline = Instant::now() + expected + spec.drain_timeout + Duration::from_secs(60);
        let index_of = |subject: &str| {
            let worker = subject.rsplit('.').nth(1)?;
            self.members.iter().position(|m| m.name == worker)
        };
        while done.iter().any(Option::is_none) {
            let outcome = tokio::select! {
                m = alive.next() => {
                    let m = m.context("the heartbeat subscription ended")?;
                    if let (Some(i), Ok(h)) = (index_of(&m.subject), serde_json::from_slice::<Heartbeat>(&m.payload)) {
                        if h.phase == phase {
                            heard[i] = Instant::now();
                            sent[i] = h.sent;
                            progress.set_position(sent.iter().sum());
                        }
                    }
                    Ok(())
                }
                m = reports.next() => {
                    let m = m.context("the report subscription ended")?;
                    match (index_of(&m.subject), serde_json::from_slice::<Report>(&m.payload)) {
                        (Some(i), Ok(r)) if r.phase == phase => match r.result {
                            Ok(o) => {
                                heard[i] = Instant::now();
                                done[i] = Some(o);
                                Ok(())
                            }
                            Err(e) => Err(anyhow::anyhow!(
                                "worker {} failed its slice of the phase: {e}",
                                self.members[i].name
                            )),
                        },
                        (Some(i), Err(e)) => Err(anyhow::anyhow!(
                            "worker {}'s report could not be read: {e}",
                            self.members[i].name
                        )),
                        _ => Ok(()),
                    }
                }
                () = tokio::time::sleep(HEARTBEAT) => Ok(()),
            };
            if let Err(e) = outcome {
                self.abort(phase).await;
                return Err(e);
            }
            let now = Instant::now();
            if let Some(i) = (0..n as usize)
                .find(|i| done[*i].is_none() && now.duration_since(heard[*i]) > SILENCE)
            {
                self.abort(phase).await;
                let w = &self.members[i];
                anyhow::bail!(
                    "worker {} (pid {} on {}) vanished: last heard {:.1} s into the phase, then \
                     silent for {:.1} s, having handed {} of its {} messages to NATS; the phase \
                     fails rather than count only the workers that are left",
                    w.name,
                    w.pid,
                    w.host,
                    heard[i].saturating_duration_since(start).as_secs_f64(),
                    now.duration_since(heard[i]).as_secs_f64(),
                    sent[i],
                    slice_count(spec.count, n, i as u64),
                );
            }
            if now > deadline {
                self.abort(phase).await;
                let missing: Vec<&str> = (0..n as usize)
                    .filter(|i| done[*i].is_none())
                    .map(|i| self.members[i].name.as_str())
                    .collect();
                anyhow::bail!(
                    "workers {} did not report within {:.0} s of the phase's start",
                    missing.join(", "),
                    deadline.duration_since(start).as_secs_f64()
                );
            }
        }
        let done: Vec<RemoteOutcome> = done.into_iter().flatten().collect();
        let slices: Vec<SliceResult<'_>> = done
            .iter()
            .enumerate()
            .map(|(k, o)| SliceResult {
                hello: &self.members[k],
                k: k as u64,
                outcome: o,
            })
            .collect();
        progress.set_position(spec.count);
        merge(&slices, n, spec.rate_per_s, start, start_wall)
    }

    async fn abort(&self, phase: u64) {
        let _ = self
            .client
            .publish(self.subjects.abort(phase), "abort".into())
            .await;
        let _ = self.client.flush().await;
    }

    /// Tell the workers the run is over (they exit).
    pub async fn dismiss(&self) {
        let _ = self.client.publish(self.subjects.bye(), "bye".into()).await;
        let _ = self.client.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_phase_exactly_once() {
        for count in [0u64, 1, 2, 3, 10, 1_001] {
            for n in 1..=4u64 {
                let total: u64 = (0..n).map(|k| slice_count(count, n, k)).sum();
                assert_eq!(total, count, "count {count}, {n} workers");
            }
        }
        assert_eq!(slice_count(10, 3, 0), 4); // 0 3 6 9
        assert_eq!(slice_count(10, 3, 2), 3); // 2 5 8
    }

    #[test]
    fn tokens_are_checked() {
        assert!(check_token("run id", "20261201T193600Z-352bf60").is_ok());
        assert!(check_token("run id", "a.b").is_err());
        assert!(check_token("run id", "").is_err());
        assert!(check_token("worker name", "w*").is_err());
    }

    fn outcome(start: Instant, latencies_us: &[u64], sent: u64, delay_us: u64) -> PhaseOutcome {
        let t = crate::record::Tracker::new("x.", sent as usize, start);
        for i in 0..sent {
            let intended = start + Duration::from_millis(i);
            t.mark_sending(i, intended, intended + Duration::from_micros(delay_us));
            t.mark_sent();
        }
        for (i, l) in latencies_us.iter().enumerate() {
            let intended = start + Duration::from_millis(i as u64);
            t.confirm_index(i as u64, intended + Duration::from_micros(*l));
        }
        let mut send = SendStats::empty();
        for _ in 0..sent {
            histogram::record_duration(&mut send.send_delay, Duration::from_micros(delay_us));
        }
        PhaseOutcome {
            record: t.finish(),
            send,
            drained: latencies_us.len() as u64 == sent,
            drain_time: Duration::from_millis(3),
            elapsed: Duration::from_millis(sent + 3),
            start,
            kinds: Vec::new(),
            duplicate_events: 0,
            skipped_redeliveries: 0,
            unexpected_events: 0,
            extra_messages: 0,
            rejected_examples: Vec::new(),
            notices_by_instance: vec![InstanceNotices {
                instance: "abc".into(),
                first: start + Duration::from_millis(1),
                last: start + Duration::from_millis(2),
                notices: latencies_us.len() as u64,
            }],
            pub_acks: 0,
            pub_ack_errors: 0,
            pub_retries: 0,
            hops: Vec::new(),
        }
    }

    #[test]
    fn merged_slices_add_up_exactly() {
        let t0 = Instant::now();
        // Worker 0: 3 sent, all proven; worker 1: 3 sent, its message 2 (phase index 5) lost.
        let a = RemoteOutcome::from_outcome(&outcome(t0, &[100, 200, 300], 3, 10)).unwrap();
        let b = RemoteOutcome::from_outcome(&outcome(t0, &[1_000, 2_000], 3, 500)).unwrap();
        // Through JSON, as they travel.
        let a: RemoteOutcome = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        let b: RemoteOutcome = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        let hello = |name: &str| Hello {
            name: name.into(),
            host: "h".into(),
            pid: 1,
            version: "0".into(),
        };
        let (ha, hb) = (hello("w0"), hello("w1"));
        let slices = [
            SliceResult {
                hello: &ha,
                k: 0,
                outcome: &a,
            },
            SliceResult {
                hello: &hb,
                k: 1,
                outcome: &b,
            },
        ];
        let (m, figures) = merge(&slices, 2, Some(1_000.0), t0, SystemTime::now()).unwrap();
        let r = &m.record;
        assert_eq!((r.sent, r.confirmed, r.lost()), (6, 5, 1));
        assert_eq!(r.latency.len(), 5);
        assert_eq!(
            r.unconfirmed.iter().map(|u| u.index).collect::<Vec<_>>(),
            vec![5],
            "worker 1's message 2 is the phase's message 2·2 + 1"
        );
        assert!(!m.drained, "one worker did not drain");
        assert_eq!(m.send.send_delay.len(), 6);
        assert_eq!(m.notices_by_instance.len(), 1);
        assert_eq!(m.notices_by_instance[0].notices, 5);
        assert_eq!(figures.len(), 2);
        assert_eq!((figures[1].sent, figures[1].lost), (3, 1));
        assert!(figures[1].send_delay_p99_us > figures[0].send_delay_p99_us);
        let interval_total: u64 = r
            .intervals
            .iter()
            .map(|iv| iv.histogram.unpack().len())
            .sum();
        assert_eq!(interval_total, 5, "interval histograms merge too");
    }

    #[test]
    fn only_plain_phases_go_to_workers() {
        let script = RemoteScript::MessageLog { payload_bytes: 8 }.script();
        assert!(script.remote.is_some());
        let plain = crate::load::Script::uniform("x", crate::scenarios::fixed_payload("p".into()));
        assert!(plain.remote.is_none(), "an arbitrary closure cannot travel");
    }
}
