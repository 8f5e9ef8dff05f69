//! HdrHistogram conventions of the harness: nanoseconds, 3 significant digits, V2 deflate +
//! base64 serialization, summaries, and the HdrHistogram interval-log format.

use crate::results::{IntervalPoint, LatencySummary, NamedHistogram};
use anyhow::Context;
use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer, V2Serializer};
use hdrhistogram::Histogram;
use std::time::{Duration, SystemTime};

/// Highest trackable value: one hour in nanoseconds. Larger values are clamped (and counted as
/// such by [`record`]); no scenario waits that long for one event.
pub const MAX_NS: u64 = 3_600_000_000_000;

/// A new latency histogram: 1 ns .. 1 h, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("static bounds are valid")
}

/// Record `ns` (at least 1, at most [`MAX_NS`]).
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.clamp(1, MAX_NS));
}

/// Record a duration.
pub fn record_duration(h: &mut Histogram<u64>, d: Duration) {
    record(h, u64::try_from(d.as_nanos()).unwrap_or(MAX_NS));
}

/// Percentile summary.
pub fn summarize(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        count: h.len(),
        min_ns: h.min(),
        mean_ns: h.mean(),
        stdev_ns: h.stdev(),
        p50_ns: h.value_at_quantile(0.50),
        p90_ns: h.value_at_quantile(0.90),
        p99_ns: h.value_at_quantile(0.99),
        p999_ns: h.value_at_quantile(0.999),
        p9999_ns: h.value_at_quantile(0.9999),
        max_ns: h.max(),
    }
}

/// V2 deflate serialization, base64.
pub fn encode(h: &Histogram<u64>) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| anyhow::anyhow!("serialize histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

/// Inverse of [`encode`].
pub fn decode(encoded: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .context("histogram is not base64")?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("decode histogram: {e:?}"))
}

/// A [`NamedHistogram`] for the results.
pub fn named(name: &str, description: &str, h: &Histogram<u64>) -> anyhow::Result<NamedHistogram> {
    Ok(NamedHistogram {
        name: name.to_owned(),
        description: description.to_owned(),
        summary: summarize(h),
        encoded: encode(h)?,
    })
}

/// One interval of an interval log.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Offset of the interval start from the log's start time.
    pub start: Duration,
    pub length: Duration,
    pub tag: Option<String>,
    pub histogram: Histogram<u64>,
}

/// The summary point of one interval (count, p50, p99, max; zeros when it is empty).
pub fn interval_point(iv: &Interval) -> IntervalPoint {
    let h = &iv.histogram;
    let q = |q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    IntervalPoint {
        t_s: iv.start.as_secs_f64(),
        length_s: iv.length.as_secs_f64(),
        count: h.len(),
        p50_ns: q(0.5),
        p99_ns: q(0.99),
        max_ns: if h.is_empty() { 0 } else { h.max() },
    }
}

/// A histogram kept small while it is not being recorded into.
///
/// A histogram of the harness's range (1 ns .. 1 h, 3 digits) is a dense array of about 34,000
/// counters, 270 KB, however few values it holds. One per second of a phase grows the harness by
/// almost 1 GB per hour. Packed, it is HdrHistogram's own V2 encoding (run-length zeros, varint
/// counts): a few KB for a second of latencies. Unpacking gives back an equal histogram.
#[derive(Clone, PartialEq, Eq)]
pub struct Packed(Vec<u8>);

impl Packed {
    pub fn pack(h: &Histogram<u64>) -> Packed {
        let mut buf = Vec::new();
        V2Serializer::new()
            .serialize(h, &mut buf)
            .expect("serializing a histogram into memory cannot fail");
        Packed(buf)
    }

    pub fn unpack(&self) -> Histogram<u64> {
        Deserializer::new()
            .deserialize(&mut self.0.as_slice())
            .expect("a packed histogram decodes")
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.0.len()
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} bytes)", self.0.len())
    }
}

/// An [`Interval`] whose histogram is [`Packed`].
#[derive(Debug, Clone)]
pub struct PackedInterval {
    pub start: Duration,
    pub length: Duration,
    pub tag: Option<String>,
    pub histogram: Packed,
}

impl PackedInterval {
    pub fn unpack(&self) -> Interval {
        Interval {
            start: self.start,
            length: self.length,
            tag: self.tag.clone(),
            histogram: self.histogram.unpack(),
        }
    }
}

/// Write intervals in the HdrHistogram interval-log format (readable by HdrHistogram's
/// `HistogramLogProcessor` and friends). `start_time` is the wall clock of offset zero.
/// The intervals are taken one at a time, so they can be unpacked as they are written.
pub fn write_interval_log<I>(
    path: &std::path::Path,
    start_time: SystemTime,
    intervals: I,
) -> anyhow::Result<()>
where
    I: IntoIterator,
    I::Item: std::borrow::Borrow<Interval>,
{
    crate::files::write_atomic_with(path, |file| {
        let mut serializer = V2DeflateSerializer::new();
        let mut writer = IntervalLogWriterBuilder::new()
            .with_start_time(start_time)
            .with_base_time(start_time)
            .with_max_value_divisor(1_000_000.0)
            .begin_log_with(file, &mut serializer)
            .map_err(|e| anyhow::anyhow!("write interval log header: {e}"))?;
        for iv in intervals {
            let iv = std::borrow::Borrow::<Interval>::borrow(&iv);
            let tag = iv.tag.as_deref().and_then(Tag::new);
            writer
                .write_histogram(&iv.histogram, iv.start, iv.length, tag)
                .map_err(|e| anyhow::anyhow!("write interval: {e:?}"))?;
        }
        Ok(())
    })
    .with_context(|| format!("interval log {}", path.display()))
}

/// Read an interval log written by [`write_interval_log`] (or any HdrHistogram tool).
/// Every histogram is held in full; a long log is better read with [`map_interval_log`].
pub fn read_interval_log(path: &std::path::Path) -> anyhow::Result<Vec<Interval>> {
    map_interval_log(path, |iv| iv)
}

/// Read an interval log one interval at a time, keeping only what `f` makes of each: a long
/// log's full histograms never all exist at once.
pub fn map_interval_log<T>(
    path: &std::path::Path,
    mut f: impl FnMut(Interval) -> T,
) -> anyhow::Result<Vec<T>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("read interval log {}", path.display()))?;
    let mut out = Vec::new();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        match entry.map_err(|e| anyhow::anyhow!("parse interval log {}: {e:?}", path.display()))? {
            LogEntry::Interval(iv) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(iv.encoded_histogram())
                    .context("interval histogram is not base64")?;
                let histogram: Histogram<u64> = deserializer
                    .deserialize(&mut raw.as_slice())
                    .map_err(|e| anyhow::anyhow!("decode interval histogram: {e:?}"))?;
                out.push(f(Interval {
                    start: iv.start_timestamp(),
                    length: iv.duration(),
                    tag: iv.tag().map(|t| t.as_str().to_owned()),
                    histogram,
                }));
            }
            LogEntry::StartTime(_) | LogEntry::BaseTime(_) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let mut h = new_histogram();
        for v in [1_000u64, 2_000, 3_000, 1_000_000, 50_000_000] {
            record(&mut h, v);
        }
        let back = decode(&encode(&h).unwrap()).unwrap();
        assert_eq!(back, h);
        let s = summarize(&back);
        assert_eq!(s.count, 5);
        assert_eq!(s.min_ns, 1_000);
        assert!(s.max_ns >= 50_000_000 && s.max_ns < 50_100_000);
    }

    #[test]
    fn interval_log_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.hlog");
        let mut a = new_histogram();
        record(&mut a, 5_000);
        let mut b = new_histogram();
        record(&mut b, 7_000_000);
        record(&mut b, 9_000_000);
        let intervals = vec![
            Interval {
                start: Duration::from_secs(0),
                length: Duration::from_secs(1),
                tag: None,
                histogram: a.clone(),
            },
            Interval {
                start: Duration::from_secs(1),
                length: Duration::from_secs(1),
                tag: Some("latency".into()),
                histogram: b.clone(),
            },
        ];
        write_interval_log(
            &path,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            &intervals,
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("#[StartTime: 1700000000"), "{text}");
        let back = read_interval_log(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].histogram, a);
        assert_eq!(back[1].histogram, b);
        assert_eq!(back[1].tag.as_deref(), Some("latency"));
        assert_eq!(back[1].start, Duration::from_secs(1));
    }

    #[test]
    fn packing_is_small_and_lossless() {
        let mut h = new_histogram();
        let mut x = 12_345u64;
        for _ in 0..5_000 {
            // A spread of latencies from about 0.5 ms to 20 ms.
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            record(&mut h, 500_000 + (x >> 33) % 20_000_000);
        }
        let packed = Packed::pack(&h);
        assert_eq!(packed.unpack(), h);
        assert!(
            packed.size() < 16 * 1024,
            "{} bytes for 5,000 values",
            packed.size()
        );
        let empty = Packed::pack(&new_histogram());
        assert!(empty.size() < 64, "{empty:?}");
        assert!(empty.unpack().is_empty());
    }

    #[test]
    fn clamps_out_of_range() {
        let mut h = new_histogram();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
    }
}
