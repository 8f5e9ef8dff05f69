//! Recording: which messages were sent, which were proven delivered (by a commit notice or a
//! reply), and how long each took from its *intended* send time.
//!
//! A [`Tracker`] belongs to one measured phase. Senders call [`Tracker::mark_sending`] with the
//! message's index and intended time before publishing and [`Tracker::mark_sent`] once the
//! client accepted it; receivers call [`Tracker::confirm`] with the instant the proof arrived.
//! Latency is recorded at that moment, per id, into the phase histogram and a per-second
//! interval histogram. A confirmation of an id that was already confirmed is a duplicate; an id
//! that was never sent is counted as unknown (and never as delivered). The finished record
//! lists the messages never confirmed, with their intended times, for scenarios that judge
//! *when* a loss happened (a restart's outage window).

use crate::histogram::{self, Packed, PackedInterval};
use crate::results::{Accounting, IntervalPoint};
use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// Length of one interval histogram.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Where latency is measured from. The harness always uses [`Origin::Intended`]; the other value
/// exists so tests can show that the honesty checks fail when latency is measured the naive way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// From the scheduled send time: a stall is charged to every message it delayed.
    Intended,
    /// From the moment the message was actually handed to the client (coordinated omission).
    Actual,
}

/// The latency of one message: from its origin to the instant its proof of delivery arrived.
pub fn latency(origin: Origin, intended: Instant, actual: Instant, confirmed: Instant) -> Duration {
    let from = match origin {
        Origin::Intended => intended,
        Origin::Actual => actual,
    };
    confirmed.saturating_duration_since(from)
}

/// One message, 24 bytes: a long soak keeps millions of these.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Intended send time in ns relative to the tracker's start; [`UNSENT`] until sending.
    intended_ns: i64,
    /// Actual − intended send time in ns.
    send_delay_ns: u64,
    /// Latency in µs once confirmed (saturating at 71 minutes), for the intervals by intended
    /// send time.
    latency_us: u32,
    confirmed: bool,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 24);

const UNSENT: i64 = i64::MIN;

impl Default for Slot {
    fn default() -> Self {
        Slot {
            intended_ns: UNSENT,
            send_delay_ns: 0,
            latency_us: 0,
            confirmed: false,
        }
    }
}

/// Signed ns from `base` to `t`.
fn offset_ns(base: Instant, t: Instant) -> i64 {
    match t.checked_duration_since(base) {
        Some(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        None => -i64::try_from(base.duration_since(t).as_nanos()).unwrap_or(i64::MAX),
    }
}

/// Inverse of [`offset_ns`].
fn at_offset(base: Instant, ns: i64) -> Instant {
    if ns >= 0 {
        base + Duration::from_nanos(ns.unsigned_abs())
    } else {
        base - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// One second's latency histogram: full while confirmations may still land in it, packed after.
#[derive(Debug)]
enum IntervalSlot {
    Open(Histogram<u64>),
    Packed(Packed),
}

/// Seconds behind the newest confirmation that an interval stays open. Receivers stamp each
/// confirmation before taking the lock, so one of a second ago may be recorded just after one of
/// this second; later stragglers still count, at the price of unpacking their interval once.
const OPEN_INTERVALS: usize = 2;

#[derive(Debug)]
struct State {
    slots: Vec<Slot>,
    sent: u64,
    confirmed: u64,
    duplicated: u64,
    unknown: u64,
    rejected: u64,
    latency: Histogram<u64>,
    intervals: Vec<IntervalSlot>,
    /// Every interval below this index is packed.
    packed_below: usize,
    first_confirm: Option<Instant>,
    last_confirm: Option<Instant>,
}

impl State {
    /// Record `ns` into interval `bucket`, then pack the intervals that are no longer recent, so
    /// the tracker holds a few full histograms however long the phase runs.
    fn record_interval(&mut self, bucket: usize, ns: Duration) {
        // Seconds without a confirmation are empty and packed; the new second starts open,
        // without a round trip through the packed form.
        while self.intervals.len() < bucket {
            self.intervals.push(IntervalSlot::Packed(Packed::pack(
                &histogram::new_histogram(),
            )));
        }
        if self.intervals.len() == bucket {
            self.intervals
                .push(IntervalSlot::Open(histogram::new_histogram()));
        }
        let slot = &mut self.intervals[bucket];
        if let IntervalSlot::Packed(p) = slot {
            *slot = IntervalSlot::Open(p.unpack());
        }
        let IntervalSlot::Open(h) = slot else {
            unreachable!("the slot is open: just created or just unpacked")
        };
        histogram::record_duration(h, ns);
        if bucket < self.packed_below {
            // A straggler for an interval already packed: pack it again at once.
            *slot = IntervalSlot::Packed(Packed::pack(h));
        }
        let keep_from = bucket.saturating_sub(OPEN_INTERVALS);
        while self.packed_below < keep_from {
            let slot = &mut self.intervals[self.packed_below];
            if let IntervalSlot::Open(h) = slot {
                *slot = IntervalSlot::Packed(Packed::pack(h));
            }
            self.packed_below += 1;
        }
    }
}

/// Delivery accounting and latency recording for one measured phase.
#[derive(Debug)]
pub struct Tracker {
    /// Ids of this phase are `<prefix><index>`.
    prefix: String,
    /// Offset zero of the interval histograms.
    start: Instant,
    start_wall: SystemTime,
    origin: Origin,
    state: Mutex<State>,
    progress: Notify,
}

/// What a phase recorded, once it is over.
#[derive(Debug, Clone)]
pub struct PhaseRecord {
    pub sent: u64,
    pub confirmed: u64,
    pub duplicated: u64,
    /// Confirmations for ids this phase never sent.
    pub unknown: u64,
    /// Replies that arrived but did not prove success (e.g. an error reply).
    pub rejected: u64,
    pub latency: Histogram<u64>,
    /// One per second from the start of the phase, packed (see [`Packed`]).
    pub intervals: Vec<PackedInterval>,
    /// One per second of *intended send time* from the start of the phase: the latency of the
    /// messages scheduled in that second (µs resolution), wherever they were confirmed. What a
    /// fault did to the messages sent during it shows here, not in `intervals`.
    pub by_intended: Vec<PackedInterval>,
    pub start: Instant,
    pub start_wall: SystemTime,
    pub first_confirm: Option<Instant>,
    pub last_confirm: Option<Instant>,
    /// The messages sent but never confirmed, by index, with their intended send time as an
    /// offset from `start` (negative offsets clamp to zero); as many as [`PhaseRecord::lost`].
    pub unconfirmed: Vec<Unconfirmed>,
}

/// A message that was sent (due by its schedule) and never confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unconfirmed {
    pub index: u64,
    /// Intended send time, from the start of the phase.
    pub intended: Duration,
}

impl PhaseRecord {
    /// Sent but never confirmed.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.confirmed)
    }

    pub fn accounting(&self, loss_expected: bool) -> Accounting {
        Accounting {
            sent: self.sent,
            committed: self.confirmed,
            lost: self.lost(),
            duplicated: self.duplicated,
            loss_expected,
        }
    }

    /// Confirmed messages per second from the start of the phase to the last confirmation.
    pub fn throughput_per_s(&self) -> Option<f64> {
        let last = self.last_confirm?;
        let secs = last.saturating_duration_since(self.start).as_secs_f64();
        (secs > 0.0).then(|| self.confirmed as f64 / secs)
    }

    /// Proven events per second between the first and the last proof: the rate the service
    /// kept up, free of the latency at either end of a short phase (which `throughput_per_s`,
    /// from the schedule's start, includes). `None` with fewer than two proofs.
    pub fn commit_rate_per_s(&self) -> Option<f64> {
        let (first, last) = (self.first_confirm?, self.last_confirm?);
        let secs = last.saturating_duration_since(first).as_secs_f64();
        (self.confirmed >= 2 && secs > 0.0).then(|| (self.confirmed - 1) as f64 / secs)
    }

    /// Summary points of the interval histograms, for `ScenarioResult::intervals`.
    pub fn interval_points(&self) -> Vec<IntervalPoint> {
        self.intervals
            .iter()
            .map(|iv| histogram::interval_point(&iv.unpack()))
            .collect()
    }
}

impl Tracker {
    /// A tracker for up to `capacity` messages (it grows if more are sent) whose intervals start
    /// at `start`.
    pub fn new(prefix: impl Into<String>, capacity: usize, start: Instant) -> Tracker {
        Tracker::with_origin(prefix, capacity, start, Origin::Intended)
    }

    /// Like [`Tracker::new`], measuring from `origin` (tests and the naive closed-loop probe).
    pub fn with_origin(
        prefix: impl Into<String>,
        capacity: usize,
        start: Instant,
        origin: Origin,
    ) -> Tracker {
        let now = Instant::now();
        // Translate the (possibly future) monotonic start into wall-clock time for the log header.
        let start_wall = if start >= now {
            SystemTime::now() + (start - now)
        } else {
            SystemTime::now() - (now - start)
        };
        Tracker {
            prefix: prefix.into(),
            start,
            start_wall,
            origin,
            state: Mutex::new(State {
                slots: vec![Slot::default(); capacity],
                sent: 0,
                confirmed: 0,
                duplicated: 0,
                unknown: 0,
                rejected: 0,
                latency: histogram::new_histogram(),
                intervals: Vec::new(),
                packed_below: 0,
                first_confirm: None,
                last_confirm: None,
            }),
            progress: Notify::new(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// The id of message `index`.
    pub fn id(&self, index: u64) -> String {
        format!("{}{index}", self.prefix)
    }

    /// The index encoded in `id`, if the id is one of this phase's.
    pub fn index_of(&self, id: &str) -> Option<u64> {
        id.strip_prefix(&self.prefix)?.parse().ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a recording thread panicked; the counts are still consistent
        // because every update is a few plain assignments.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record the intended and actual send time of message `index`, just before publishing it.
    pub fn mark_sending(&self, index: u64, intended: Instant, actual: Instant) {
        let mut s = self.lock();
        let i = usize::try_from(index).unwrap_or(usize::MAX);
        if i >= s.slots.len() {
            s.slots.resize(i.saturating_add(1), Slot::default());
        }
        s.slots[i].intended_ns = offset_ns(self.start, intended);
        s.slots[i].send_delay_ns =
            u64::try_from(actual.saturating_duration_since(intended).as_nanos())
                .unwrap_or(u64::MAX);
    }

    /// The client accepted message `index` (this is not proof of delivery).
    pub fn mark_sent(&self) {
        self.lock().sent += 1;
    }

    /// A reply arrived that does not prove success; the message stays unconfirmed.
    pub fn reject(&self) {
        self.lock().rejected += 1;
    }

    /// Proof of delivery for `id` arrived at `at`. Returns true if it was the first for a known id.
    pub fn confirm(&self, id: &str, at: Instant) -> bool {
        match self.index_of(id) {
            Some(index) => self.confirm_index(index, at),
            None => false,
        }
    }

    /// Proof of delivery for message `index` arrived at `at`.
    pub fn confirm_index(&self, index: u64, at: Instant) -> bool {
        let mut guard = self.lock();
        let s = &mut *guard;
        let Some(slot) = usize::try_from(index).ok().and_then(|i| s.slots.get_mut(i)) else {
            s.unknown += 1;
            return false;
        };
        if slot.intended_ns == UNSENT {
            s.unknown += 1;
            return false;
        }
        let intended = at_offset(self.start, slot.intended_ns);
        let actual = intended + Duration::from_nanos(slot.send_delay_ns);
        if slot.confirmed {
            s.duplicated += 1;
            return false;
        }
        slot.confirmed = true;
        s.confirmed += 1;
        let ns = latency(self.origin, intended, actual, at);
        slot.latency_us = u32::try_from(ns.as_micros()).unwrap_or(u32::MAX);
        histogram::record_duration(&mut s.latency, ns);
        let bucket = usize::try_from(at.saturating_duration_since(self.start).as_secs())
            .unwrap_or(usize::MAX);
        if bucket < 1_000_000 {
            s.record_interval(bucket, ns);
        }
        s.first_confirm.get_or_insert(at);
        s.last_confirm = Some(s.last_confirm.map_or(at, |l| l.max(at)));
        let done = s.confirmed >= s.sent;
        drop(guard);
        if done {
            self.progress.notify_waiters();
        }
        true
    }

    /// (sent, confirmed) so far.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.lock();
        (s.sent, s.confirmed)
    }

    /// Wait until every sent message is confirmed or `deadline` passes. Returns true if all were
    /// confirmed. This waits for the confirmations themselves, not for a fixed time.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            // Register before checking so a confirmation between the check and the await is seen.
            notified.as_mut().enable();
            let (sent, confirmed) = self.counts();
            if confirmed >= sent {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let (sent, confirmed) = self.counts();
                return confirmed >= sent;
            }
        }
    }

    /// Close the phase and hand out what it recorded.
    pub fn finish(&self) -> PhaseRecord {
        let s = self.lock();
        let intervals = s
            .intervals
            .iter()
            .enumerate()
            .map(|(i, slot)| PackedInterval {
                start: INTERVAL * u32::try_from(i).unwrap_or(u32::MAX),
                length: INTERVAL,
                tag: Some("latency".to_owned()),
                histogram: match slot {
                    IntervalSlot::Open(h) => Packed::pack(h),
                    IntervalSlot::Packed(p) => p.clone(),
                },
            })
            .collect();
        let mut by_intended: Vec<hdrhistogram::Histogram<u64>> = Vec::new();
        for slot in s.slots.iter().filter(|s| s.confirmed) {
            let second = usize::try_from(slot.intended_ns.max(0) / 1_000_000_000).unwrap_or(0);
            if second >= 1_000_000 {
                continue;
            }
            while by_intended.len() <= second {
                by_intended.push(histogram::new_histogram());
            }
            histogram::record_duration(
                &mut by_intended[second],
                Duration::from_micros(u64::from(slot.latency_us)),
            );
        }
        PhaseRecord {
            sent: s.sent,
            confirmed: s.confirmed,
            duplicated: s.duplicated,
            unknown: s.unknown,
            rejected: s.rejected,
            latency: s.latency.clone(),
            intervals,
            by_intended: pack_seconds(&by_intended, "latency_by_intended"),
            start: self.start,
            start_wall: self.start_wall,
            first_confirm: s.first_confirm,
            last_confirm: s.last_confirm,
            unconfirmed: s
                .slots
                .iter()
                .enumerate()
                .filter(|(_, slot)| slot.intended_ns != UNSENT && !slot.confirmed)
                .map(|(i, slot)| Unconfirmed {
                    index: i as u64,
                    intended: Duration::from_nanos(u64::try_from(slot.intended_ns).unwrap_or(0)),
                })
                .collect(),
        }
    }
}

/// Per-second histograms as [`PackedInterval`]s from offset zero, tagged `tag`.
pub fn pack_seconds(seconds: &[hdrhistogram::Histogram<u64>], tag: &str) -> Vec<PackedInterval> {
    seconds
        .iter()
        .enumerate()
        .map(|(i, h)| PackedInterval {
            start: INTERVAL * u32::try_from(i).unwrap_or(u32::MAX),
            length: INTERVAL,
            tag: Some(tag.to_owned()),
            histogram: Packed::pack(h),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_kept_by_intended_second_as_well_as_by_confirmation_second() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let t = Tracker::new("x.", 3, t0);
        for (i, at) in [(0, 100), (1, 1_100), (2, 1_200)] {
            t.mark_sending(i, t0 + ms(at), t0 + ms(at));
            t.mark_sent();
        }
        // Message 0 waited through a stall: scheduled in second 0, confirmed in second 2.
        t.confirm_index(0, t0 + ms(2_600));
        t.confirm_index(1, t0 + ms(1_103));
        let r = t.finish();
        let counts = |v: &[PackedInterval]| -> Vec<u64> {
            v.iter().map(|iv| iv.unpack().histogram.len()).collect()
        };
        assert_eq!(counts(&r.intervals), [0, 1, 1], "by confirmation second");
        assert_eq!(
            counts(&r.by_intended),
            [1, 1],
            "by intended second; 2 was never confirmed"
        );
        let stalled = r.by_intended[0].unpack().histogram;
        // HDR keeps 3 significant digits: 2.5 s within 0.1 %.
        assert!(
            stalled.equivalent(stalled.max(), 2_500_000_000),
            "{}",
            stalled.max()
        );
        let quick = r.by_intended[1].unpack().histogram;
        assert!(quick.equivalent(quick.max(), 3_000_000), "{}", quick.max());
    }

    #[test]
    fn accounting_counts_each_id_once() {
        let t0 = Instant::now();
        let t = Tracker::new("x.", 4, t0);
        for i in 0..3 {
            t.mark_sending(
                i,
                t0 + Duration::from_millis(i * 10),
                t0 + Duration::from_millis(i * 10),
            );
            t.mark_sent();
        }
        assert!(t.confirm("x.0", t0 + Duration::from_millis(5)));
        assert!(
            !t.confirm("x.0", t0 + Duration::from_millis(6)),
            "second confirmation is a duplicate"
        );
        assert!(t.confirm("x.2", t0 + Duration::from_millis(1_500)));
        assert!(!t.confirm("x.3", t0), "never sent: unknown, not delivered");
        assert!(!t.confirm("y.1", t0), "other phase: ignored");
        let r = t.finish();
        assert_eq!(
            (r.sent, r.confirmed, r.duplicated, r.unknown, r.lost()),
            (3, 2, 1, 1, 1)
        );
        assert_eq!(r.latency.len(), 2);
        // Two proofs, 1,495 ms apart: one interval between them.
        assert!((r.commit_rate_per_s().unwrap() - 1.0 / 1.495).abs() < 1e-6);
        // x.2 was intended at 20 ms and confirmed at 1500 ms.
        assert!(r.latency.max() >= 1_479_000_000 && r.latency.max() <= 1_481_000_000);
        assert_eq!(
            r.intervals.len(),
            2,
            "confirmations in second 0 and second 1"
        );
        assert_eq!(r.interval_points()[1].count, 1);
        let a = r.accounting(false);
        assert_eq!((a.sent, a.committed, a.lost, a.duplicated), (3, 2, 1, 1));
        // The one lost message, x.1, with its intended time; slot 3 was never sent.
        assert_eq!(
            r.unconfirmed,
            vec![Unconfirmed {
                index: 1,
                intended: Duration::from_millis(10)
            }]
        );
    }

    #[test]
    fn a_long_phase_keeps_few_full_interval_histograms() {
        let t0 = Instant::now();
        let t = Tracker::new("m.", 0, t0);
        let seconds = 600u64;
        let per_second = 20u64;
        let mut index = 0;
        for second in 0..seconds {
            for k in 0..per_second {
                let sent = t0 + Duration::from_secs(second) + Duration::from_millis(k * 40);
                t.mark_sending(index, sent, sent);
                t.mark_sent();
                assert!(t.confirm_index(index, sent + Duration::from_micros(1_000 + 37 * k)));
                index += 1;
            }
            // A straggler for an interval packed long ago still counts.
            if second == 300 {
                t.mark_sending(index, t0, t0);
                t.mark_sent();
                assert!(t.confirm_index(index, t0 + Duration::from_millis(10)));
                index += 1;
            }
        }
        {
            let s = t.lock();
            let open = s
                .intervals
                .iter()
                .filter(|i| matches!(i, IntervalSlot::Open(_)))
                .count();
            assert!(open <= OPEN_INTERVALS + 1, "{open} full histograms");
        }
        let r = t.finish();
        assert_eq!(r.intervals.len(), seconds as usize);
        let points = r.interval_points();
        assert_eq!(
            points[0].count,
            per_second + 1,
            "the straggler landed in second 0"
        );
        assert!(points[1..].iter().all(|p| p.count == per_second));
        assert_eq!(points.iter().map(|p| p.count).sum::<u64>(), r.confirmed);
        let bytes: usize = r.intervals.iter().map(|i| i.histogram.size()).sum();
        assert!(
            bytes < 600 * 1024,
            "{bytes} bytes for {seconds} packed intervals"
        );
    }

    #[test]
    fn slots_keep_times_exactly_and_stay_small() {
        assert_eq!(std::mem::size_of::<Slot>(), 24);
        let base = Instant::now();
        for t in [
            base,
            base + Duration::from_nanos(1),
            base + Duration::from_secs(3600),
        ] {
            assert_eq!(at_offset(base, offset_ns(base, t)), t);
        }
        let later = base + Duration::from_millis(5);
        assert_eq!(
            at_offset(later, offset_ns(later, base)),
            base,
            "before the start works too"
        );
    }

    #[test]
    fn latency_is_measured_from_the_chosen_origin() {
        let t0 = Instant::now();
        let intended = t0;
        let actual = t0 + Duration::from_millis(150);
        let confirmed = t0 + Duration::from_millis(151);
        assert_eq!(
            latency(Origin::Intended, intended, actual, confirmed),
            Duration::from_millis(151)
        );
        assert_eq!(
            latency(Origin::Actual, intended, actual, confirmed),
            Duration::from_millis(1)
        );
    }

    #[tokio::test]
    async fn drain_waits_for_confirmations_until_the_deadline() {
        let t0 = Instant::now();
        let t = std::sync::Arc::new(Tracker::new("d.", 2, t0));
        t.mark_sending(0, t0, t0);
        t.mark_sent();
        t.mark_sending(1, t0, t0);
        t.mark_sent();
        let t2 = t.clone();
        let confirmer = tokio::spawn(async move {
            t2.confirm("d.0", Instant::now());
            tokio::task::yield_now().await;
            t2.confirm("d.1", Instant::now());
        });
        let all = t
            .drain(tokio::time::Instant::now() + Duration::from_secs(5))
            .await;
        confirmer.await.unwrap();
        assert!(all);

        let u = Tracker::new("u.", 1, t0);
        u.mark_sending(0, t0, t0);
        u.mark_sent();
        assert!(
            !u.drain(tokio::time::Instant::now() + Duration::from_millis(20))
                .await
        );
    }
}
