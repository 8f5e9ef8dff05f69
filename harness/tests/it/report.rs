//! Reports and history: a snapshot of `report.md` rendered from fixed results, size and escaping
//! checks, and the HTML pages opened in headless Chromium (with `ROSEY_KEEP_REPORT_FIXTURE=1` the
//! screenshots are kept under the target directory: `report-fixture-*/runs/<run_id>/report.png`
//! and `report-fixture-*/history/index.png`).
//!
//! The fixture is built in code from seeded pseudo-random histograms, so it is deterministic and
//! follows the schema as it grows (it is assembled as JSON, where new fields take defaults).

use harness::histogram::{self, Interval};
use harness::report::{self, browser};
use harness::results::{RunResults, RESULTS_FILE};
use harness::{history, results};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// xorshift64*: deterministic, no dependency on `rand`'s algorithms.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Latency of one event: a floor plus an exponential body and rare stalls.
fn latency_ns(rng: &mut Rng, base_ns: f64) -> u64 {
    let body = -rng.next().max(1e-12).ln() * base_ns * 0.4;
    let stall = if rng.next() < 0.002 {
        base_ns * 12.0
    } else {
        0.0
    };
    (base_ns + body + stall) as u64
}

struct Shape {
    name: &'static str,
    title: &'static str,
    model: &'static str,
    rate: f64,
    seconds: u64,
    base_ns: f64,
}

const SHAPES: [Shape; 4] = [
    Shape {
        name: "single_event_latency",
        title: "Single chat event, end to end",
        model: "open_loop",
        rate: 200.0,
        seconds: 20,
        base_ns: 420_000.0,
    },
    Shape {
        name: "request_reply_stats",
        title: "Stats request/reply",
        model: "closed_loop",
        rate: 150.0,
        seconds: 20,
        base_ns: 780_000.0,
    },
    Shape {
        name: "sustained_throughput",
        title: "Sustained mixed events",
        model: "open_loop",
        rate: 800.0,
        seconds: 20,
        base_ns: 610_000.0,
    },
    Shape {
        name: "burst_1000",
        title: "Burst of 1000 events",
        model: "burst",
        rate: 0.0,
        seconds: 0,
        base_ns: 2_400_000.0,
    },
];

struct Variant<'a> {
    run_id: &'a str,
    started_at: &'a str,
    revision: &'a str,
    branch: &'a str,
    subject: &'a str,
    kernel: &'a str,
    /// Latency multiplier (a slower or faster revision).
    factor: f64,
    seed: u64,
}

const CURRENT: Variant = Variant {
    run_id: "20261127T060000Z-c0ffee1",
    started_at: "2026-11-27T06:00:00Z",
    revision: "c0ffee1234567890",
    branch: "main",
    subject: "dbservice: group commit | batch <= 64 rows, see `writer.rs`",
    kernel: "6.1.0-rosey",
    factor: 1.0,
    seed: 7,
};

const BASELINE: Variant = Variant {
    run_id: "20261126T060000Z-babe000",
    started_at: "2026-11-26T06:00:00Z",
    revision: "babe000111222333",
    branch: "main",
    subject: "bot: reconnect with backoff",
    kernel: "6.1.0-rosey",
    factor: 0.93,
    seed: 3,
};

fn environment(v: &Variant) -> Value {
    json!({
        "git_revision": v.revision,
        "git_dirty": false,
        "git_branch": v.branch,
        "commit_subject": v.subject,
        "rustc_version": "rustc 1.85.0 (4d91de4e4 2025-02-17)",
        "nats": {"kind": "local", "detail": "/usr/local/bin/nats-server", "server_version": "2.10.22"},
        "cpu_model": "Fixture CPU @ 3.0GHz",
        "cpu_count": 2,
        "kernel": v.kernel,
        "os": "Debian GNU/Linux 12",
        "config_hash": "9f2c41d0",
        "config": {"profile": "default"},
        "seed": 42
    })
}

/// One scenario's results; writes its interval log into `run_dir` when it has intervals.
fn scenario(shape: &Shape, v: &Variant, rng: &mut Rng, run_dir: &Path) -> Value {
    let base = shape.base_ns * v.factor;
    let mut total = histogram::new_histogram();
    let mut delay = histogram::new_histogram();
    let mut intervals = Vec::new();
    let mut points = Vec::new();
    let mut timeline = Vec::new();
    if shape.seconds == 0 {
        for _ in 0..1000 {
            histogram::record(&mut total, latency_ns(rng, base));
        }
    }
    for second in 0..shape.seconds {
        let mut h = histogram::new_histogram();
        // A slow patch in the middle, as a stalled disk would cause.
        let slow = if (8..10).contains(&second) { 2.5 } else { 1.0 };
        let count = (shape.rate * (0.97 + 0.06 * rng.next())) as u64;
        for _ in 0..count {
            histogram::record(&mut h, latency_ns(rng, base * slow));
            histogram::record(&mut delay, (20_000.0 + 30_000.0 * rng.next()) as u64);
        }
        total.add(&h).unwrap();
        points.push(json!({
            "t_s": second as f64, "length_s": 1.0, "count": h.len(),
            "p50_ns": h.value_at_quantile(0.5), "p99_ns": h.value_at_quantile(0.99), "max_ns": h.max()
        }));
        intervals.push(Interval {
            start: Duration::from_secs(second),
            length: Duration::from_secs(1),
            tag: Some("latency".into()),
            histogram: h,
        });
        for (process, cpu, rss_mb) in [
            ("dbservice", 18.0, 24.0),
            ("bot", 9.0, 31.0),
            ("nats-server", 6.0, 19.0),
        ] {
            let load = shape.rate / 200.0;
            timeline.push(json!({
                "t_s": second as f64 + 0.5,
                "process": process,
                "cpu_percent": cpu * load * slow * (0.9 + 0.2 * rng.next()),
                "rss_bytes": ((rss_mb + 0.05 * second as f64) * 1024.0 * 1024.0) as u64
            }));
        }
    }
    let interval_log = if intervals.is_empty() {
        Value::Null
    } else {
        let name = format!("{}.hlog", shape.name);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        histogram::write_interval_log(&run_dir.join(&name), start, &intervals).unwrap();
        Value::String(name)
    };
    let summary = histogram::summarize(&total);
    let sent = summary.count;
    let p99_ms = summary.p99_ns as f64 / 1e6;
    let seconds = shape.seconds.max(1) as f64;
    let mut histograms = vec![serde_json::to_value(
        histogram::named("latency", "intended send → committed (open loop)", &total).unwrap(),
    )
    .unwrap()];
    if !delay.is_empty() {
        histograms.push(
            serde_json::to_value(
                histogram::named("send_delay", "actual − intended send time", &delay).unwrap(),
            )
            .unwrap(),
        );
    }
    let drain_ms = 1480.0 * v.factor;
    let throughput = if shape.seconds == 0 {
        sent as f64 / (drain_ms / 1000.0)
    } else {
        sent as f64 / seconds
    };
    let mut targets = vec![json!({
        "metric": "latency.p99_ms", "op": "<=", "threshold": 5.0, "unit": "ms",
        "actual": p99_ms, "passed": p99_ms <= 5.0, "source": "seed target P0 (request/reply < 10 ms; P95 < 10 ms)"
    })];
    let mut metrics = json!({});
    let mut verdict = if p99_ms <= 5.0 { "pass" } else { "fail" };
    let mut notes: Vec<&str> = Vec::new();
    if shape.model == "burst" {
        metrics = json!({"drain_ms": drain_ms});
        targets.push(json!({
            "metric": "drain_ms", "op": "<=", "threshold": 1000.0, "unit": "ms",
            "actual": drain_ms, "passed": false, "source": "seed benchmark: burst drain (950 of 1000 stored)"
        }));
        verdict = "fail";
        notes.push("Drain time is measured from the first publish to the last commit notice.");
    } else {
        targets.push(json!({
            "metric": "throughput_per_s", "op": ">=", "threshold": 100.0, "unit": "events/s",
            "actual": throughput, "passed": throughput >= 100.0, "source": "seed target P0"
        }));
    }
    if shape.model == "closed_loop" {
        notes.push("Closed loop: service time, not latency under load.");
    }
    json!({
        "name": shape.name,
        "title": shape.title,
        "description": format!("{} against the real bot and database service.", shape.title),
        "load": {
            "model": shape.model,
            "target_rate_per_s": if shape.rate > 0.0 { json!(shape.rate) } else { Value::Null },
            "duration_s": shape.seconds as f64, "warmup_s": if shape.seconds > 0 { 5.0 } else { 0.0 },
            "payload_bytes": 180
        },
        "latency": summary,
        "histograms": histograms,
        "throughput_per_s": throughput,
        "accounting": {"sent": sent, "committed": sent, "lost": 0, "duplicated": 0},
        "resources": [
            {"process": "dbservice", "cpu_user_s": 1.2, "cpu_system_s": 0.4, "cpu_percent": 18.0 * shape.rate / 200.0,
             "cpu_us_per_event": 410.0 * v.factor, "rss_start_bytes": 25_165_824u64, "rss_end_bytes": 26_214_400u64,
             "rss_max_bytes": 26_214_400u64, "rss_slope_bytes_per_hour": 2_097_152.0},
            {"process": "bot", "cpu_user_s": 0.6, "cpu_system_s": 0.2, "cpu_percent": 9.0 * shape.rate / 200.0,
             "cpu_us_per_event": 190.0 * v.factor, "rss_start_bytes": 32_505_856u64, "rss_end_bytes": 33_554_432u64,
             "rss_max_bytes": 33_554_432u64},
            {"process": "harness", "cpu_user_s": 0.3, "cpu_system_s": 0.1, "cpu_percent": 4.0,
             "cpu_us_per_event": 95.0, "rss_start_bytes": 10_485_760u64, "rss_end_bytes": 10_485_760u64,
             "rss_max_bytes": 10_485_760u64}
        ],
        "metrics": metrics,
        "targets": targets,
        "verdict": verdict,
        "intervals": points,
        "resource_timeline": timeline,
        "interval_log": interval_log,
        "notes": notes
    })
}

/// Write a complete run directory (results.json + interval logs) and return its results.
fn write_run(run_dir: &Path, v: &Variant) -> RunResults {
    std::fs::create_dir_all(run_dir).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ v.seed);
    let scenarios: Vec<Value> = SHAPES
        .iter()
        .map(|s| scenario(s, v, &mut rng, run_dir))
        .collect();
    let value = json!({
        "schema_version": results::SCHEMA_VERSION,
        "run_id": v.run_id,
        "started_at": v.started_at,
        "finished_at": v.started_at.replace("06:00:00", "06:03:10"),
        "profile": "default",
        "environment": environment(v),
        "scenarios": scenarios
    });
    let text = serde_json::to_string_pretty(&value).unwrap();
    std::fs::write(run_dir.join(RESULTS_FILE), &text).unwrap();
    RunResults::from_json(&text).unwrap()
}

fn temp_run(v: &Variant) -> (tempfile::TempDir, RunResults) {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(dir.path(), v);
    (dir, run)
}

#[test]
fn markdown_snapshot() {
    let _alone = crate::alone();
    let (_cur_dir, current) = temp_run(&CURRENT);
    let (_base_dir, baseline) = temp_run(&BASELINE);
    let text = report::render_markdown(
        &current,
        Some((&baseline, "latest comparable run on main".into())),
        None,
    )
    .unwrap();
    insta::assert_snapshot!("report_md", text);
}

#[test]
fn without_baseline_and_with_an_incomparable_one() {
    let _alone = crate::alone();
    let (cur_dir, current) = temp_run(&CURRENT);
    let none = report::render_markdown(&current, None, None).unwrap();
    assert!(none.contains("Baseline: none"), "{none}");
    assert!(none.contains("| no baseline |"), "{none}");
    let other = Variant {
        kernel: "6.12.0-other",
        run_id: "20261125T060000Z-0dd0dd0",
        ..BASELINE
    };
    let (_other_dir, other) = temp_run(&other);
    let text =
        report::render_markdown(&current, Some((&other, "given explicitly".into())), None).unwrap();
    assert!(
        text.contains("**not comparable**") && text.contains("kernel: 6.1.0-rosey vs 6.12.0-other"),
        "{text}"
    );
    assert!(
        text.contains("| not comparable |") && !text.contains(" %"),
        "no change may be shown: {text}"
    );
    // Neither is the HTML: a banner names the difference and no baseline is overlaid; the gate
    // refuses to compare.
    let html = report::render_html(
        &current,
        cur_dir.path(),
        Some((&other, "given explicitly".into())),
        None,
    )
    .unwrap();
    assert!(
        html.contains("Not comparable:") && html.contains("kernel: 6.1.0-rosey vs 6.12.0-other")
    );
    assert!(
        !html.contains("baseline babe000"),
        "a not-comparable baseline was overlaid"
    );
    assert!(report::gate(&current, cur_dir.path(), &[&other]).is_none());
}

/// Twenty scenarios with long notes still fit a pull-request comment (65 536 characters).
#[test]
fn markdown_fits_a_pull_request_comment() {
    let _alone = crate::alone();
    let (_dir, mut current) = temp_run(&CURRENT);
    let template = current.scenarios[0].clone();
    current.scenarios = (0..20)
        .map(|i| {
            let mut s = template.clone();
            s.name = format!("scenario_{i:02}_with_a_rather_long_descriptive_name");
            s.notes = (0..12)
                .map(|n| format!("note {n}: {}", "a long observation ".repeat(20)))
                .collect();
            s
        })
        .collect();
    let text = report::render_markdown(&current, None, None).unwrap();
    assert!(
        text.chars().count() < 65_000,
        "{} characters",
        text.chars().count()
    );
    assert!(
        text.contains("left out to keep this summary short"),
        "details should have been dropped"
    );
    assert_eq!(text.matches("| scenario\\_").count(), 20);
    // With ordinary notes, the details stay.
    for s in &mut current.scenarios {
        s.notes.truncate(1);
    }
    let text = report::render_markdown(&current, None, None).unwrap();
    assert!(text.chars().count() < report::markdown::MAX_CHARS);
    assert!(text.contains("<details>"));
}

#[test]
fn untrusted_strings_are_escaped_everywhere() {
    let _alone = crate::alone();
    let evil = "<script>alert(1)</script>";
    let variant = Variant {
        branch: evil,
        subject: "x | y `z` <img src=x onerror=alert(2)>",
        ..CURRENT
    };
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let mut run = write_run(&run_dir, &variant);
    run.scenarios[0]
        .notes
        .push(format!("note {evil} | [link](javascript:alert(3))"));
    run.scenarios[0].histograms[1].name = evil.into();
    std::fs::write(
        run_dir.join(RESULTS_FILE),
        serde_json::to_string(&run).unwrap(),
    )
    .unwrap();
    let history_dir = dir.path().join("history");
    let paths = report::render_run(&run_dir, &history_dir, None).unwrap();
    for path in [&paths.html, &paths.index] {
        let page = std::fs::read_to_string(path).unwrap();
        assert!(
            !page.contains("<script"),
            "{} contains a script element",
            path.display()
        );
        assert!(
            !page.contains("<img"),
            "{} contains an img element",
            path.display()
        );
        assert!(
            page.contains("&lt;script&gt;"),
            "{} lost the text",
            path.display()
        );
    }
    let md = std::fs::read_to_string(&paths.markdown).unwrap();
    assert!(
        !md.contains("<script") && !md.contains("<img") && !md.contains("[link]("),
        "{md}"
    );
    // Every row of the summary table still has exactly 14 unescaped pipes.
    for line in md.lines().filter(|l| l.starts_with("| ")) {
        let pipes = line
            .match_indices('|')
            .filter(|(i, _)| !line[..*i].ends_with('\\'))
            .count();
        assert!(
            pipes == 14 || pipes == 6 || pipes == 3,
            "broken table row: {line}"
        );
    }
}

/// A fresh directory of its own under cargo's test temp dir, so concurrent test runs never share
/// one. `ROSEY_KEEP_REPORT_FIXTURE=1` keeps it (its path is printed) to look at the screenshots.
fn fixture_dir() -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix("report-fixture-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    if std::env::var_os("ROSEY_KEEP_REPORT_FIXTURE").is_some_and(|v| v == "1") {
        dir.disable_cleanup(true);
    }
    eprintln!("report fixture: {}", dir.path().display());
    dir
}

/// The whole path the bench engine takes: history, reports, index; then both pages in a browser.
#[test]
fn render_run_and_check_in_a_browser() {
    let _alone = crate::alone();
    let fixture = fixture_dir();
    let root = fixture.path();
    let history_dir = root.join("history");
    // Earlier runs: five on this machine (one slower revision), two on another kernel.
    let earlier = [
        (
            "20261120T060000Z-1111111",
            "2026-11-20T06:00:00Z",
            "1111111aaaa",
            "6.1.0-rosey",
            1.05,
        ),
        (
            "20261121T060000Z-2222222",
            "2026-11-21T06:00:00Z",
            "2222222bbbb",
            "6.12.0-other",
            1.30,
        ),
        (
            "20261122T060000Z-3333333",
            "2026-11-22T06:00:00Z",
            "3333333cccc",
            "6.1.0-rosey",
            1.02,
        ),
        (
            "20261123T060000Z-4444444",
            "2026-11-23T06:00:00Z",
            "4444444dddd",
            "6.1.0-rosey",
            1.45,
        ),
        (
            "20261124T060000Z-5555555",
            "2026-11-24T06:00:00Z",
            "5555555eeee",
            "6.12.0-other",
            1.25,
        ),
        (
            "20261125T060000Z-6666666",
            "2026-11-25T06:00:00Z",
            "6666666ffff",
            "6.1.0-rosey",
            0.97,
        ),
    ];
    for (i, (run_id, started_at, revision, kernel, factor)) in earlier.into_iter().enumerate() {
        let v = Variant {
            run_id,
            started_at,
            revision,
            kernel,
            factor,
            seed: 100 + i as u64,
            ..BASELINE
        };
        let dir = root.join("runs").join(run_id);
        let run = write_run(&dir, &v);
        history::append(&history_dir, &run, &dir).unwrap();
    }
    let base_dir = root.join("runs").join(BASELINE.run_id);
    let base = write_run(&base_dir, &BASELINE);
    history::append(&history_dir, &base, &base_dir).unwrap();
    // A foreign file in the history is reported, not fatal.
    std::fs::write(history_dir.join("notes.json"), b"{\"hello\": 1}").unwrap();

    let run_dir = root.join("runs").join(CURRENT.run_id);
    let current = write_run(&run_dir, &CURRENT);
    let paths = report::render_run(&run_dir, &history_dir, None).unwrap();
    assert_eq!(paths.baseline_run_id.as_deref(), Some(BASELINE.run_id));
    assert!(paths.history_entry.is_some());
    // The baseline's run directory is a sibling, so the regression gate decides the change column.
    let md = std::fs::read_to_string(&paths.markdown).unwrap();
    assert!(md.contains("the regression gate's verdict"), "{md}");
    let gated = md
        .lines()
        .filter(|l| {
            ["unchanged: ", "regressed: ", "improved: ", "inconclusive: "]
                .iter()
                .any(|v| l.contains(v))
        })
        .count();
    assert_eq!(gated, SHAPES.len(), "{md}");
    assert_eq!(paths.warnings.len(), 1, "{:?}", paths.warnings);
    assert!(
        paths.warnings[0].contains("notes.json"),
        "{:?}",
        paths.warnings
    );
    let html = std::fs::read_to_string(&paths.html).unwrap();
    assert!(
        html.contains("baseline babe000 latency"),
        "baseline overlay missing"
    );
    // 4 spectra + 4 charts for each of the 3 timed scenarios.
    assert!(html.contains("<meta name=\"rosey-charts\" content=\"16\">"));
    assert_eq!(html.matches("<svg").count(), 16);
    let index = std::fs::read_to_string(&paths.index).unwrap();
    assert!(index.contains("not comparable with environment 1"));
    // Rendering again is idempotent (the history entry is the same file), and verdicts that
    // `cargo xtask compare` left in the run directory for the same pair are reused.
    let loaded = history::load(&history_dir).unwrap();
    let baselines = report::baseline_runs(&current, &loaded, &base, false);
    assert!(
        baselines.len() > 1,
        "the gate compares with the branch's recent comparable runs"
    );
    let mut done = report::gate(&current, &run_dir, &baselines).unwrap();
    for m in done.metrics.iter_mut().filter(|m| m.metric == "p99") {
        m.label = "p99 +1.0 % [-1.0 %, +3.0 %]".into();
        m.verdict = harness::compare::ChangeVerdict::Unchanged;
    }
    harness::compare::write(&run_dir, &done).unwrap();
    report::render_run(&run_dir, &history_dir, None).unwrap();
    let md = std::fs::read_to_string(&paths.markdown).unwrap();
    assert_eq!(
        md.matches("| unchanged: +1.0 % \\[-1.0 %, +3.0 %\\] |")
            .count(),
        SHAPES.len(),
        "{md}"
    );

    if std::env::var_os("ROSEY_SKIP_BROWSER").is_some_and(|v| v == "1") {
        eprintln!("ROSEY_SKIP_BROWSER=1: not opening the pages in a browser");
        return;
    }
    let checked = browser::check(&paths.html, &run_dir.join(report::SCREENSHOT_FILE))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(checked.charts, 16);
    eprintln!("report screenshot: {}", checked.screenshot.display());
    let checked = browser::check(&paths.index, &history_dir.join("index.png"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(checked.charts >= 4 * 4);
    eprintln!("index screenshot: {}", checked.screenshot.display());
}

/// A lost interval log costs the full histograms, not the timeline.
#[test]
fn missing_interval_log_falls_back_to_summaries() {
    let _alone = crate::alone();
    let (dir, run) = temp_run(&CURRENT);
    let log = run.scenarios[0].interval_log.clone().unwrap();
    std::fs::remove_file(dir.path().join(&log)).unwrap();
    let html = report::render_html(&run, dir.path(), None, None).unwrap();
    assert!(html.contains("The interval log could not be read"));
    assert!(!html.contains("class=\"chart-error\""));
    assert!(html.contains("<meta name=\"rosey-charts\" content=\"16\">"));
    assert_eq!(html.matches("<svg").count(), 16);
}

/// Issue 11: an `interval_log` that points out of the run directory is not read: the report
/// falls back to the summaries as for a lost log, and says why.
#[test]
fn interval_log_outside_the_run_dir_is_not_read() {
    let _alone = crate::alone();
    let (other_dir, other) = temp_run(&CURRENT);
    let outside = other_dir
        .path()
        .join(other.scenarios[0].interval_log.as_ref().unwrap());
    let (dir, mut run) = temp_run(&CURRENT);
    let up = format!(
        "../{}/{}",
        other_dir.path().file_name().unwrap().to_str().unwrap(),
        other.scenarios[0].interval_log.as_ref().unwrap()
    );
    for rel in [outside.to_str().unwrap().to_owned(), up] {
        run.scenarios[0].interval_log = Some(rel.clone());
        let html = report::render_html(&run, dir.path(), None, None).unwrap();
        assert!(
            html.contains("The interval log could not be read"),
            "{rel} was read"
        );
        assert!(html.contains("outside the run directory"), "{rel}");
    }
}

/// Issue 11: every output file (results.json, report.md, report.html, the history's index.html,
/// compare.json, compare.md, exports) is replaced whole, written to a temporary file in the
/// same directory and renamed over the old one, never rewritten in place: a reader that has the
/// old file open reads all of the old file, and no temporary file is left behind.
#[test]
fn outputs_are_replaced_whole_never_rewritten_in_place() {
    let _alone = crate::alone();
    use harness::compare::{self, CompareOptions, RunInput};
    use harness::export::{self, Format};
    use std::io::Read as _;

    let root = tempfile::tempdir().unwrap();
    let run_dir = root.path().join("run");
    let history_dir = root.path().join("history");
    let out_dir = root.path().join("out");
    let mut run = write_run(&run_dir, &CURRENT);
    std::fs::create_dir_all(&history_dir).unwrap();
    std::fs::create_dir_all(&out_dir).unwrap();
    let open_old = |path: &Path, old: Option<&str>| {
        if let Some(old) = old {
            std::fs::write(path, old).unwrap();
        }
        let text = std::fs::read_to_string(path).unwrap();
        (std::fs::File::open(path).unwrap(), text, path.to_owned())
    };
    let still_old = |opened: Vec<(std::fs::File, String, std::path::PathBuf)>| {
        for (mut file, old, path) in opened {
            let mut now = String::new();
            file.read_to_string(&mut now).unwrap();
            assert!(now == old, "{} was rewritten in place", path.display());
            let new = std::fs::read_to_string(&path).unwrap();
            assert!(new != old, "{} was not written", path.display());
        }
    };

    // results.json
    let opened = vec![open_old(&run_dir.join(RESULTS_FILE), None)];
    run.profile = "quick".into();
    harness::run::write_results(&run_dir, &run).unwrap();
    still_old(opened);

    // report.md, report.html, index.html
    let opened = vec![
        open_old(&run_dir.join(report::MARKDOWN_FILE), Some("old report\n")),
        open_old(&run_dir.join(report::HTML_FILE), Some("old page\n")),
        open_old(&history_dir.join(report::INDEX_FILE), Some("old index\n")),
    ];
    report::render_run(&run_dir, &history_dir, None).unwrap();
    still_old(opened);

    // compare.json, compare.md, an export
    let input = RunInput::load(&run_dir).unwrap();
    let comparison = compare::compare_runs(&input, &input, &CompareOptions::default());
    let bmf = out_dir.join("bmf.json");
    let opened = vec![
        open_old(&out_dir.join("compare.json"), Some("{}\n")),
        open_old(&out_dir.join("compare.md"), Some("old\n")),
        open_old(&bmf, Some("{}\n")),
    ];
    compare::write(&out_dir, &comparison).unwrap();
    export::write(&input, Format::Bmf, &bmf).unwrap();
    still_old(opened);

    for dir in [&run_dir, &history_dir, &out_dir] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                !name.starts_with('.') && !name.ends_with(".tmp"),
                "temporary file left behind: {name}"
            );
        }
    }
}

/// A scenario with a fault: the fault is shaded on every chart over time (no extra chart), and
/// both reports list it and the before/during/after windows; its target is untrusted text.
#[test]
fn a_fault_is_shaded_on_the_timeline_and_its_windows_are_tabled() {
    let _alone = crate::alone();
    let (dir, mut run) = temp_run(&CURRENT);
    let window =
        |name: &str, from_s: f64, to_s: f64, lost: u64, p99: Option<u64>| results::PhaseWindow {
            name: name.into(),
            from_s,
            to_s,
            confirmed: if p99.is_some() { 1600 } else { 0 },
            lost,
            p50_ns: p99.map(|p| p / 4),
            p99_ns: p99,
            max_ns: p99.map(|p| p * 2),
            throughput_per_s: if p99.is_some() { 200.0 } else { 0.0 },
        };
    let s = &mut run.scenarios[0];
    s.faults = vec![results::FaultRecord {
        kind: "kill".into(),
        target: "nats node n2 (JetStream meta leader) <script>x</script>".into(),
        start_s: 8.0,
        end_s: Some(12.5),
    }];
    s.windows = vec![
        window("before", 0.0, 8.0, 0, Some(2_000_000)),
        window("during", 8.0, 12.5, 37, None),
        window("after", 12.5, 20.0, 0, Some(3_100_000)),
    ];

    let html = report::render_html(&run, dir.path(), None, None).unwrap();
    // Scenario 0 has 4 charts over time, each with the band; the chart count is unchanged.
    assert!(html.contains("<meta name=\"rosey-charts\" content=\"16\">"));
    assert_eq!(html.matches("<svg").count(), 16);
    assert!(!html.contains("class=\"chart-error\""));
    assert_eq!(html.matches("<rect class=\"band\"").count(), 4, "{html}");
    assert_eq!(html.matches(">\nkill n2\n</text>").count(), 4);
    assert!(html.contains("<h3>Before / during / after the fault</h3>"));
    assert!(html.contains(
        "<tr><td class=\"l\">during</td><td class=\"l\">8–12.5 s</td><td>0</td><td>37</td><td>–</td><td>–</td><td>–</td><td>0</td></tr>"
    ), "{html}");
    assert!(html.contains("<td>8 s</td><td>12.5 s</td>"));
    assert!(
        !html.contains("<script"),
        "the fault's target was not escaped"
    );
    // Escaped in the table (by the template) and in the band's tooltip (by the chart).
    assert!(html.contains(
        "<td class=\"l wrap\">nats node n2 (JetStream meta leader) &lt;script&gt;x&lt;/script&gt;</td>"
    ), "{html}");
    assert_eq!(
        html.matches(
            "<title>kill: nats node n2 (JetStream meta leader) &lt;script&gt;x&lt;/script&gt;, from 8 s to 12.5 s</title>"
        )
        .count(),
        4
    );

    let md = report::render_markdown(&run, None, None).unwrap();
    assert!(!md.contains("<script"), "{md}");
    let start = md.find("**Faults**").expect("faults listed");
    let end = start + md[start..].find("\n###").unwrap();
    insta::assert_snapshot!("report_md_fault", &md[start..end]);

    // Never lifted: the band runs to the right edge and the lists say so.
    run.scenarios[0].faults[0].end_s = None;
    let html = report::render_html(&run, dir.path(), None, None).unwrap();
    assert_eq!(html.matches("<rect class=\"band\"").count(), 4);
    assert!(html.contains("from 8 s, not lifted</title>"), "{html}");
    assert!(html.contains("<td>8 s</td><td>not lifted</td>"));
    let md = report::render_markdown(&run, None, None).unwrap();
    assert!(md.contains("| 8 s | not lifted |"), "{md}");

    // Other scenarios, and a scenario without faults, are untouched.
    run.scenarios[0].faults.clear();
    run.scenarios[0].windows.clear();
    let html = report::render_html(&run, dir.path(), None, None).unwrap();
    assert!(!html.contains("class=\"band\"") && !html.contains("Before / during / after"));
}
