//! The regression gate end to end through files: two run directories with interval logs on disk,
//! `compare.json` / `compare.md` written and read back, the exit code, and both exports.

use harness::compare::{self, ChangeVerdict, CompareOptions, Comparison, RunInput};
use harness::export::{self, Format};
use harness::histogram::{new_histogram, record, write_interval_log, Interval};
use harness::results::RESULTS_FILE;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A run directory with one scenario whose 20 intervals hold 2 000 latencies each on a
/// deterministic ramp `base_ns + (37 k + 11 i) mod 100 µs`, so the percentiles are known.
fn write_run(dir: &Path, run_id: &str, base_ns: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let intervals: Vec<Interval> = (0..20u64)
        .map(|i| {
            let mut h = new_histogram();
            for k in 0..2_000u64 {
                record(&mut h, base_ns + (k * 37 + i * 11) % 100_000);
            }
            Interval {
                start: Duration::from_secs(i),
                length: Duration::from_secs(1),
                tag: None,
                histogram: h,
            }
        })
        .collect();
    write_interval_log(&dir.join("stats.hlog"), SystemTime::UNIX_EPOCH, &intervals).unwrap();
    let results = serde_json::json!({
        "schema_version": harness::results::SCHEMA_VERSION,
        "run_id": run_id,
        "started_at": "2026-11-27T06:00:00Z",
        "finished_at": "2026-11-27T06:01:00Z",
        "profile": "quick",
        "environment": {
            "git_revision": format!("{run_id}0000000"), "git_dirty": false, "git_branch": "main",
            "rustc_version": "rustc 1.95.0",
            "nats": {"kind": "local", "detail": "nats-server", "server_version": "2.12.1"},
            "cpu_model": "cpu", "cpu_count": 2, "kernel": "6.1", "os": "linux", "config_hash": "h", "seed": 1
        },
        "scenarios": [{
            "name": "stats", "title": "stats", "description": "",
            "load": {"model": "open_loop", "target_rate_per_s": 2000.0, "duration_s": 20.0, "warmup_s": 1.0},
            "accounting": {"sent": 40000, "committed": 40000, "lost": 0, "duplicated": 0},
            "verdict": "pass",
            "interval_log": "stats.hlog"
        }]
    });
    std::fs::write(
        dir.join(RESULTS_FILE),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
}

#[test]
fn gate_writes_json_and_markdown_and_exits_two_on_regression() {
    let _alone = crate::alone();
    let tmp = tempfile::tempdir().unwrap();
    // Three runs of main in a history directory, a little apart from each other (as runs are).
    let history = tmp.path().join("history");
    for (k, id) in ["aaa1", "aaa2", "aaa3"].into_iter().enumerate() {
        write_run(&history.join(id), id, 1_000_000 + 4_000 * k as u64);
    }
    write_run(&tmp.path().join("cand"), "bbbb", 1_400_000);
    let cand = RunInput::load(&tmp.path().join("cand").join(RESULTS_FILE)).unwrap();
    let bases =
        compare::resolve_baseline("history:main", &history, &cand.results.environment).unwrap();
    assert_eq!(bases.len(), 3);
    let c = compare::compare_with_baselines(&bases, &cand, &CompareOptions::default());
    let (json, md) = compare::write(&tmp.path().join("cand"), &c).unwrap();
    let back: Comparison = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    // Floats need not round-trip bit for bit through JSON; verdicts and labels must.
    let summary = |c: &Comparison| {
        c.metrics
            .iter()
            .map(|m| (m.verdict, m.label.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(summary(&back), summary(&c));
    let p50 = back.metrics.iter().find(|m| m.metric == "p50").unwrap();
    assert_eq!(p50.verdict, ChangeVerdict::Regressed, "{p50:?}");
    assert_eq!(back.exit_code(), harness::exit::TARGET_MISSED_OR_REGRESSED);
    let text = std::fs::read_to_string(md).unwrap();
    assert!(text.starts_with(compare::COMMENT_MARKER), "{text}");
    assert!(text.contains("| stats | p50 (gated) |"), "{text}");

    // One run of main, however different, decides nothing: runs vary between themselves.
    let one = compare::compare_runs(&bases[0], &cand, &CompareOptions::default());
    assert_eq!(one.exit_code(), harness::exit::OK);
    assert_eq!(one.count(ChangeVerdict::Regressed), 0);
    let p50 = one.metrics.iter().find(|m| m.metric == "p50").unwrap();
    assert_eq!(p50.note, compare::ONE_RUN_PER_SIDE);
}

#[test]
fn exports_are_written_in_both_formats() {
    let _alone = crate::alone();
    let tmp = tempfile::tempdir().unwrap();
    write_run(&tmp.path().join("run"), "cccc", 1_000_000);
    let run = RunInput::load(&tmp.path().join("run")).unwrap();

    let bmf_path = tmp.path().join("out/bmf.json");
    export::write(&run, Format::Bmf, &bmf_path).unwrap();
    let bmf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bmf_path).unwrap()).unwrap();
    let p50 = &bmf["stats/p50"]["latency"];
    let (v, lo, hi) = (
        p50["value"].as_f64().unwrap(),
        p50["lower_value"].as_f64().unwrap(),
        p50["upper_value"].as_f64().unwrap(),
    );
    assert!(
        (1_030_000.0..1_045_000.0).contains(&v),
        "p50 of the ramp is about 1.037 ms: {v}"
    );
    assert!(lo <= v && v <= hi, "{lo} {v} {hi}");
    assert!((bmf["stats"]["throughput"]["value"].as_f64().unwrap() - 2000.0).abs() < 1e-9);

    let gab_path = tmp.path().join("gab.json");
    let files = export::write(&run, Format::Gab, &gab_path).unwrap();
    assert_eq!(files.len(), 2);
    let smaller: Vec<export::GabEntry> =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let bigger: Vec<export::GabEntry> =
        serde_json::from_str(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
    assert!(smaller
        .iter()
        .any(|e| e.name == "stats p99" && e.unit == "ns"));
    assert_eq!(bigger.len(), 1);
    assert_eq!(bigger[0].name, "stats throughput");
}
