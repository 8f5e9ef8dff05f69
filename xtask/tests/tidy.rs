//! The tidy test (rust-analyzer's pattern): invariants that would otherwise live only in
//! ARCHITECTURE.md, held by `cargo test -p xtask`. Each check reads the repository's files (what
//! `git ls-files` lists, tracked or new and not ignored) or `cargo metadata`, and a failure names
//! `file:line`, what is wrong and what to do instead.
//!
//! Code checks run on the source with comments and string contents blanked out, so a doc comment
//! may mention `println!`; the SQL check runs on string literals only. This file is the one
//! exemption from the content checks: it has to spell out what it forbids.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// This file, exempt from the checks of file contents.
const SELF: &str = "xtask/tests/tidy.rs";

/// Where the scope of each rule is explained to a reader who hits it.
const SEE: &str = "see ARCHITECTURE.md, Invariants";

#[test]
fn every_rust_file_begins_with_a_module_doc() {
    let mut bad = Vec::new();
    for f in rust_files() {
        let first = f.text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.trim_start().starts_with("//!") {
            bad.push(format!(
                "{}:1: the file begins without a `//!` module doc; add a line or two saying what the file is for",
                f.path
            ));
        }
    }
    report("files without a module doc", bad);
}

#[test]
fn crate_dependency_rules() {
    let root = root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let mut bad = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        let manifest = Path::new(package["manifest_path"].as_str().unwrap_or_default());
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            // null: a normal dependency; "dev" or "build" otherwise.
            let kind = dep["kind"].as_str().unwrap_or("normal");
            let shipped = kind != "dev";
            let rule = match (name, dep_name) {
                ("rosey-protocol", d) if shipped && !matches!(d, "serde" | "serde_json") => Some(
                    "protocol depends on serde and serde_json only (no async, no NATS client, no SQL)",
                ),
                (n, "harness") if n != "xtask" => {
                    Some("nothing depends on harness but xtask, its command-line front")
                }
                ("rosey-bot", "rosey-dbservice") if shipped => Some(
                    "the bot talks to the database service over NATS only (a dev-dependency for tests is fine)",
                ),
                ("natskit", "rosey-dbservice" | "rosey-bot" | "harness") => {
                    Some("natskit sits below the services and the harness, never the other way round")
                }
                (n, "rusqlite") if shipped && n != "rosey-dbservice" => Some(
                    "only dbservice touches SQLite; use its library (`rosey_dbservice::db`) or its NATS subjects",
                ),
                _ => None,
            };
            if let Some(rule) = rule {
                let line = manifest_line(manifest, dep_name);
                bad.push(format!(
                    "{}:{line}: {name} has a {kind} dependency on {dep_name}: {rule}",
                    relative(manifest).display()
                ));
            }
        }
    }
    report("crate dependency rules broken", bad);
}

/// Environment variables are read in one function of natskit, in the binaries' `main.rs` (and
/// their clap `env = "…"` attributes) and in xtask, which is a binary whose modules are its
/// command line. Test suites, benches and examples configure themselves and are not checked.
/// Reading the platform's temporary directory (`std::env::temp_dir`) is not a configuration read
/// and is allowed.
#[test]
fn environment_is_read_only_by_binaries_and_natskit() {
    /// The one library function that reads the environment: (file, function).
    const ALLOWED_FN: (&str, &str) = ("natskit/src/locate.rs", "from_process");
    let mut bad = Vec::new();
    for f in rust_files().filter(|f| is_library_source(&f.path)) {
        for (line, _) in find_all(
            &f.lexed.code,
            &["env::var", "from_default_env", "from_env("],
        ) {
            if (
                f.path.as_str(),
                enclosing_fn(&f.lexed.code, line).as_deref(),
            ) == (ALLOWED_FN.0, Some(ALLOWED_FN.1))
            {
                continue;
            }
            bad.push(format!(
                "{}:{line}: a library reads an environment variable; take the value as a parameter \
                 and read it in the binary's main.rs or xtask (natskit's `{}` is the one exception)",
                f.path, ALLOWED_FN.1
            ));
        }
        for (line, _) in find_clap_env(&f.lexed.code) {
            bad.push(format!(
                "{}:{line}: a clap `env = \"…\"` attribute outside a binary's main.rs or xtask; \
                 command-line structs belong to the binaries",
                f.path
            ));
        }
    }
    report("environment reads outside the allowed places", bad);
}

#[test]
fn sql_only_in_dbservice() {
    const KEYWORDS: &[&str] = &[
        "SELECT ",
        "INSERT INTO",
        "UPDATE ",
        "DELETE FROM",
        "CREATE TABLE",
    ];
    let mut bad = Vec::new();
    for f in rust_files().filter(|f| sql_checked(&f.path)) {
        for (line, text) in &f.lexed.strings {
            if let Some(k) = KEYWORDS.iter().find(|k| text.contains(*k)) {
                bad.push(format!(
                    "{}:{line}: a string literal holds SQL ({:?}); only dbservice writes SQL: call \
                     its library (`rosey_dbservice::db::Database`) or a `rosey.db.*` subject instead",
                    f.path,
                    k.trim()
                ));
            }
        }
        for (line, _) in find_all(&f.lexed.code, &["rusqlite"]) {
            bad.push(format!(
                "{}:{line}: rusqlite is used outside dbservice; go through dbservice's library or \
                 its NATS subjects",
                f.path
            ));
        }
    }
    report("SQL outside dbservice", bad);
}

#[test]
fn libraries_do_not_print() {
    let mut bad = Vec::new();
    for f in rust_files().filter(|f| is_library_source(&f.path)) {
        for (line, mac) in find_macros(
            &f.lexed.code,
            &["println", "eprintln", "print", "eprint", "dbg"],
        ) {
            bad.push(format!(
                "{}:{line}: `{mac}!` in library code; use `tracing`, return the text, or hand it to a \
                 sink the binary provides (as `BenchOptions::status` does)",
                f.path
            ));
        }
    }
    report("printing in library code", bad);
}

#[test]
fn exit_codes_are_defined_once() {
    const HOME: &str = "harness/src/exit.rs";
    let mut bad = Vec::new();
    for f in rust_files().filter(|f| f.path != HOME && f.path != SELF) {
        for call in ["process::exit(", "ExitCode::from("] {
            for (line, at) in find_all(&f.lexed.code, &[call]) {
                let arg = f.lexed.code[at + call.len()..].trim_start();
                if arg.starts_with(|c: char| c.is_ascii_digit()) {
                    bad.push(format!(
                        "{}:{line}: `{call}<number>)`: use a constant of `harness::exit` ({HOME}), \
                         or `ExitCode::SUCCESS`/`FAILURE` in the services",
                        f.path
                    ));
                }
            }
        }
        for (line, at) in find_all(&f.lexed.code, &["mod exit"]) {
            let inline = f.lexed.code[at..]
                .trim_start_matches("mod exit")
                .trim_start();
            if f.path != "harness/src/lib.rs" || inline.starts_with('{') {
                bad.push(format!(
                    "{}:{line}: a second `exit` module; exit codes are defined once, in {HOME}",
                    f.path
                ));
            }
        }
    }
    report("exit codes defined outside harness::exit", bad);
}

/// Builds and checkouts are xtask's (`cargo.rs`, `git.rs`, `revision.rs`, `icount.rs`); the
/// harness is handed binaries. It may still ask git for the checkout's revision, read-only, where
/// it names a run (`run.rs`) and fingerprints the environment (`env.rs`).
#[test]
fn the_harness_runs_neither_cargo_nor_git() {
    const GIT_READERS: &[&str] = &["harness/src/run.rs", "harness/src/env.rs"];
    let mut bad = Vec::new();
    for f in rust_files().filter(|f| f.path.starts_with("harness/src/")) {
        for (line, text) in &f.lexed.strings {
            let allowed = text == "git" && GIT_READERS.contains(&f.path.as_str());
            if (text == "cargo" || text == "git") && !allowed {
                bad.push(format!(
                    "{}:{line}: the harness runs {text:?}; builds, worktrees and revisions belong to \
                     xtask (cargo.rs, git.rs, revision.rs): pass their results in",
                    f.path
                ));
            }
        }
    }
    report("cargo or git run by the harness", bad);
}

#[test]
fn no_citations_of_documents_outside_the_repository() {
    // The method is harness/METHODOLOGY.md and the seed's requirements are restated where they
    // are used; the notes they came from are not part of the repository. None of the
    // repository's documents numbers its sections, so "§5.1" can only point outside.
    const CITATIONS: &[&str] = &["methodology.md", "seed-system.md", "/work/shared"];
    let section = |line: &str| {
        line.match_indices('§')
            .any(|(at, s)| {
                line[at + s.len()..]
                    .trim_start()
                    .starts_with(|c: char| c.is_ascii_digit())
            })
            .then_some(&"§<number>")
    };
    let mut bad = Vec::new();
    for f in files().iter().filter(|f| f.path != SELF) {
        for (i, line) in f.text.lines().enumerate() {
            if let Some(c) = CITATIONS
                .iter()
                .find(|c| line.contains(*c))
                .or_else(|| section(line))
            {
                bad.push(format!(
                    "{}:{}: cites {c:?}, a document outside the repository; cite harness/METHODOLOGY.md \
                     or state the requirement in the repository's own words",
                    f.path,
                    i + 1
                ));
            }
        }
    }
    report("citations of documents outside the repository", bad);
}

/// Fails with every violation, one per line.
fn report(what: &str, bad: Vec<String>) {
    assert!(
        bad.is_empty(),
        "tidy: {what} ({SEE}):\n{}\n",
        bad.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Scopes.

/// `<crate>/src/**` of every crate but xtask, without the binaries' `main.rs` and `src/bin/`.
fn is_library_source(path: &str) -> bool {
    let mut parts = path.split('/');
    let (Some(krate), Some("src")) = (parts.next(), parts.next()) else {
        return false;
    };
    krate != "xtask" && !path.ends_with("/src/main.rs") && !path.contains("/src/bin/")
}

/// Everything outside dbservice. The bot's integration tests are the exception: they check the
/// rows the service wrote for the bot's events, read-only, and ship nowhere.
fn sql_checked(path: &str) -> bool {
    !path.starts_with("dbservice/") && !path.starts_with("bot/tests/") && path != SELF
}

// ---------------------------------------------------------------------------------------------
// The repository's files.

struct File {
    path: String,
    text: String,
    lexed: Lexed,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_owned()
}

fn relative(path: &Path) -> PathBuf {
    path.strip_prefix(root()).unwrap_or(path).to_owned()
}

/// A patched copy of another project's crate (the root `Cargo.toml`'s `workspace.exclude`):
/// its own conventions, none of ours.
const VENDORED: &str = "natskit/vendor/";

/// Every text file git knows or would add (tracked, or new and not ignored) but the vendored
/// ones, read once.
fn files() -> &'static [File] {
    static FILES: OnceLock<Vec<File>> = OnceLock::new();
    FILES.get_or_init(|| {
        let root = root();
        let out = Command::new("git")
            .current_dir(&root)
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .output()
            .expect("run git ls-files");
        assert!(out.status.success(), "git ls-files failed");
        let paths: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .split('\0')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        paths
            .into_iter()
            .filter(|path| !path.starts_with(VENDORED))
            .filter_map(|path| {
                // Deleted but not yet staged, or not text: nothing to check.
                let text = std::fs::read_to_string(root.join(&path)).ok()?;
                let lexed = if path.ends_with(".rs") {
                    lex(&text)
                } else {
                    Lexed::default()
                };
                Some(File { path, text, lexed })
            })
            .collect()
    })
}

fn rust_files() -> impl Iterator<Item = &'static File> {
    files().iter().filter(|f| f.path.ends_with(".rs"))
}

/// The line of `Cargo.toml` that names `dep` (1 if none does, e.g. a workspace-inherited one).
fn manifest_line(manifest: &Path, dep: &str) -> usize {
    std::fs::read_to_string(manifest)
        .unwrap_or_default()
        .lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(&format!("{dep} "))
                || l.starts_with(&format!("{dep}."))
                || l.starts_with(&format!("{dep}="))
        })
        .map_or(1, |i| i + 1)
}

// ---------------------------------------------------------------------------------------------
// A small Rust lexer: enough to tell code from comments and string literals.

/// A source file with comments and the contents of string and char literals blanked (lines
/// kept), and the string literals with the line each starts on.
#[derive(Default)]
struct Lexed {
    code: String,
    strings: Vec<(usize, String)>,
}

fn lex(src: &str) -> Lexed {
    let chars: Vec<char> = src.chars().collect();
    let n = chars.len();
    let mut code = String::with_capacity(src.len());
    let mut strings = Vec::new();
    let mut line = 1;
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    // Blank one character of a comment or literal, keeping line breaks.
    let blank = |c: char, code: &mut String, line: &mut usize| {
        if c == '\n' {
            *line += 1;
            code.push('\n');
        } else {
            code.push(' ');
        }
    };
    let mut i = 0;
    while i < n {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < n && chars[i] != '\n' {
                code.push(' ');
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < n {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    code.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    code.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(chars[i], &mut code, &mut line);
                    i += 1;
                }
            }
            continue;
        }
        // Raw strings: r"…", r#"…"#, br"…" (but not an identifier ending in r, nor r#ident).
        let after_ident = i > 0
            && is_ident(chars[i - 1])
            && !(chars[i - 1] == 'b' && (i < 2 || !is_ident(chars[i - 2])));
        if c == 'r' && matches!(next, Some('"' | '#')) && !after_ident {
            let mut j = i + 1;
            while j < n && chars[j] == '#' {
                j += 1;
            }
            if j < n && chars[j] == '"' {
                let hashes = j - i - 1;
                let start = line;
                code.extend(&chars[i..=j]);
                i = j + 1;
                let mut text = String::new();
                while i < n {
                    if chars[i] == '"'
                        && chars[i + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|c| **c == '#')
                            .count()
                            == hashes
                    {
                        break;
                    }
                    text.push(chars[i]);
                    blank(chars[i], &mut code, &mut line);
                    i += 1;
                }
                code.push('"');
                code.extend(std::iter::repeat_n('#', hashes));
                i += 1 + hashes;
                strings.push((start, text));
                continue;
            }
        }
        if c == '"' {
            let start = line;
            code.push('"');
            i += 1;
            let mut text = String::new();
            while i < n && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < n {
                    text.push(chars[i]);
                    blank(chars[i], &mut code, &mut line);
                    i += 1;
                }
                text.push(chars[i]);
                blank(chars[i], &mut code, &mut line);
                i += 1;
            }
            code.push('"');
            i += 1;
            strings.push((start, text));
            continue;
        }
        if c == '\'' {
            // A char literal ('x', '\n', '\u{1F600}'); otherwise a lifetime or label.
            let end = if next == Some('\\') {
                chars[i + 2..]
                    .iter()
                    .position(|c| *c == '\'')
                    .map(|p| i + 2 + p)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = end {
                code.push('\'');
                for &ch in &chars[i + 1..end] {
                    blank(ch, &mut code, &mut line);
                }
                code.push('\'');
                i = end + 1;
                continue;
            }
        }
        if c == '\n' {
            line += 1;
        }
        code.push(c);
        i += 1;
    }
    Lexed { code, strings }
}

fn line_of(code: &str, at: usize) -> usize {
    code[..at].matches('\n').count() + 1
}

/// (line, byte offset) of every occurrence of any of `needles`.
fn find_all(code: &str, needles: &[&str]) -> Vec<(usize, usize)> {
    let mut hits: Vec<(usize, usize)> = needles
        .iter()
        .flat_map(|n| code.match_indices(n).map(|(at, _)| (line_of(code, at), at)))
        .collect();
    hits.sort_unstable();
    hits
}

/// (line, name) of every invocation of one of the macros `names` (`name!`, `name !`).
fn find_macros<'a>(code: &str, names: &[&'a str]) -> Vec<(usize, &'a str)> {
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut hits = Vec::new();
    for name in names {
        for (at, _) in code.match_indices(name) {
            let end = at + name.len();
            let before_ok = at == 0 || !ident(bytes[at - 1]);
            let after = code[end..].trim_start();
            if before_ok && (end == code.len() || !ident(bytes[end])) && after.starts_with('!') {
                hits.push((line_of(code, at), *name));
            }
        }
    }
    hits.sort_unstable();
    hits
}

/// clap's `env = "…"` attribute argument (the string contents are blanked, the quote is kept).
fn find_clap_env(code: &str) -> Vec<(usize, usize)> {
    let bytes = code.as_bytes();
    code.match_indices("env")
        .filter(|(at, _)| {
            *at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_')
        })
        .filter(|(at, _)| {
            let rest = code[at + 3..].trim_start();
            rest.starts_with('=')
                && !rest.starts_with("==")
                && rest[1..].trim_start().starts_with('"')
        })
        .map(|(at, _)| (line_of(code, at), at))
        .collect()
}

/// The name of the nearest `fn` declared at or above `line` (1-based).
fn enclosing_fn(code: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = code.lines().collect();
    lines[..line.min(lines.len())].iter().rev().find_map(|l| {
        let at = l.find("fn ")?;
        if at > 0 && l.as_bytes()[at - 1].is_ascii_alphanumeric() {
            return None;
        }
        let name: String = l[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        (!name.is_empty()).then_some(name)
    })
}

// ---------------------------------------------------------------------------------------------
// The checks' own machinery, tested.

#[test]
fn the_lexer_tells_code_from_comments_and_literals() {
    let src = "let a = \"SELECT x\"; // println!(\"no\")\n/* eprintln! /* nested */ */ let b = r#\"say \"hi\"\"#;\nlet c = '\"'; fn f<'a>(x: &'a str) { println!(\"{x}\") }\n";
    let l = lex(src);
    assert_eq!(l.code.lines().count(), src.lines().count());
    assert_eq!(
        l.strings,
        vec![
            (1, "SELECT x".to_owned()),
            (2, "say \"hi\"".to_owned()),
            (3, "{x}".to_owned())
        ]
    );
    assert_eq!(
        find_macros(&l.code, &["println", "eprintln", "print"]),
        vec![(3, "println")]
    );
    assert_eq!(enclosing_fn(&l.code, 3).as_deref(), Some("f"));
    assert_eq!(
        find_clap_env("#[arg(long, env = \"X\")] if env == \"y\""),
        vec![(1, 12)]
    );
    assert!(is_library_source("harness/src/run.rs"));
    assert!(!is_library_source("bot/src/main.rs"));
    assert!(!is_library_source("xtask/src/bench.rs"));
    assert!(!is_library_source("harness/tests/it/bench.rs"));
}
