//! The statistics behind the regression gate: a two-stage (cluster, then interval) bootstrap of
//! the change between two samples, a split-half noise floor, and the normal quantile used for the
//! multiple-comparison-corrected confidence level.
//!
//! A *block* is one interval of one run (normally one second): its latency histogram in a compact
//! sparse form, its length, and the CPU time and RSS samples of the processes under test in it.
//! A *cluster* is one run (or one round of an interleaved A/B run). Resampling clusters first and
//! intervals within them second captures both round-to-round and second-to-second variation.

use hdrhistogram::Histogram;

/// Deterministic pseudo-random numbers (SplitMix64). Own code rather than a `rand` generator so
/// that a seed gives the same resamples on every platform and every dependency version: verdicts
/// must be reproducible from the stored results alone.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for our `n`).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The distinct histogram values (highest equivalent value of each recorded bucket) of every
/// block being compared, so that merging a resample is a sum over a small dense array instead of
/// `Histogram::add` over ~100 000 buckets.
#[derive(Debug, Clone, Default)]
pub struct ValueTable {
    values: Vec<u64>,
}

impl ValueTable {
    /// The table of `histograms`, taken one at a time (they may be unpacked as they come).
    pub fn new<H: std::borrow::Borrow<Histogram<u64>>>(
        histograms: impl IntoIterator<Item = H>,
    ) -> ValueTable {
        let mut values: Vec<u64> = Vec::new();
        for h in histograms {
            values.extend(h.borrow().iter_recorded().map(|v| v.value_iterated_to()));
        }
        values.sort_unstable();
        values.dedup();
        ValueTable { values }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The sparse `(index, count)` form of `h`; every recorded value of `h` must be in the table.
    pub fn sparse(&self, h: &Histogram<u64>) -> Vec<(u32, u64)> {
        h.iter_recorded()
            .filter_map(|v| {
                let index = self.values.binary_search(&v.value_iterated_to()).ok()?;
                Some((u32::try_from(index).ok()?, v.count_at_value()))
            })
            .collect()
    }

    /// The value at `quantile` of a dense count array over this table, with the semantics of
    /// `Histogram::value_at_quantile`: the smallest value whose cumulative count reaches
    /// `ceil(quantile × total)` (at least 1).
    pub fn quantile(&self, dense: &[u64], total: u64, quantile: f64) -> Option<u64> {
        if total == 0 {
            return None;
        }
        let target = ((quantile.min(1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in dense.iter().enumerate() {
            seen += c;
            if seen >= target {
                return self.values.get(i).copied();
            }
        }
        self.values.last().copied()
    }
}

/// One interval of one run.
#[derive(Debug, Clone, Default)]
pub struct Block {
    /// Headline latency histogram over the [`ValueTable`], empty when the run has no interval
    /// histograms.
    pub latency: Vec<(u32, u64)>,
    /// Events completed in the interval (the histogram's count, or the interval summary's).
    pub events: u64,
    pub length_s: f64,
    /// CPU microseconds (user + system) per process slot, `None` if not sampled in this interval.
    pub cpu_us: Vec<Option<f64>>,
    /// `(t_s, rss_bytes)` samples per process slot.
    pub rss: Vec<Vec<(f64, f64)>>,
}

/// A statistic of a set of blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    /// A latency percentile (0..1) of the merged histograms, in nanoseconds.
    Quantile(f64),
    /// Events per second.
    Throughput,
    /// CPU microseconds per event of a process slot.
    CpuPerEvent(usize),
    /// Least-squares RSS slope of a process slot in bytes per hour (pooled within clusters).
    RssSlope(usize),
    /// A figure each run reports once (a scenario metric such as `cpu_ratio_nats_vs_direct`):
    /// there are no blocks to resample, so [`evaluate`] has no value for it and its interval is
    /// the between-run one ([`between_runs`]) alone. Compared as a ratio.
    RunValue,
}

impl Stat {
    /// Whether the change is a ratio (relative) or a difference (absolute).
    pub fn relative(self) -> bool {
        !matches!(self, Stat::RssSlope(_))
    }
}

/// Evaluate `stats` over a selection of blocks grouped by cluster (a cluster drawn twice is two
/// groups). One merge serves every percentile.
pub fn evaluate(
    table: &ValueTable,
    stats: &[Stat],
    groups: &[Vec<&Block>],
    min_tail_events: f64,
) -> Vec<Option<f64>> {
    let needs_histogram = stats.iter().any(|s| matches!(s, Stat::Quantile(_)));
    let mut dense = Vec::new();
    let mut hist_total = 0u64;
    if needs_histogram {
        dense = vec![0u64; table.len()];
        for block in groups.iter().flatten() {
            for &(i, c) in &block.latency {
                dense[i as usize] += c;
                hist_total += c;
            }
        }
    }
    let events: u64 = groups.iter().flatten().map(|b| b.events).sum();
    let length: f64 = groups.iter().flatten().map(|b| b.length_s).sum();
    stats
        .iter()
        .map(|stat| match *stat {
            Stat::Quantile(q) => {
                // Too few events beyond the percentile make it the sample maximum, whose
                // bootstrap distribution is degenerate: refuse rather than report false precision.
                if (hist_total as f64) * (1.0 - q) < min_tail_events {
                    return None;
                }
                table.quantile(&dense, hist_total, q).map(|v| v as f64)
            }
            Stat::Throughput => (length > 0.0).then(|| events as f64 / length),
            Stat::CpuPerEvent(slot) => {
                let mut cpu = 0.0;
                let mut counted_events = 0u64;
                for block in groups.iter().flatten() {
                    if let Some(Some(us)) = block.cpu_us.get(slot) {
                        cpu += us;
                        counted_events += block.events;
                    }
                }
                (counted_events > 0).then(|| cpu / counted_events as f64)
            }
            Stat::RssSlope(slot) => rss_slope(groups, slot),
            Stat::RunValue => None,
        })
        .collect()
}

/// Pooled within-group least-squares slope, in bytes per hour.
fn rss_slope(groups: &[Vec<&Block>], slot: usize) -> Option<f64> {
    let mut sxy = 0.0;
    let mut sxx = 0.0;
    for group in groups {
        let points: Vec<(f64, f64)> = group
            .iter()
            .filter_map(|b| b.rss.get(slot))
            .flatten()
            .copied()
            .collect();
        if points.len() < 2 {
            continue;
        }
        let n = points.len() as f64;
        let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
        let my = points.iter().map(|p| p.1).sum::<f64>() / n;
        for (x, y) in points {
            sxy += (x - mx) * (y - my);
            sxx += (x - mx) * (x - mx);
        }
    }
    (sxx > 0.0).then(|| sxy / sxx * 3600.0)
}

/// The change from `base` to `cand`: natural log ratio for relative statistics (so that changes
/// are symmetric and CIs can be formed additively), difference otherwise.
pub fn change(stat: Stat, base: Option<f64>, cand: Option<f64>) -> Option<f64> {
    let (b, c) = (base?, cand?);
    if stat.relative() {
        (b > 0.0 && c > 0.0).then(|| (c / b).ln())
    } else {
        Some(c - b)
    }
}

/// How many resamples, from which seed, and the tail rule of [`evaluate`].
#[derive(Debug, Clone, Copy)]
pub struct Resampling {
    pub resamples: usize,
    pub seed: u64,
    pub min_tail_events: f64,
}

/// Bootstrap replicates of the change for every statistic.
///
/// Stage one draws clusters with replacement (the same cluster indices on both sides when
/// `paired`, so that each A round stays next to its B round); stage two draws blocks with
/// replacement within each drawn cluster.
pub fn bootstrap(
    table: &ValueTable,
    stats: &[Stat],
    base: &[Vec<Block>],
    cand: &[Vec<Block>],
    paired: bool,
    resampling: Resampling,
) -> Vec<Vec<f64>> {
    let Resampling {
        resamples,
        seed,
        min_tail_events,
    } = resampling;
    let mut rng = SplitMix64::new(seed);
    let mut out = vec![Vec::with_capacity(resamples); stats.len()];
    for _ in 0..resamples {
        let base_clusters: Vec<usize> = (0..base.len()).map(|_| rng.below(base.len())).collect();
        let cand_clusters: Vec<usize> = if paired && cand.len() == base.len() {
            base_clusters.clone()
        } else {
            (0..cand.len()).map(|_| rng.below(cand.len())).collect()
        };
        let b = evaluate(
            table,
            stats,
            &draw(base, &base_clusters, &mut rng),
            min_tail_events,
        );
        let c = evaluate(
            table,
            stats,
            &draw(cand, &cand_clusters, &mut rng),
            min_tail_events,
        );
        for (i, stat) in stats.iter().enumerate() {
            if let Some(d) = change(*stat, b[i], c[i]) {
                out[i].push(d);
            }
        }
    }
    out
}

/// Bootstrap replicates of the statistics themselves for one sample (for the confidence band of
/// a single run's figures in exports).
pub fn bootstrap_values(
    table: &ValueTable,
    stats: &[Stat],
    sample: &[Vec<Block>],
    resampling: Resampling,
) -> Vec<Vec<f64>> {
    let mut rng = SplitMix64::new(resampling.seed);
    let mut out = vec![Vec::with_capacity(resampling.resamples); stats.len()];
    for _ in 0..resampling.resamples {
        let clusters: Vec<usize> = (0..sample.len()).map(|_| rng.below(sample.len())).collect();
        let values = evaluate(
            table,
            stats,
            &draw(sample, &clusters, &mut rng),
            resampling.min_tail_events,
        );
        for (i, v) in values.into_iter().enumerate() {
            if let Some(v) = v {
                out[i].push(v);
            }
        }
    }
    out
}

/// The `p`-quantile (0..1) of `xs` by linear interpolation; `None` when empty.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

fn draw<'a>(
    clusters: &'a [Vec<Block>],
    chosen: &[usize],
    rng: &mut SplitMix64,
) -> Vec<Vec<&'a Block>> {
    chosen
        .iter()
        .map(|&ci| {
            let blocks = &clusters[ci];
            (0..blocks.len())
                .map(|_| &blocks[rng.below(blocks.len())])
                .collect()
        })
        .collect()
}

/// The A/A noise of one sample: the larger absolute change between its two halves, split once
/// by time (first half against second: drift) and once by alternation (odd against even:
/// short-term noise). Clusters are split when there are several, blocks otherwise.
pub fn split_half_noise(
    table: &ValueTable,
    stats: &[Stat],
    sample: &[Vec<Block>],
    min_tail_events: f64,
) -> Vec<Option<f64>> {
    let groups: Vec<Vec<&Block>> = if sample.len() >= 2 {
        sample.iter().map(|c| c.iter().collect()).collect()
    } else {
        sample.iter().flatten().map(|b| vec![b]).collect()
    };
    let n = groups.len();
    if n < 2 {
        return vec![None; stats.len()];
    }
    // Blocks of one run form one regression group; clusters stay separate groups.
    let clustered = sample.len() >= 2;
    fn regroup<'a>(picked: Vec<&Vec<&'a Block>>, clustered: bool) -> Vec<Vec<&'a Block>> {
        if clustered {
            picked.into_iter().cloned().collect()
        } else {
            vec![picked.into_iter().flatten().copied().collect()]
        }
    }
    let first = regroup(groups[..n / 2].iter().collect(), clustered);
    let second = regroup(groups[n / 2..].iter().collect(), clustered);
    let even = regroup(groups.iter().step_by(2).collect(), clustered);
    let odd = regroup(groups.iter().skip(1).step_by(2).collect(), clustered);
    let (f, s) = (
        evaluate(table, stats, &first, min_tail_events / 2.0),
        evaluate(table, stats, &second, min_tail_events / 2.0),
    );
    let (e, o) = (
        evaluate(table, stats, &even, min_tail_events / 2.0),
        evaluate(table, stats, &odd, min_tail_events / 2.0),
    );
    stats
        .iter()
        .enumerate()
        .map(|(i, stat)| {
            let a = change(*stat, f[i], s[i]).map(f64::abs);
            let b = change(*stat, e[i], o[i]).map(f64::abs);
            match (a, b) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        })
        .collect()
}

/// The standard error of the change between runs, and its degrees of freedom, from each run's
/// own value of a statistic (`base[k]`, `cand[k]`, on the change scale: the logarithm for
/// relative statistics). This is the variation *between* runs (a service that settles into a
/// faster or slower mode for a whole run, say), which intervals resampled within runs cannot
/// see when there are only a few runs.
///
/// Paired (round *k* of one side next to round *k* of the other): the spread of the per-pair
/// differences, `sd(d)/√n` with `n − 1` degrees of freedom. Otherwise the pooled spread of both
/// sides, `s·√(1/K + 1/M)` with `K + M − 2` degrees of freedom; a single candidate run borrows the
/// baseline runs' spread, which makes this the prediction interval of a new run. `None` when a
/// run has no value, and zero degrees of freedom when there is no second run to measure it by.
pub fn between_runs(
    stat: Stat,
    base: &[Option<f64>],
    cand: &[Option<f64>],
    paired: bool,
) -> Option<(f64, usize)> {
    let scale = |v: Option<f64>| -> Option<f64> {
        let v = v?;
        if stat.relative() {
            (v > 0.0).then(|| v.ln())
        } else {
            Some(v)
        }
    };
    let xb: Vec<f64> = base.iter().map(|v| scale(*v)).collect::<Option<_>>()?;
    let xc: Vec<f64> = cand.iter().map(|v| scale(*v)).collect::<Option<_>>()?;
    if xb.is_empty() || xc.is_empty() {
        return None;
    }
    if paired && xb.len() == xc.len() {
        let n = xb.len();
        if n < 2 {
            return Some((0.0, 0));
        }
        let d: Vec<f64> = xc.iter().zip(&xb).map(|(c, b)| c - b).collect();
        let (_, sd) = mean_sd(&d)?;
        return Some((sd / (n as f64).sqrt(), n - 1));
    }
    let (k, m) = (xb.len(), xc.len());
    let df = (k + m).saturating_sub(2);
    if df == 0 {
        return Some((0.0, 0));
    }
    let ss = |xs: &[f64]| {
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>()
    };
    let s = ((ss(&xb) + ss(&xc)) / df as f64).sqrt();
    Some((s * (1.0 / k as f64 + 1.0 / m as f64).sqrt(), df))
}

/// The two-sided critical value of Student's t with `df` degrees of freedom for confidence
/// `1 − alpha` (statrs).
pub fn t_quantile(df: usize, alpha: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    StudentsT::new(0.0, 1.0, df as f64)
        .expect("positive degrees of freedom")
        .inverse_cdf(1.0 - alpha / 2.0)
}

/// Two-sided p-value of the null hypothesis "no change" for an estimate `est` with standard
/// error `se`: from the normal distribution, or Student's t with `df` degrees of freedom.
/// A zero standard error gives 1 for a zero estimate and 0 otherwise.
pub fn p_value(est: f64, se: f64, df: Option<usize>) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal, StudentsT};
    if se <= 0.0 || !se.is_finite() {
        return if est == 0.0 { 1.0 } else { 0.0 };
    }
    let x = -(est / se).abs();
    let tail = match df {
        Some(df) if df > 0 => StudentsT::new(0.0, 1.0, df as f64)
            .expect("positive degrees of freedom")
            .cdf(x),
        Some(_) => return 1.0,
        None => Normal::new(0.0, 1.0).expect("standard normal").cdf(x),
    };
    (2.0 * tail).min(1.0)
}

/// Holm's step-down procedure as per-test levels: test `i` rejects "no change" exactly when its
/// p-value is at most `levels[i]`, with the family-wise error rate at most `alpha`. Sorted by
/// p-value, the k-th smallest (from 0) gets `alpha / (m − k)` while every smaller one rejected;
/// from the first that does not, that test and all after it get its level, so an interval at a
/// test's level is consistent with its decision (it excludes zero iff the test rejects).
pub fn holm_levels(p_values: &[f64], alpha: f64) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]).then(a.cmp(&b)));
    let mut levels = vec![0.0; m];
    let mut stopped: Option<f64> = None;
    for (k, &i) in order.iter().enumerate() {
        let level = stopped.unwrap_or(alpha / (m - k) as f64);
        if stopped.is_none() && p_values[i] > level {
            stopped = Some(level);
        }
        levels[i] = level;
    }
    levels
}

/// The spread of a statistic from one interval to the next on one side, run by run: in each run
/// the standard deviation of its per-interval values (logarithms) around that run's own mean, so
/// a run that settled at another level as a whole (which the between-run interval accounts for)
/// does not count as jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    /// Pooled over the runs: the root mean square of their standard deviations.
    pub sd: f64,
    /// Each run's standard deviation, in run order; `None` when it had too few intervals.
    pub per_run: Vec<Option<f64>>,
}

/// Fewest intervals with a value for a run's spread.
pub const MIN_RUN_SPREAD_INTERVALS: usize = 4;

/// Fewest intervals with a value, over all runs of a side, for a [`Spread`].
pub const MIN_SPREAD_INTERVALS: usize = 8;

/// The interval-to-interval [`Spread`] of each statistic in each run (a group of `sample`): a
/// block holding too few events for a percentile gives no value, a run with fewer than
/// [`MIN_RUN_SPREAD_INTERVALS`] values has no spread, and a side with fewer than
/// [`MIN_SPREAD_INTERVALS`] in all has none. RSS slopes and run values have none.
pub fn interval_spread(
    table: &ValueTable,
    stats: &[Stat],
    sample: &[Vec<Block>],
    min_tail_events: f64,
) -> Vec<Option<Spread>> {
    let per_run: Vec<Vec<Vec<Option<f64>>>> = sample
        .iter()
        .map(|run| {
            run.iter()
                .map(|b| evaluate(table, stats, &[vec![b]], min_tail_events))
                .collect()
        })
        .collect();
    stats
        .iter()
        .enumerate()
        .map(|(i, stat)| {
            if matches!(stat, Stat::RssSlope(_) | Stat::RunValue) {
                return None;
            }
            let mut total = 0;
            let sds: Vec<Option<f64>> = per_run
                .iter()
                .map(|blocks| {
                    let xs: Vec<f64> = blocks
                        .iter()
                        .filter_map(|v| v[i])
                        .filter(|v| *v > 0.0)
                        .map(f64::ln)
                        .collect();
                    if xs.len() < MIN_RUN_SPREAD_INTERVALS {
                        return None;
                    }
                    total += xs.len();
                    mean_sd(&xs).map(|(_, sd)| sd)
                })
                .collect();
            let vars: Vec<f64> = sds.iter().flatten().map(|sd| sd * sd).collect();
            if total < MIN_SPREAD_INTERVALS || vars.is_empty() {
                return None;
            }
            let sd = (vars.iter().sum::<f64>() / vars.len() as f64).sqrt();
            Some(Spread { sd, per_run: sds })
        })
        .collect()
}

/// One-sided p-value that the candidate's spread exceeds the baseline's. The runs' spreads are
/// compared as run-level figures (logarithms), paired round by round for interleaved runs, so
/// the test rests on how much the spread itself varies from run to run: intervals within a run
/// are neither independent nor normal, and an F test over them called ordinary variation
/// "noisier". 1 when fewer than two runs per side (or pairs) have a spread.
pub fn spread_p_value(base: &Spread, cand: &Spread, paired: bool) -> f64 {
    let usable = |sd: &Option<f64>| sd.filter(|sd| *sd > 0.0);
    let (b, c): (Vec<Option<f64>>, Vec<Option<f64>>) = if paired {
        // Pairs where both rounds have a spread.
        base.per_run
            .iter()
            .zip(&cand.per_run)
            .filter_map(|(b, c)| Some((Some(usable(b)?), Some(usable(c)?))))
            .unzip()
    } else {
        let some = |v: &[Option<f64>]| v.iter().filter_map(usable).map(Some).collect();
        (some(&base.per_run), some(&cand.per_run))
    };
    if b.len() < 2 || c.len() < 2 {
        return 1.0;
    }
    let Some((se, df)) = between_runs(Stat::RunValue, &b, &c, paired) else {
        return 1.0;
    };
    if df == 0 {
        return 1.0;
    }
    let mean_ln =
        |v: &[Option<f64>]| v.iter().flatten().map(|sd| sd.ln()).sum::<f64>() / v.len() as f64;
    let est = mean_ln(&c) - mean_ln(&b);
    let two_sided = p_value(est, se, Some(df));
    if est > 0.0 {
        two_sided / 2.0
    } else {
        1.0 - two_sided / 2.0
    }
}

/// The one-sided normal quantile of the power the minimum detectable effect is stated for (80 %).
pub const POWER_Z: f64 = 0.841_621_233_572_914_4;

pub fn mean_sd(xs: &[f64]) -> Option<(f64, f64)> {
    if xs.len() < 2 {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    Some((mean, var.sqrt()))
}

/// Inverse of the standard normal CDF (Acklam's rational approximation, relative error below
/// 1.2e-9 over (0, 1)).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let low = 0.024_25;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::{new_histogram, record};

    #[test]
    fn normal_quantile_matches_tables() {
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_964),
            (0.995, 2.575_829),
            (0.999_75, 3.480_756),
            (0.01, -2.326_348),
        ] {
            assert!(
                (normal_quantile(p) - z).abs() < 1e-5,
                "p={p}: {} vs {z}",
                normal_quantile(p)
            );
        }
    }

    #[test]
    fn p_values_match_the_quantiles() {
        // At the critical value the p-value is the level.
        let z = normal_quantile(1.0 - 0.01 / 2.0);
        assert!((p_value(z, 1.0, None) - 0.01).abs() < 1e-6);
        let t = t_quantile(4, 0.01);
        assert!((p_value(-2.0 * t, 2.0, Some(4)) - 0.01).abs() < 1e-6);
        assert_eq!(p_value(0.0, 0.0, None), 1.0);
        assert_eq!(p_value(0.1, 0.0, None), 0.0);
        assert_eq!(
            p_value(0.1, 0.05, Some(0)),
            1.0,
            "no degrees of freedom decide nothing"
        );
        assert!((POWER_Z - normal_quantile(0.8)).abs() < 1e-8);
    }

    #[test]
    fn holm_steps_down_and_stays_consistent() {
        // m = 4, alpha 0.05: 0.001 <= 0.0125, 0.01 <= 0.01667, 0.03 > 0.025 stops.
        let levels = holm_levels(&[0.03, 0.001, 0.5, 0.01], 0.05);
        let expect = [0.025, 0.0125, 0.025, 0.05 / 3.0];
        for (l, e) in levels.iter().zip(expect) {
            assert!((l - e).abs() < 1e-12, "{levels:?}");
        }
        // Rejected exactly when p <= level; Holm rejects what Bonferroni does and more.
        let p = [0.03, 0.001, 0.5, 0.01];
        let rejected: Vec<bool> = p.iter().zip(&levels).map(|(p, l)| p <= l).collect();
        assert_eq!(rejected, [false, true, false, true]);
        assert!(p.iter().filter(|&&p| p <= 0.05 / 4.0).count() <= 2);
        assert!(holm_levels(&[], 0.05).is_empty());
    }

    #[test]
    fn splitmix_is_deterministic_and_uniform_enough() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let xs: Vec<usize> = (0..10_000).map(|_| a.below(10)).collect();
        let ys: Vec<usize> = (0..10_000).map(|_| b.below(10)).collect();
        assert_eq!(xs, ys);
        for bucket in 0..10 {
            let n = xs.iter().filter(|&&x| x == bucket).count();
            assert!((900..1100).contains(&n), "bucket {bucket}: {n}");
        }
    }

    #[test]
    fn compact_quantiles_equal_hdrhistogram_quantiles() {
        let mut rng = SplitMix64::new(1);
        let hs: Vec<Histogram<u64>> = (0..5)
            .map(|_| {
                let mut h = new_histogram();
                for _ in 0..2_000 {
                    record(
                        &mut h,
                        1_000 + (rng.unit() * rng.unit() * 5_000_000.0) as u64,
                    );
                }
                h
            })
            .collect();
        let table = ValueTable::new(&hs);
        let mut merged = new_histogram();
        let mut dense = vec![0u64; table.len()];
        for h in &hs {
            merged.add(h).unwrap();
            for (i, c) in table.sparse(h) {
                dense[i as usize] += c;
            }
        }
        for q in [0.01, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                table.quantile(&dense, merged.len(), q),
                Some(merged.value_at_quantile(q)),
                "q={q}"
            );
        }
    }

    #[test]
    fn percentile_interpolates() {
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0], 0.25), Some(1.25));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn noisier_is_judged_run_by_run() {
        let spread = |sds: &[f64]| Spread {
            sd: 0.0,
            per_run: sds.iter().map(|s| Some(*s)).collect(),
        };
        let base = spread(&[0.04, 0.05, 0.03, 0.045, 0.04, 0.05]);
        // Twice the spread in every round: clearly noisier, paired or not.
        let doubled = spread(&[0.08, 0.09, 0.07, 0.085, 0.09, 0.1]);
        assert!(spread_p_value(&base, &doubled, true) < 0.001);
        assert!(spread_p_value(&base, &doubled, false) < 0.001);
        // One round far noisier, the others as before: not a consistent change.
        let one_burst = spread(&[0.04, 0.05, 0.03, 0.045, 0.04, 0.5]);
        assert!(spread_p_value(&base, &one_burst, true) > 0.05);
        // Quieter is never noisier; a single pair decides nothing.
        assert!(spread_p_value(&doubled, &base, true) > 0.5);
        assert_eq!(spread_p_value(&spread(&[0.04]), &spread(&[0.4]), true), 1.0);
        // Rounds without a spread drop out with their pair.
        let gaps = Spread {
            sd: 0.0,
            per_run: vec![Some(0.08), None, Some(0.07), Some(0.085), None, Some(0.1)],
        };
        assert!(spread_p_value(&base, &gaps, true) < 0.01);
    }

    #[test]
    fn slope_is_pooled_within_groups() {
        let block = |t: f64, y: f64| Block {
            rss: vec![vec![(t, y)]],
            ..Block::default()
        };
        // Two rounds, both growing 1 byte/s but at different levels: pooled slope is 3600 B/h,
        // while a naive regression over both would be dominated by the level difference.
        let a = [block(0.0, 100.0), block(1.0, 101.0), block(2.0, 102.0)];
        let b = [block(0.0, 900.0), block(1.0, 901.0), block(2.0, 902.0)];
        let groups = vec![a.iter().collect::<Vec<_>>(), b.iter().collect()];
        let s = rss_slope(&groups, 0).unwrap();
        assert!((s - 3600.0).abs() < 1e-6, "{s}");
    }

    #[test]
    fn tail_quantile_refused_with_too_few_events() {
        let mut h = new_histogram();
        for v in 1..=500u64 {
            record(&mut h, v * 1000);
        }
        let table = ValueTable::new([&h]);
        let block = Block {
            latency: table.sparse(&h),
            events: 500,
            length_s: 1.0,
            ..Block::default()
        };
        let got = evaluate(
            &table,
            &[Stat::Quantile(0.5), Stat::Quantile(0.999)],
            &[vec![&block]],
            10.0,
        );
        assert!(got[0].is_some());
        assert_eq!(
            got[1], None,
            "500 events cannot give a p99.9 with 10 events beyond it"
        );
    }
}
