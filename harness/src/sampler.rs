//! CPU (user + system) and RSS of the processes under test, sampled from `/proc` by a background
//! thread, and summarised per measured phase.
//!
//! CPU counters are cumulative, so a phase's CPU is the difference between the samples taken at
//! its start and at its end (both taken synchronously by [`Sampler::begin_phase`] and
//! [`Phase::end`], so no interval boundary is lost). After a service restart the pid changes;
//! CPU accumulates over every pid a name has had, and a pid that appears mid-phase counts from
//! its own start, which is what a restart needs. The periodic samples form the timeline and the
//! RSS trend.

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

/// One reading of one process name (summed over its pids).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    at: Instant,
    /// Cumulative CPU seconds over every pid this name has had.
    user_s: f64,
    system_s: f64,
    /// RSS of the name's current pids; `None` when none of them could be read (exited).
    rss_bytes: Option<u64>,
}

#[derive(Default)]
struct State {
    processes: Vec<(String, u32)>,
    /// Last cumulative (user, system) ticks seen per (name, pid).
    last_ticks: BTreeMap<(String, u32), (u64, u64)>,
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
                self.last_ticks.insert((name, pid), (user, system));
                *entry = Some(entry.unwrap_or(0) + bytes);
            }
        }
        for (name, rss_bytes) in rss {
            let (user, system) = self
                .last_ticks
                .iter()
                .filter(|((n, _), _)| *n == name)
                .fold((0u64, 0u64), |(u, s), (_, (du, ds))| (u + du, s + ds));
            self.readings.entry(name).or_default().push(Reading {
                at,
                user_s: user as f64 / tps,
                system_s: system as f64 / tps,
                rss_bytes,
            });
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

/// CPU time (user, system) the calling thread has used so far, from `/proc/thread-self/stat`;
/// `None` where that file is unavailable. For work done on a dedicated thread of this process,
/// whose CPU must not be mixed with the rest of the harness.
pub fn thread_cpu_time() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let (user, system) = parse_stat_times(&stat)?;
    let tps = ticks_per_second();
    Some((
        Duration::from_secs_f64(user as f64 / tps),
        Duration::from_secs_f64(system as f64 / tps),
    ))
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
    let rss: Vec<(f64, f64)> = readings
        .iter()
        .filter_map(|r| r.rss_bytes.map(|b| (seconds_since(start, r.at), b as f64)))
        .collect();
    Some(ProcessResources {
        process: name.to_owned(),
        cpu_user_s: user,
        cpu_system_s: system,
        cpu_percent: if elapsed > 0.0 {
            (user + system) / elapsed * 100.0
        } else {
            0.0
        },
        cpu_us_per_event: (events > 0).then(|| (user + system) * 1e6 / events as f64),
        rss_start_bytes: readings.iter().find_map(|r| r.rss_bytes).unwrap_or(0),
        rss_end_bytes: readings.iter().rev().find_map(|r| r.rss_bytes).unwrap_or(0),
        rss_max_bytes: readings
            .iter()
            .filter_map(|r| r.rss_bytes)
            .max()
            .unwrap_or(0),
        rss_slope_bytes_per_hour: least_squares_slope(&rss).map(|per_s| per_s * 3600.0),
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
                cpu_percent: ((cur.user_s + cur.system_s) - (prev.user_s + prev.system_s)).max(0.0)
                    / dt
                    * 100.0,
                rss_bytes: cur.rss_bytes.unwrap_or(0),
            })
        })
        .collect()
}

/// Ordinary least-squares slope of y over x and its standard error (`None` with fewer than three
/// points or fewer than two distinct x). The standard error assumes independent residuals; RSS
/// samples are autocorrelated, so it understates the uncertainty of short runs.
pub fn least_squares_fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    if points.len() < 3 {
        return None;
    }
    let slope = least_squares_slope(points)?;
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let intercept = mean_y - slope * mean_x;
    let sse: f64 = points
        .iter()
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    Some((slope, (sse / (n - 2.0) / sxx).sqrt()))
}

/// Ordinary least-squares slope of y over x; `None` with fewer than two distinct x.
pub fn least_squares_slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(start: Instant, t: f64, user: f64, system: f64, rss: Option<u64>) -> Reading {
        Reading {
            at: start + Duration::from_secs_f64(t),
            user_s: user,
            system_s: system,
            rss_bytes: rss,
        }
    }

    #[test]
    fn slope_of_a_line_and_of_noise() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 3.0 * f64::from(i) + 7.0))
            .collect();
        assert!((least_squares_slope(&line).unwrap() - 3.0).abs() < 1e-12);
        let flat = [(0.0, 5.0), (1.0, 6.0), (2.0, 6.0), (3.0, 5.0)];
        assert!(least_squares_slope(&flat).unwrap().abs() < 1e-12);
        assert_eq!(least_squares_slope(&[(1.0, 1.0)]), None);
        assert_eq!(least_squares_slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
        let (slope, se) = least_squares_fit(&line).unwrap();
        assert!(
            (slope - 3.0).abs() < 1e-12 && se.abs() < 1e-9,
            "a perfect line has no error"
        );
        // Noisy points around a rising line: slope 0.6, residuals 0.4, -1.2, 1.2, -0.4.
        let noisy = [(0.0, 1.0), (1.0, 0.0), (2.0, 3.0), (3.0, 2.0)];
        let (slope, se) = least_squares_fit(&noisy).unwrap();
        assert!((slope - 0.6).abs() < 1e-12, "{slope}");
        assert!((se - (3.2f64 / 2.0 / 5.0).sqrt()).abs() < 1e-12, "{se}");
        assert_eq!(least_squares_fit(&line[..2]), None);
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
        let total = || {
            thread_cpu_time()
                .map(|(u, s)| u + s)
                .expect("linux has /proc/thread-self")
        };
        let before = total();
        // Burn until this thread has used 100 ms of CPU; on a busy machine that takes longer in
        // wall time, so the deadline is generous. Other threads' CPU must not count.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut x = 1u64;
        while total() - before < Duration::from_millis(100) {
            assert!(Instant::now() < deadline, "thread CPU did not advance");
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let idle_before = total();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            total() - idle_before < Duration::from_millis(50),
            "a sleeping thread uses no CPU"
        );
    }

    #[test]
    fn cpu_accumulates_across_pids_of_one_name() {
        let mut state = State::default();
        let name = "dbservice".to_owned();
        // Old pid used 100+20 ticks and exited; the new pid has 50+10 so far.
        state.last_ticks.insert((name.clone(), 1), (100, 20));
        state.last_ticks.insert((name.clone(), 2), (50, 10));
        // Neither pid exists in /proc under these numbers' names, so only the sums matter:
        state.processes = vec![(name.clone(), u32::MAX)];
        state.sample(Instant::now());
        let r = state.readings[&name][0];
        let tps = ticks_per_second();
        assert!((r.user_s - 150.0 / tps).abs() < 1e-9);
        assert!((r.system_s - 30.0 / tps).abs() < 1e-9);
        assert_eq!(r.rss_bytes, None);
    }
}
