//! Rendering of a [`Comparison`]: the one-line labels ("p99 +8 % [+3 %, +12 %]") and the
//! markdown summary posted as the PR comment and the GitHub step summary.

use super::{ChangeVerdict, Comparison, MetricComparison, COMMENT_MARKER};
use std::fmt::Write as _;

/// "p99 +8.2 % [+3.1 %, +12 %]", "rss_slope.bot +1.2 MiB/h [-0.4 MiB/h, +2.9 MiB/h]", or the
/// metric and change alone when no interval could be formed.
pub fn label(m: &MetricComparison) -> String {
    let fmt = |x: f64| {
        if m.scale == "relative" {
            percent(x)
        } else {
            absolute(x, &m.unit)
        }
    };
    match (m.change, m.ci) {
        (Some(c), Some([lo, hi])) => format!("{} {} [{}, {}]", m.metric, fmt(c), fmt(lo), fmt(hi)),
        (Some(c), None) => format!("{} {} (no interval)", m.metric, fmt(c)),
        (None, _) => format!("{} n/a", m.metric),
    }
}

/// A signed percentage: one decimal below 10 %, none above.
pub fn percent(x: f64) -> String {
    let p = x * 100.0;
    if p.abs() < 10.0 {
        format!("{p:+.1} %")
    } else {
        format!("{p:+.0} %")
    }
}

fn absolute(x: f64, unit: &str) -> String {
    match unit {
        "bytes/h" => format!("{:+.1} MiB/h", x / (1024.0 * 1024.0)),
        _ => format!("{x:+.3} {unit}"),
    }
}

/// A value in its unit, human-scaled.
pub fn value(x: Option<f64>, unit: &str) -> String {
    let Some(x) = x else { return "–".into() };
    match unit {
        "ns" => duration_ns(x),
        "events/s" => format!("{x:.1}/s"),
        "us/event" => format!("{x:.1} µs/event"),
        "bytes/h" => format!("{:.1} MiB/h", x / (1024.0 * 1024.0)),
        _ => format!("{x:.3} {unit}"),
    }
}

/// Nanoseconds as ns, µs, ms or s with three significant-ish digits.
pub fn duration_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn icon(v: ChangeVerdict) -> &'static str {
    match v {
        ChangeVerdict::Regressed => "🔴 regressed",
        ChangeVerdict::Improved => "🟢 improved",
        ChangeVerdict::Unchanged => "⚪ unchanged",
        ChangeVerdict::Inconclusive => "❔ inconclusive",
        ChangeVerdict::Noisier => "🟠 noisier",
    }
}

/// Markdown-safe text for an untrusted string: the report's one escaping function.
fn cell(s: &str) -> String {
    crate::report::escape::cell(s)
}

fn short(rev: &str) -> &str {
    rev.get(..rev.len().min(10)).unwrap_or(rev)
}

fn change_cell(m: &MetricComparison) -> String {
    let fmt = |x: f64| {
        if m.scale == "relative" {
            percent(x)
        } else {
            absolute(x, &m.unit)
        }
    };
    match (m.change, m.ci) {
        (Some(c), Some([lo, hi])) => format!("{} [{}, {}]", fmt(c), fmt(lo), fmt(hi)),
        (Some(c), None) => format!("{} (no interval)", fmt(c)),
        (None, _) => "–".into(),
    }
}

fn noise_cell(m: &MetricComparison) -> String {
    match m.noise_floor {
        Some(n) if m.scale == "relative" => format!("±{:.1} %", n * 100.0),
        Some(n) => format!("±{:.1} MiB/h", n / (1024.0 * 1024.0)),
        None => "–".into(),
    }
}

/// "≥ 9.1 %", or "nothing under ×10" when the interval is that wide (two rounds per side under
/// a family-wise correction, say).
fn detectable(x: f64) -> String {
    if x >= 9.0 {
        "nothing under ×10".to_owned()
    } else {
        format!("≥ {}", percent(x).trim_start_matches('+'))
    }
}

/// The minimum detectable effect: "≥ 9.1 %" (gated metrics carry a `gate` mark elsewhere).
fn mde_cell(m: &MetricComparison) -> String {
    match m.mde {
        Some(x) if m.scale == "relative" => detectable(x),
        Some(x) => format!("≥ {}", absolute(x, &m.unit).trim_start_matches('+')),
        None => "–".into(),
    }
}

fn table(out: &mut String, rows: &[&MetricComparison]) {
    out.push_str(
        "| Scenario | Metric | Baseline | Candidate | Change [CI] | A/A noise | Could detect | Verdict |\n",
    );
    out.push_str("|---|---|---:|---:|---|---:|---:|---|\n");
    for m in rows {
        let verdict = if m.note.is_empty() {
            icon(m.verdict).to_owned()
        } else {
            format!("{} ({})", icon(m.verdict), cell(&m.note))
        };
        let metric = if m.gated {
            format!("{} (gated)", cell(&m.metric))
        } else {
            cell(&m.metric)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&m.scenario),
            metric,
            value(m.baseline, &m.unit),
            value(m.candidate, &m.unit),
            change_cell(m),
            noise_cell(m),
            mde_cell(m),
            verdict
        );
    }
}

/// What the gated metrics could see: the median and worst minimum detectable effect, and for
/// interleaved runs the rounds per side that would detect the min effect everywhere.
fn power_line(c: &Comparison) -> String {
    let mut mdes: Vec<(&MetricComparison, f64)> = c
        .metrics
        .iter()
        .filter(|m| m.gated && m.scale == "relative")
        .filter_map(|m| m.mde.map(|x| (m, x)))
        .collect();
    if mdes.is_empty() {
        return String::new();
    }
    mdes.sort_by(|a, b| a.1.total_cmp(&b.1));
    let median = mdes[mdes.len() / 2].1;
    let (worst, worst_mde) = mdes[mdes.len() - 1];
    let mut line = format!(
        "This run could detect, on the gated metrics: median {}, worst {} ({} {})",
        detectable(median),
        detectable(worst_mde),
        cell(&worst.scenario),
        cell(&worst.metric)
    );
    let needed = c
        .metrics
        .iter()
        .filter(|m| m.gated)
        .filter_map(|m| m.rounds_needed)
        .max();
    if let Some(n) = needed {
        let n = if n > 100 {
            "more than 100".to_owned()
        } else {
            n.to_string()
        };
        let _ = write!(
            line,
            "; to detect {} on every gated metric: {n} rounds per side (this run: {})",
            percent(c.options.min_effect).trim_start_matches('+'),
            c.candidate.run_ids.len()
        );
    }
    line.push_str(".\n\n");
    line
}

/// The PR comment / step summary.
pub fn markdown(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{COMMENT_MARKER}");
    let dirty = |d: bool| if d { " (dirty)" } else { "" };
    let _ = writeln!(
        out,
        "## Rosey bench: {}{} vs {}{}\n",
        cell(short(&c.candidate.git_revision)),
        dirty(c.candidate.git_dirty),
        cell(short(&c.baseline.git_revision)),
        dirty(c.baseline.git_dirty)
    );
    let findings = c.findings();
    let regressed = c.gated_regressions().count();
    let headline = if findings.is_empty() {
        "**✅ passes: no regression, no missed target, nothing lost**".to_owned()
    } else {
        format!(
            "**🔴 fails: {} finding{}** ({regressed} gated regression{})",
            findings.len(),
            if findings.len() == 1 { "" } else { "s" },
            if regressed == 1 { "" } else { "s" }
        )
    };
    let _ = writeln!(
        out,
        "{headline} · {} improved · {} unchanged · {} inconclusive · {} noisier\n",
        c.count(ChangeVerdict::Improved),
        c.count(ChangeVerdict::Unchanged),
        c.count(ChangeVerdict::Inconclusive),
        c.count(ChangeVerdict::Noisier)
    );
    if !findings.is_empty() {
        out.push_str(&crate::exit::summary(&findings));
        out.push('\n');
    }
    if !c.comparable {
        let _ = writeln!(
            out,
            "> **Not compared:** the environments differ ({}).\n",
            cell(&c.env_differences.join("; "))
        );
    }
    let mode = if c.mode == "interleaved" {
        format!(
            "interleaved A/B run, {} rounds per side, paired by round",
            c.candidate.run_ids.len()
        )
    } else if c.baseline.run_ids.len() == 1 && c.candidate.run_ids.len() == 1 {
        "one run per side, so no verdicts: the variation between runs is unknown".to_owned()
    } else {
        format!(
            "separate runs ({} baseline, {} candidate)",
            c.baseline.run_ids.len(),
            c.candidate.run_ids.len()
        )
    };
    let correction = match c.options.correction {
        super::Correction::Holm => "Holm",
        super::Correction::Bonferroni => "Bonferroni",
        super::Correction::None => "no correction",
    };
    let _ = writeln!(
        out,
        "Baseline {} ({}) · candidate {} ({}) · {mode}.  \nGated metrics (p50, p99, throughput, CPU per event, NATS/direct CPU ratio): \
         {:.0} % family-wise ({correction} over {} comparisons, the strictest at {:.3} %); the others are reported, not gated. \
         Each interval is the wider of the bootstrap within runs and Student's t between runs; \
         a verdict needs the interval to exclude 0 and the change to exceed max({}, the baseline's A/A noise). \
         \"Could detect\": the change this run would call with 80 % power.\n",
        cell(short(&c.baseline.git_revision)),
        cell(&c.baseline.run_ids.join(", ")),
        cell(short(&c.candidate.git_revision)),
        cell(&c.candidate.run_ids.join(", ")),
        (1.0 - c.options.alpha) * 100.0,
        c.family_size,
        c.per_metric_confidence * 100.0,
        percent(c.options.min_effect).trim_start_matches('+'),
    );
    out.push_str(&power_line(c));
    let notable: Vec<&MetricComparison> = c
        .metrics
        .iter()
        .filter(|m| {
            matches!(
                m.verdict,
                ChangeVerdict::Regressed | ChangeVerdict::Improved | ChangeVerdict::Noisier
            )
        })
        .collect();
    if !notable.is_empty() {
        out.push_str("### Changes\n\n");
        for m in &notable {
            let spread = if m.verdict == ChangeVerdict::Noisier {
                format!(", {}", cell(&m.note))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "- {} **{}** {} ({} → {}{spread}){}",
                icon(m.verdict),
                cell(&m.scenario),
                cell(&m.label),
                value(m.baseline, &m.unit),
                value(m.candidate, &m.unit),
                if m.gated { "" } else { ", reported, not gated" }
            );
        }
        out.push('\n');
    }
    let (headline_rows, other_rows): (Vec<&MetricComparison>, Vec<&MetricComparison>) = c
        .metrics
        .iter()
        .partition(|m| matches!(m.metric.as_str(), "p50" | "p99" | "p99.9" | "throughput"));
    out.push_str("### Latency and throughput\n\n");
    table(&mut out, &headline_rows);
    if !other_rows.is_empty() {
        out.push_str("\n<details><summary>CPU per event and RSS slope</summary>\n\n");
        table(&mut out, &other_rows);
        out.push_str("\n</details>\n");
    }
    if !c.notes.is_empty() {
        out.push_str("\n<details><summary>Notes</summary>\n\n");
        for n in &c.notes {
            let _ = writeln!(out, "- {}", cell(n));
        }
        out.push_str("\n</details>\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_formats_like_the_methodology() {
        assert_eq!(percent(0.08), "+8.0 %");
        assert_eq!(percent(-0.031), "-3.1 %");
        assert_eq!(percent(0.12), "+12 %");
        assert_eq!(percent(1.764), "+176 %");
    }

    #[test]
    fn durations_are_scaled() {
        assert_eq!(duration_ns(850.0), "850 ns");
        assert_eq!(duration_ns(123_400.0), "123.4 µs");
        assert_eq!(duration_ns(3_400_000.0), "3.40 ms");
    }

    #[test]
    fn cells_escape_table_syntax() {
        assert_eq!(cell("a|b<script>"), "a\\|b&lt;script&gt;");
        assert_eq!(cell("a`b_c\nd"), "a\\`b\\_c d");
    }
}
