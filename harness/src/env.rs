//! The environment fingerprint (harness/METHODOLOGY.md, "Recording"): what a result was measured on, so that runs
//! whose fingerprints differ are never silently compared.
//!
//! Everything is read from the git CLI, `rustc -V` and `/proc`/`/etc`; anything that cannot be
//! read is recorded as `unknown` rather than failing the run.

use std::{path::Path, process::Command};

use crate::results::{Environment, NatsProvision};

const UNKNOWN: &str = "unknown";

/// The fingerprint of this machine, checkout and configuration.
pub fn collect(
    nats: &NatsProvision,
    config: &serde_json::Value,
    seed: u64,
    profile: &str,
) -> Environment {
    let git = |args: &[&str]| command_output("git", args);
    let revision = git(&["rev-parse", "HEAD"]);
    let in_repo = revision.is_some();
    // The profile is recorded in the results beside the environment; the configuration it
    // selected is what the hash identifies.
    let _ = profile;
    Environment {
        git_revision: revision.unwrap_or_else(|| UNKNOWN.into()),
        // Untracked files do not change what was built; modified tracked files do.
        git_dirty: in_repo
            && git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty()),
        git_branch: git(&["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD"),
        commit_subject: git(&["log", "-1", "--format=%s"]),
        rustc_version: command_output("rustc", &["-V"]).unwrap_or_else(|| UNKNOWN.into()),
        nats: nats.clone(),
        cpu_model: cpu_model().unwrap_or_else(|| UNKNOWN.into()),
        cpu_count: cpu_count(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease")
            .or_else(|| command_output("uname", &["-r"]))
            .unwrap_or_else(|| UNKNOWN.into()),
        os: os_name().unwrap_or_else(|| UNKNOWN.into()),
        config_hash: config_hash(&comparability_view(config)),
        config: config.clone(),
        seed,
        load_generators: None,
    }
}

/// Trimmed stdout of a successful command, `None` otherwise.
fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn cpu_model() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo_field(
        &cpuinfo,
        &["model name", "Hardware", "cpu model", "Processor"],
    )
}

/// The first value of any of `keys` in `/proc/cpuinfo` text.
fn cpuinfo_field(cpuinfo: &str, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| {
        cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == *key)
                .then(|| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        })
    })
}

/// CPUs this process may run on (what the scheduler gives the run, cgroup limits aside).
fn cpu_count() -> u32 {
    std::thread::available_parallelism().map_or(0, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

fn os_name() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    os_release_pretty_name(&text)
}

fn os_release_pretty_name(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix("PRETTY_NAME=")?;
        Some(value.trim().trim_matches('"').trim_matches('\'').to_owned())
    })
}

/// Keys of the configuration that judge a run rather than shape it: absolute targets and the
/// harness-lag limits. They stay out of the comparability hash, so that loosening a target does
/// not make every earlier run "not comparable". (`[history]` never reaches the hashed
/// configuration: `config::BenchConfig::history`.)
pub const NOT_COMPARED_KEYS: &[&str] = &[
    "targets",
    "send_delay_p99_max_us",
    "send_delay_target_fraction",
];

/// The configuration without [`NOT_COMPARED_KEYS`] (at any depth): what the comparability hash
/// covers.
pub fn comparability_view(config: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match config {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !NOT_COMPARED_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), comparability_view(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(comparability_view).collect()),
        other => other.clone(),
    }
}

/// A stable hash of a JSON value: FNV-1a 64 over its canonical text (object keys sorted at every
/// level, no whitespace), as `fnv1a64:<16 hex digits>`. Independent of key order, process and
/// platform, unlike std's randomized hasher.
pub fn config_hash(config: &serde_json::Value) -> String {
    let mut text = String::new();
    canonical(config, &mut text);
    format!("fnv1a64:{:016x}", fnv1a64(text.as_bytes()))
}

fn canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fnv_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn targets_and_limits_stay_out_of_the_comparability_hash() {
        let a = json!({"scenarios": {"s": {"rate_per_s": 200, "targets": [{"threshold": 5.0}],
            "send_delay_p99_max_us": 500.0}}, "self_check": {"send_delay_target_fraction": 0.1}});
        let b = json!({"scenarios": {"s": {"rate_per_s": 200, "targets": [{"threshold": 9.0}],
            "send_delay_p99_max_us": 900.0}}, "self_check": {"send_delay_target_fraction": 0.2}});
        let c = json!({"scenarios": {"s": {"rate_per_s": 201, "targets": [{"threshold": 5.0}]}}});
        let h = |v: &serde_json::Value| config_hash(&comparability_view(v));
        assert_eq!(h(&a), h(&b), "a target or limit changed: still comparable");
        assert_ne!(h(&a), h(&c), "a rate changed: not comparable");
    }

    #[test]
    fn config_hash_is_stable_and_order_independent() {
        let a =
            json!({"rate": 100, "scenarios": {"b": [1, 2.5, "x"], "a": {"z": null, "y": true}}});
        let b: serde_json::Value = serde_json::from_str(
            r#"{"scenarios": {"a": {"y": true, "z": null}, "b": [1, 2.5, "x"]}, "rate": 100}"#,
        )
        .unwrap();
        assert_eq!(config_hash(&a), config_hash(&b));
        // Pinned: a change here means every stored run's hash changes; bump nothing silently.
        assert_eq!(
            config_hash(&json!({"b": 1, "a": "x"})),
            format!("fnv1a64:{:016x}", fnv1a64(br#"{"a":"x","b":1}"#))
        );
        assert_eq!(
            config_hash(&json!({})),
            format!("fnv1a64:{:016x}", fnv1a64(b"{}"))
        );
        assert_eq!(
            config_hash(&json!({"k": [1, "é"]})),
            "fnv1a64:8ebd02ea859d6cad"
        );
        assert_ne!(config_hash(&a), config_hash(&json!({"rate": 101})));
        assert_ne!(config_hash(&json!([1, 2])), config_hash(&json!([2, 1])));
    }

    #[test]
    fn parses_machine_files() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpuinfo_field(cpuinfo, &["model name"]).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpuinfo_field(cpuinfo, &["Hardware"]), None);
        let os = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            os_release_pretty_name(os).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }

    #[test]
    fn collect_fills_everything() {
        let nats = NatsProvision {
            kind: "local".into(),
            detail: "/bin/nats-server".into(),
            server_version: "2.15.1".into(),
            image_built_locally: None,
        };
        let env = collect(&nats, &json!({"a": 1}), 42, "quick");
        assert_eq!(env.seed, 42);
        assert!(env.cpu_count > 0);
        assert!(
            env.rustc_version.starts_with("rustc "),
            "{}",
            env.rustc_version
        );
        assert_ne!(env.kernel, UNKNOWN);
        assert_eq!(env.config, json!({"a": 1}));
        assert_eq!(env.config_hash, config_hash(&json!({"a": 1})));
    }
}
