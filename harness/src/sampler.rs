//! CPU and RSS of the processes under test, sampled from `/proc` by a background thread, and
//! summarised per measured phase; and the one slope estimator of the harness ([`theil_sen`]).
//!
//! CPU time comes from the scheduler's nanosecond counter, the first field of
//! `/proc/<pid>/task/<tid>/schedstat` summed over the process's threads (`/proc/<pid>/schedstat`
//! alone is the main thread's). Where schedstat is unavailable it falls back to `utime + stime` of
//! `/proc/<pid>/stat`, in clock ticks (10 ms), and says so ([`CPU_SOURCE_TICKS`]). User and system
//! time are reported from the ticks either way (schedstat does not split them).
//!
//! CPU counters are cumulative, so a phase's CPU is the difference between the samples taken at
//! its start and at its end (both taken synchronously by [`Sampler::begin_phase`] and
//! [`Phase::end`], so no interval boundary is lost). After a service restart the pid changes;
//! CPU accumulates over every pid a name has had, and a pid that appears mid-phase counts from
//! its own start, which is what a restart needs. Threads are kept the same way: a thread that
//! exits keeps the time last read for it (what it ran after that last sample is lost, at most
//! one sampling interval of one thread). The periodic samples form the timeline and the RSS
//! trend.

use std::{
    collections::BTreeMap,
    sync::{
        mpsc::{self, RecvTimeoutError},
        Arc, Mutex, PoisonError,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::results::{ProcessResources, ResourceSample};

/// [`crate::results::ProcessResources::cpu_source`] when CPU came from the scheduler's
/// nanosecond counters.
pub const CPU_SOURCE_SCHEDSTAT: &str = "schedstat";
/// [`crate::results::ProcessResources::cpu_source`] when schedstat was unavailable and CPU came
/// from `utime + stime` clock ticks (10 ms resolution).
pub const CPU_SOURCE_TICKS: &str = "stat_ticks";

/// One reading of one process name (summed over its pids).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    at: Instant,
    /// Cumulative CPU seconds over every pid this name has had, from the ticks of `stat`.
    user_s: f64,
    system_s: f64,
    /// Cumulative CPU seconds on the finest clock available (schedstat, else the ticks).
    cpu_s: f64,
    /// True when some pid's CPU came from ticks (schedstat unreadable).
    ticks_only: bool,
    /// RSS of the name's current pids; `None` when none of them could be read (exited).
    rss_bytes: Option<u64>,
}

/// The last cumulative CPU counters seen for one pid.
#[derive(Debug, Clone, Default, PartialEq)]
struct PidCpu {
    user_ticks: u64,
    system_ticks: u64,
    /// Nanoseconds on CPU per thread id, from schedstat; `None` when it could not be read.
    threads_ns: Option<BTreeMap<u32, u64>>,
}

impl PidCpu {
    /// Cumulative CPU seconds: schedstat's sum when known, else the ticks.
    fn cpu_s(&self, tps: f64) -> f64 {
        match &self.threads_ns {
            Some(threads) => threads.values().sum::<u64>() as f64 / 1e9,
            None => (self.user_ticks + self.system_ticks) as f64 / tps,
        }
    }
}

#[derive(Default)]
struct State {
    processes: Vec<(String, u32)>,
    /// Last cumulative CPU counters seen per (name, pid).
    last_cpu: BTreeMap<(String, u32), PidCpu>,
    /// Every reading, per name, in time order.
    readings: BTreeMap<String, Vec<Reading>>,
}

impl State {
    fn sample(&mut self, at: Instant) {
        let tps = ticks_per_second();
        let mut rss: BTreeMap<String, Option<u64>> = BTreeMap::new();
        for (name, pid) in self.processes.clone() {
            let entry = rss.entry(name.clone()).or_insert(None);
            if let Some((user, system, bytes)) = read_process(pid) {
                let last = self.last_cpu.entry((name, pid)).or_default();
                last.user_ticks = user;
                last.system_ticks = system;
                match read_threads_ns(pid) {
                    // Threads that exited keep the time last read for them.
                    Some(now) => last
                        .threads_ns
                        .get_or_insert_with(BTreeMap::new)
                        .extend(now),
                    None => last.threads_ns = None,
                }
                *entry = Some(entry.unwrap_or(0) + bytes);
            }
        }
        for (name, rss_bytes) in rss {
            let mut reading = Reading {
                at,
                user_s: 0.0,
                system_s: 0.0,
                cpu_s: 0.0,
                ticks_only: false,
                rss_bytes,
            };
            for (_, cpu) in self.last_cpu.iter().filter(|((n, _), _)| *n == name) {
                reading.user_s += cpu.user_ticks as f64 / tps;
                reading.system_s += cpu.system_ticks as f64 / tps;
                reading.cpu_s += cpu.cpu_s(tps);
                reading.ticks_only |= cpu.threads_ns.is_none();
            }
            self.readings.entry(name).or_default().push(reading);
        }
    }
}

fn ticks_per_second() -> f64 {
    // Linux reports 100 on every mainstream configuration; the call cannot fail there.
    procfs::ticks_per_second() as f64
}

/// (utime ticks, stime ticks, RSS bytes) of `pid`, or `None` if it is gone or unreadable.
fn read_process(pid: u32) -> Option<(u64, u64, u64)> {
    let pid = i32::try_from(pid).ok()?;
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    Some((
        stat.utime,
        stat.stime,
        stat.rss.saturating_mul(procfs::page_size()),
    ))
}

/// Nanoseconds on CPU of every thread of `pid` (`/proc/<pid>/task/<tid>/schedstat`, first
/// field); `None` when schedstat cannot be read (a kernel without `CONFIG_SCHED_INFO`).
fn read_threads_ns(pid: u32) -> Option<BTreeMap<u32, u64>> {
    let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let mut threads = BTreeMap::new();
    for task in process.tasks().ok()?.flatten() {
        // A thread that exits between listing and reading is simply not seen this time.
        if let Ok(s) = task.schedstat() {
            threads.insert(u32::try_from(task.tid).ok()?, s.sum_exec_runtime);
        }
    }
    (!threads.is_empty()).then_some(threads)
}

/// CPU time the calling thread has used so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThreadCpu {
    /// On CPU, in nanoseconds: the scheduler's runtime counter of this thread.
    pub total: Duration,
    /// From the ticks of `/proc/thread-self/stat` (10 ms resolution).
    pub user: Duration,
    pub system: Duration,
    /// [`CPU_SOURCE_SCHEDSTAT`]: the scheduler's nanosecond counter.
    pub source: &'static str,
}

/// CPU time of the calling thread: the scheduler's nanosecond runtime from
/// `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` (the counter schedstat shows for other threads, but
/// brought up to date: the kernel updates a running thread's schedstat only at a tick or a
/// context switch, so a short stretch of work that neither blocks nor crosses a tick read as zero
/// there), and the user/system split from `/proc/thread-self/stat` ticks; `None` where `stat` is
/// unavailable. For work done on a dedicated thread of this process, whose CPU must not be mixed
/// with the rest of the harness.
pub fn thread_cpu_time() -> Option<ThreadCpu> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let (user, system) = parse_stat_times(&stat)?;
    let tps = ticks_per_second();
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let total = Duration::new(
        u64::try_from(now.tv_sec).ok()?,
        u32::try_from(now.tv_nsec).ok()?,
    );
    Some(ThreadCpu {
        total,
        user: Duration::from_secs_f64(user as f64 / tps),
        system: Duration::from_secs_f64(system as f64 / tps),
        source: CPU_SOURCE_SCHEDSTAT,
    })
}

/// (utime, stime) in clock ticks from a `stat` line. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted after its closing parenthesis.
fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// Samples a set of processes at a fixed interval until dropped.
pub struct Sampler {
    state: Arc<Mutex<State>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `processes` (name, pid) every `interval` on a background thread.
    pub fn spawn(processes: Vec<(String, u32)>, interval: Duration) -> Sampler {
        let state = Arc::new(Mutex::new(State {
            processes,
            ..State::default()
        }));
        lock(&state).sample(Instant::now());
        let (stop, stopped) = mpsc::channel::<()>();
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("resource-sampler".into())
            .spawn(move || {
                let mut next = Instant::now() + interval;
                loop {
                    // The wait is the tick itself: a stop message ends it at once.
                    match stopped.recv_timeout(next.saturating_duration_since(Instant::now())) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                    lock(&thread_state).sample(Instant::now());
                    next += interval;
                    // After a long stall, skip missed ticks rather than sampling in a burst.
                    let now = Instant::now();
                    if next < now {
                        next = now + interval;
                    }
                }
            });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(err) => {
                // Phases still work from their synchronous start/end samples.
                tracing::warn!(error = %err, "could not start the resource sampler thread");
                None
            }
        };
        Sampler {
            state,
            stop: Some(stop),
            thread,
        }
    }

    /// Replaces the sampled processes, e.g. after a service restart gave it a new pid.
    pub fn set_processes(&self, processes: Vec<(String, u32)>) {
        let mut state = lock(&self.state);
        state.processes = processes;
        state.sample(Instant::now());
    }

    /// Starts a measured phase now.
    pub fn begin_phase(&self) -> Phase {
        self.begin_phase_at(Instant::now())
    }

    /// Starts a measured phase whose timeline is relative to `start` (the clock of the
    /// scenario's interval histograms). The baseline sample is taken now.
    pub fn begin_phase_at(&self, start: Instant) -> Phase {
        let now = Instant::now();
        lock(&self.state).sample(now);
        Phase {
            state: Arc::clone(&self.state),
            start,
            baseline_at: now,
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("the resource sampler thread panicked");
            }
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A measured phase; [`Phase::end`] summarises it.
pub struct Phase {
    state: Arc<Mutex<State>>,
    start: Instant,
    baseline_at: Instant,
}

impl Phase {
    /// The instant the phase's timeline counts from.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Ends the phase: per-process totals (CPU per event when `events_committed > 0`) and the
    /// timeline of samples, `t_s` relative to the phase start.
    pub fn end(self, events_committed: u64) -> (Vec<ProcessResources>, Vec<ResourceSample>) {
        let end = Instant::now();
        let mut state = lock(&self.state);
        state.sample(end);
        let mut resources = Vec::new();
        let mut timeline = Vec::new();
        for (name, readings) in &state.readings {
            let window: Vec<Reading> = readings
                .iter()
                .filter(|r| r.at >= self.baseline_at && r.at <= end)
                .copied()
                .collect();
            if let Some(summary) = summarize(name, &window, self.start, events_committed) {
                resources.push(summary);
            }
            timeline.extend(timeline_of(name, &window, self.start));
        }
        timeline.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        (resources, timeline)
    }
}

fn seconds_since(start: Instant, at: Instant) -> f64 {
    match at.checked_duration_since(start) {
        Some(d) => d.as_secs_f64(),
        None => -start.duration_since(at).as_secs_f64(),
    }
}

/// Totals of one process over a phase from its readings (first = baseline, last = end).
fn summarize(
    name: &str,
    readings: &[Reading],
    start: Instant,
    events: u64,
) -> Option<ProcessResources> {
    let (first, last) = (readings.first()?, readings.last()?);
    let elapsed = last.at.duration_since(first.at).as_secs_f64();
    let user = (last.user_s - first.user_s).max(0.0);
    let system = (last.system_s - first.system_s).max(0.0);
    let cpu = (last.cpu_s - first.cpu_s).max(0.0);
    let rss: Vec<(f64, f64)> = readings
        .iter()
        .filter_map(|r| r.rss_bytes.map(|b| (seconds_since(start, r.at), b as f64)))
        .collect();
    let slope = theil_sen(&rss, RSS_SLOPE_CONFIDENCE);
    Some(ProcessResources {
        process: name.to_owned(),
        cpu_user_s: user,
        cpu_system_s: system,
        cpu_percent: if elapsed > 0.0 {
            cpu / elapsed * 100.0
        } else {
            0.0
        },
        cpu_us_per_event: (events > 0).then(|| cpu * 1e6 / events as f64),
        cpu_source: Some(
            if readings.iter().any(|r| r.ticks_only) {
                CPU_SOURCE_TICKS
            } else {
                CPU_SOURCE_SCHEDSTAT
            }
            .to_owned(),
        ),
        rss_start_bytes: readings.iter().find_map(|r| r.rss_bytes).unwrap_or(0),
        rss_end_bytes: readings.iter().rev().find_map(|r| r.rss_bytes).unwrap_or(0),
        rss_max_bytes: readings
            .iter()
            .filter_map(|r| r.rss_bytes)
            .max()
            .unwrap_or(0),
        rss_slope_bytes_per_hour: slope.map(|f| f.slope * 3600.0),
        rss_slope_ci95_bytes_per_hour: slope.map(|f| [f.low * 3600.0, f.high * 3600.0]),
    })
}

/// One [`ResourceSample`] per reading after the first: CPU since the previous reading.
fn timeline_of(name: &str, readings: &[Reading], start: Instant) -> Vec<ResourceSample> {
    readings
        .windows(2)
        .filter_map(|pair| {
            let (prev, cur) = (pair[0], pair[1]);
            let dt = cur.at.duration_since(prev.at).as_secs_f64();
            (dt > 0.0).then(|| ResourceSample {
                t_s: seconds_since(start, cur.at),
                process: name.to_owned(),
                cpu_percent: (cur.cpu_s - prev.cpu_s).max(0.0) / dt * 100.0,
                rss_bytes: cur.rss_bytes.unwrap_or(0),
            })
        })
        .collect()
}

/// Confidence of the RSS slope's interval.
pub const RSS_SLOPE_CONFIDENCE: f64 = 0.95;

/// All pairwise slopes are used up to this many pairs (about 2 000 points); beyond it, this many
/// pairs are drawn deterministically.
pub const THEIL_SEN_MAX_PAIRS: usize = 2_000_000;

/// A slope with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlopeFit {
    pub slope: f64,
    pub low: f64,
    pub high: f64,
}

/// The Theil–Sen slope of y over x, the median of the slopes of every pair of points with
/// distinct x, and Sen's rank-based interval at `confidence` (Sen 1968): with `N` pairwise slopes
/// sorted, `C = z · √Var(S)` where `Var(S) = [n(n−1)(2n+5) − Σ t(t−1)(2t+5)] / 18` is the variance
/// of Kendall's S under no trend (`t`: sizes of groups of tied y) and `z` the normal quantile, the
/// interval runs from the `(N − C)/2`-th to the `((N + C)/2 + 1)`-th slope. `None` with fewer than
/// three points or no pair of distinct x.
///
/// Robust where least squares is not: a single step (an allocator taking a new arena, RSS
/// jumping 2.8 MB once) moves least squares' slope by the step over the run, while Theil–Sen
/// needs more than ~29 % of the pairs to straddle it. Beyond [`THEIL_SEN_MAX_PAIRS`] pairs a
/// fixed-seed sample of that many is used and the ranks are scaled to it. The interval assumes
/// independent residuals; RSS samples are autocorrelated, so for short runs it is narrower than
/// the truth.
pub fn theil_sen(points: &[(f64, f64)], confidence: f64) -> Option<SlopeFit> {
    let n = points.len();
    if n < 3 {
        return None;
    }
    let total_pairs = n * (n - 1) / 2;
    let slope_of = |i: usize, j: usize| -> Option<f64> {
        let ((x0, y0), (x1, y1)) = (points[i], points[j]);
        let dx = x1 - x0;
        (dx != 0.0)
            .then(|| (y1 - y0) / dx)
            .filter(|s| s.is_finite())
    };
    let mut slopes: Vec<f64> = Vec::with_capacity(total_pairs.min(THEIL_SEN_MAX_PAIRS));
    if total_pairs <= THEIL_SEN_MAX_PAIRS {
        for i in 0..n {
            slopes.extend((i + 1..n).filter_map(|j| slope_of(i, j)));
        }
    } else {
        let mut rng = crate::compare::stats::SplitMix64::new(0x7E11_5E11);
        // Bounded draws: points that share one x give no slopes at all.
        for _ in 0..THEIL_SEN_MAX_PAIRS * 4 {
            if slopes.len() == THEIL_SEN_MAX_PAIRS {
                break;
            }
            let (i, j) = (rng.below(n), rng.below(n));
            if i != j {
                slopes.extend(slope_of(i.min(j), i.max(j)));
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_unstable_by(f64::total_cmp);
    let m = slopes.len();
    let slope = if m % 2 == 1 {
        slopes[m / 2]
    } else {
        (slopes[m / 2 - 1] + slopes[m / 2]) / 2.0
    };
    // Kendall's S variance with the correction for tied y values.
    let mut ys: Vec<f64> = points.iter().map(|p| p.1).collect();
    ys.sort_unstable_by(f64::total_cmp);
    let ties: f64 = ys
        .chunk_by(|a, b| a == b)
        .map(|g| {
            let t = g.len() as f64;
            t * (t - 1.0) * (2.0 * t + 5.0)
        })
        .sum();
    let nf = n as f64;
    let var_s = ((nf * (nf - 1.0) * (2.0 * nf + 5.0) - ties) / 18.0).max(0.0);
    let z = crate::compare::stats::normal_quantile(0.5 + confidence / 2.0);
    // Ranks among all N pairwise slopes, scaled to the slopes actually sorted.
    let scale = m as f64 / total_pairs as f64;
    let c = z * var_s.sqrt();
    let lower_rank = ((total_pairs as f64 - c) / 2.0 * scale).round();
    let upper_rank = ((total_pairs as f64 + c) / 2.0 * scale).round() + 1.0;
    let at_rank = |r: f64| slopes[(r.max(1.0).min(m as f64) as usize) - 1];
    Some(SlopeFit {
        slope,
        low: at_rank(lower_rank).min(slope),
        high: at_rank(upper_rank).max(slope),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(start: Instant, t: f64, user: f64, system: f64, rss: Option<u64>) -> Reading {
        Reading {
            at: start + Duration::from_secs_f64(t),
            user_s: user,
            system_s: system,
            cpu_s: user + system,
            ticks_only: false,
            rss_bytes: rss,
        }
    }

    /// Least squares, only to show in the tests what it would have said.
    fn least_squares(points: &[(f64, f64)]) -> f64 {
        let n = points.len() as f64;
        let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
        let my = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        sxy / sxx
    }

    #[test]
    fn theil_sen_recovers_a_line_and_refuses_degenerate_input() {
        let line: Vec<(f64, f64)> = (0..50)
            .map(|i| (f64::from(i), 3.0 * f64::from(i) + 7.0))
            .collect();
        let fit = theil_sen(&line, 0.95).unwrap();
        assert!((fit.slope - 3.0).abs() < 1e-12, "{fit:?}");
        assert!(
            (fit.low - 3.0).abs() < 1e-12 && (fit.high - 3.0).abs() < 1e-12,
            "a perfect line has no uncertainty: {fit:?}"
        );
        assert_eq!(theil_sen(&line[..2], 0.95), None);
        assert_eq!(theil_sen(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)], 0.95), None);
        let one_x: Vec<(f64, f64)> = (0..2500).map(|i| (1.0, f64::from(i))).collect();
        assert_eq!(
            theil_sen(&one_x, 0.95),
            None,
            "subsampled, and still no pair"
        );
        // Flat data: slope zero, interval around it.
        let flat: Vec<(f64, f64)> = (0..40)
            .map(|i| (f64::from(i), 5.0 + f64::from(i % 3)))
            .collect();
        let fit = theil_sen(&flat, 0.95).unwrap();
        assert!(
            fit.slope.abs() < 1e-12 && fit.low <= 0.0 && fit.high >= 0.0,
            "{fit:?}"
        );
    }

    #[test]
    fn one_step_is_not_a_slope() {
        // 300 s of RSS at 1 s: flat at 100 MB, one 2.8 MB step (an allocator arena) at `at_s`.
        let step = |at_s: i32| -> Vec<(f64, f64)> {
            (0..300)
                .map(|i| (f64::from(i), 100e6 + if i >= at_s { 2.8e6 } else { 0.0 }))
                .collect()
        };
        let mb_per_hour = |per_s: f64| per_s * 3600.0 / 1e6;
        // In the middle, the worst place for both: least squares calls it 50.4 MB/h, over the
        // 50 MB/h target; Theil–Sen's interval holds zero and stays below the target.
        let middle = step(150);
        let ls = mb_per_hour(least_squares(&middle));
        assert!(ls > 50.0, "least squares: {ls} MB/h");
        let fit = theil_sen(&middle, 0.95).unwrap();
        assert!(fit.low <= 0.0, "{fit:?}");
        assert!(mb_per_hour(fit.high) < 50.0, "{fit:?}");
        // Anywhere outside the middle ~40 % of the run, Theil–Sen sees no slope at all.
        for at_s in [30, 60, 240, 270] {
            let points = step(at_s);
            let ls = mb_per_hour(least_squares(&points));
            assert!(ls > 10.0, "least squares at {at_s} s: {ls} MB/h");
            let fit = theil_sen(&points, 0.95).unwrap();
            assert_eq!(fit.slope, 0.0, "step at {at_s} s: {fit:?}");
            assert!(fit.low <= 0.0 && mb_per_hour(fit.high) < 50.0, "{fit:?}");
        }
    }

    #[test]
    fn theil_sen_interval_covers_the_truth_in_noise() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let truth = 0.5;
        let mut covered = 0;
        for _ in 0..100 {
            let points: Vec<(f64, f64)> = (0..60)
                .map(|i| {
                    let x = f64::from(i);
                    (x, truth * x + rng.random_range(-10.0..10.0))
                })
                .collect();
            let fit = theil_sen(&points, 0.95).unwrap();
            assert!(fit.low <= fit.slope && fit.slope <= fit.high, "{fit:?}");
            if fit.low <= truth && truth <= fit.high {
                covered += 1;
            }
        }
        // 95 % nominal: 100 independent fits cover the truth about 95 times.
        assert!((88..=100).contains(&covered), "covered {covered} of 100");
        // Many points: the pairs are subsampled, and the answer is still right and repeatable.
        let big: Vec<(f64, f64)> = (0..2500)
            .map(|i| {
                let x = f64::from(i);
                (x, truth * x + rng.random_range(-10.0..10.0))
            })
            .collect();
        let fit = theil_sen(&big, 0.95).unwrap();
        assert!(fit.low <= truth && truth <= fit.high, "{fit:?}");
        assert!((fit.slope - truth).abs() < 0.01, "{fit:?}");
        assert_eq!(theil_sen(&big, 0.95), Some(fit), "deterministic");
    }

    #[test]
    fn phase_totals_from_synthetic_readings() {
        let start = Instant::now();
        // 10 s phase; 2 s user + 0.5 s system => 25 %; RSS grows 1 MB per 10 s => 360 MB/h.
        let readings: Vec<Reading> = (0..=10)
            .map(|i| {
                let t = f64::from(i);
                reading(
                    start,
                    t,
                    1.0 + 0.2 * t,
                    0.3 + 0.05 * t,
                    Some(100_000_000 + (t * 100_000.0) as u64),
                )
            })
            .collect();
        let r = summarize("dbservice", &readings, start, 1000).unwrap();
        assert!((r.cpu_user_s - 2.0).abs() < 1e-9, "{r:?}");
        assert!((r.cpu_system_s - 0.5).abs() < 1e-9, "{r:?}");
        assert!((r.cpu_percent - 25.0).abs() < 1e-6, "{r:?}");
        assert!((r.cpu_us_per_event.unwrap() - 2500.0).abs() < 1e-6, "{r:?}");
        assert_eq!(
            (r.rss_start_bytes, r.rss_end_bytes, r.rss_max_bytes),
            (100_000_000, 101_000_000, 101_000_000)
        );
        assert!(
            (r.rss_slope_bytes_per_hour.unwrap() - 360_000_000.0).abs() < 1.0,
            "{r:?}"
        );
        let [low, high] = r.rss_slope_ci95_bytes_per_hour.unwrap();
        assert!(
            low <= 360_000_000.0 + 1.0 && high >= 360_000_000.0 - 1.0,
            "{r:?}"
        );
        assert_eq!(r.cpu_source.as_deref(), Some(CPU_SOURCE_SCHEDSTAT));
        assert_eq!(
            summarize("x", &readings, start, 0)
                .unwrap()
                .cpu_us_per_event,
            None
        );

        let timeline = timeline_of("dbservice", &readings, start);
        assert_eq!(timeline.len(), 10);
        assert!((timeline[0].t_s - 1.0).abs() < 1e-9);
        assert!(
            timeline.iter().all(|s| (s.cpu_percent - 25.0).abs() < 1e-6),
            "{timeline:?}"
        );
    }

    #[test]
    fn stat_times_and_thread_cpu() {
        let line = "1234 (tokio (x) y) S 1 2 3 4 5 6 7 8 9 10 170 30 0 0 20 0 4 0 99 1000 200";
        assert_eq!(parse_stat_times(line), Some((170, 30)));
        assert_eq!(parse_stat_times("garbage"), None);
        let first = thread_cpu_time().expect("linux has /proc/thread-self");
        assert_eq!(
            first.source, CPU_SOURCE_SCHEDSTAT,
            "this kernel has schedstat"
        );
        let total = || thread_cpu_time().unwrap().total;
        let before = total();
        // Burn until this thread has used 30 ms of CPU; on a busy machine that takes longer in
        // wall time, so the deadline is generous. Other threads' CPU must not count.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut x = 1u64;
        while total() - before < Duration::from_millis(30) {
            assert!(Instant::now() < deadline, "thread CPU did not advance");
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let idle_before = total();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            total() - idle_before < Duration::from_millis(5),
            "a sleeping thread uses no CPU"
        );
    }

    #[test]
    fn process_cpu_comes_from_schedstat_of_every_thread() {
        let sum = || -> u64 {
            read_threads_ns(std::process::id())
                .expect("this kernel has schedstat")
                .values()
                .sum()
        };
        // A live thread that burns 20 ms of CPU shows up in its process's sum.
        let (started, wait_started) = std::sync::mpsc::channel::<()>();
        let (burnt, wait_burnt) = std::sync::mpsc::channel::<()>();
        let (release, wait_release) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            started.send(()).unwrap();
            let t0 = thread_cpu_time().unwrap().total;
            let mut x = 1u64;
            while thread_cpu_time().unwrap().total - t0 < Duration::from_millis(20) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            burnt.send(()).unwrap();
            wait_release.recv().unwrap();
        });
        wait_started.recv().unwrap();
        let before = sum();
        wait_burnt.recv().unwrap();
        let after = sum();
        release.send(()).unwrap();
        worker.join().unwrap();
        assert!(
            after - before >= 19_000_000,
            "the other thread's 20 ms are counted: {} ns",
            after - before
        );
    }

    #[test]
    fn cpu_accumulates_across_pids_and_threads_of_one_name() {
        let mut state = State::default();
        let name = "dbservice".to_owned();
        // Old pid used 1.5 s over two threads and exited; the new pid has 0.25 s so far.
        state.last_cpu.insert(
            (name.clone(), 1),
            PidCpu {
                user_ticks: 100,
                system_ticks: 20,
                threads_ns: Some(BTreeMap::from([(1, 1_000_000_000), (7, 500_000_000)])),
            },
        );
        state.last_cpu.insert(
            (name.clone(), 2),
            PidCpu {
                user_ticks: 50,
                system_ticks: 10,
                threads_ns: Some(BTreeMap::from([(2, 250_000_000)])),
            },
        );
        // Neither pid exists in /proc under these numbers' names, so only the sums matter:
        state.processes = vec![(name.clone(), u32::MAX)];
        state.sample(Instant::now());
        let r = state.readings[&name][0];
        let tps = ticks_per_second();
        assert!((r.user_s - 150.0 / tps).abs() < 1e-9);
        assert!((r.system_s - 30.0 / tps).abs() < 1e-9);
        assert!((r.cpu_s - 1.75).abs() < 1e-9, "{r:?}");
        assert!(!r.ticks_only);
        assert_eq!(r.rss_bytes, None);
        // A pid without schedstat falls back to its ticks, and the reading says so.
        state
            .last_cpu
            .get_mut(&(name.clone(), 2))
            .unwrap()
            .threads_ns = None;
        state.sample(Instant::now());
        let r = state.readings[&name][1];
        assert!((r.cpu_s - (1.5 + 60.0 / tps)).abs() < 1e-9, "{r:?}");
        assert!(r.ticks_only);
    }
}
