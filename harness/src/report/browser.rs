//! Check a rendered page the way a person would see it: open it in headless Chromium, read back
//! the DOM the browser built, and take a screenshot.
//!
//! The check fails when the browser logs a script error, when the page has fewer `<svg>` charts
//! than it declares (`<meta name="rosey-charts">`), when a chart could not be drawn (a
//! `chart-error` marker), or when a `<script>` element appears (the pages have none, so one would
//! be injected content).

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Debian/Ubuntu package that provides the browser.
pub const APT_PACKAGE: &str = "chromium";

/// Executable names tried in order.
const CANDIDATES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// How long one browser invocation may take.
const DEADLINE: Duration = Duration::from_secs(120);

/// Window size of the screenshot.
pub const WINDOW: (u32, u32) = (1280, 2000);

/// What the browser saw.
#[derive(Debug, Clone)]
pub struct PageCheck {
    pub browser: String,
    /// `<svg` elements in the DOM.
    pub charts: usize,
    /// Charts the page declares.
    pub expected: usize,
    pub screenshot: PathBuf,
}

/// Open `page` in headless Chromium, check it and save a screenshot to `screenshot`.
pub fn check(page: &Path, screenshot: &Path) -> anyhow::Result<PageCheck> {
    let page = std::fs::canonicalize(page).with_context(|| format!("find {}", page.display()))?;
    let url = format!("file://{}", page.display());
    let scratch = Scratch::new()?;
    let browser = find_browser()?;

    let dom_run = run_browser(&browser, &scratch, "dom", &["--dump-dom", &url])?;
    let dom = dom_run.stdout;
    let mut problems = Vec::new();
    for line in dom_run.stderr.lines().filter(|l| l.contains(":CONSOLE")) {
        if line.contains("Uncaught") || line.contains("Error") {
            problems.push(format!("script error: {}", line.trim()));
        }
    }
    let expected = declared_charts(&dom)
        .context("the page does not declare its chart count (<meta name=\"rosey-charts\">)")?;
    let charts = dom.matches("<svg").count();
    if charts != expected {
        problems.push(format!(
            "the page shows {charts} charts, expected {expected}"
        ));
    }
    let errors = dom.matches("class=\"chart-error\"").count();
    if errors > 0 {
        problems.push(format!(
            "{errors} charts could not be drawn (chart-error markers)"
        ));
    }
    if dom.contains("<script") {
        problems.push("the page contains a <script> element, which it never should".into());
    }
    if !dom.contains("</main>") {
        problems.push("the page did not render completely (no </main>)".into());
    }

    let shot = screenshot.to_string_lossy().into_owned();
    let size = format!("{},{}", WINDOW.0, WINDOW.1);
    let _ = std::fs::remove_file(screenshot);
    run_browser(
        &browser,
        &scratch,
        "shot",
        &[
            "--hide-scrollbars",
            &format!("--window-size={size}"),
            &format!("--screenshot={shot}"),
            &url,
        ],
    )?;
    match std::fs::metadata(screenshot) {
        Ok(m) if m.len() > 0 => {}
        _ => problems.push(format!(
            "no screenshot was written to {}",
            screenshot.display()
        )),
    }
    anyhow::ensure!(
        problems.is_empty(),
        "{} in the browser: {}",
        page.display(),
        problems.join("; ")
    );
    Ok(PageCheck {
        browser,
        charts,
        expected,
        screenshot: screenshot.to_owned(),
    })
}

fn declared_charts(dom: &str) -> Option<usize> {
    let at = dom.find("name=\"rosey-charts\"")?;
    let tag_end = at + dom[at..].find('>')?;
    let tag_start = dom[..at].rfind('<')?;
    let tag = &dom[tag_start..tag_end];
    let content = tag.split("content=\"").nth(1)?;
    content.split('"').next()?.parse().ok()
}

pub fn find_browser() -> anyhow::Result<String> {
    for name in CANDIDATES {
        match Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(_) => return Ok(name.to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("run {name} --version")),
        }
    }
    anyhow::bail!(
        "headless Chromium is needed to check the report but none of {} was found; install it with \
         `apt-get install {APT_PACKAGE}` (Debian/Ubuntu package `{APT_PACKAGE}`), or set ROSEY_SKIP_BROWSER=1 to skip this check",
        CANDIDATES.join(", ")
    )
}

struct Output {
    stdout: String,
    stderr: String,
}

/// Run the browser with output to files (no pipes to drain) and a deadline.
fn run_browser(
    browser: &str,
    scratch: &Scratch,
    tag: &str,
    args: &[&str],
) -> anyhow::Result<Output> {
    let out_path = scratch.dir.join(format!("{tag}.out"));
    let err_path = scratch.dir.join(format!("{tag}.err"));
    let profile = scratch.dir.join(format!("{tag}-profile"));
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .args([
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("start {browser}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "{browser} did not finish within {} s ({})",
                DEADLINE.as_secs(),
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    anyhow::ensure!(
        status.success(),
        "{browser} failed ({status}): {}",
        stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
    );
    Ok(Output { stdout, stderr })
}

/// A private temporary directory (browser profiles and captured output), removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("rosey-browser-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Scratch { dir })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_declared_chart_count() {
        assert_eq!(
            declared_charts("<head><meta name=\"rosey-charts\" content=\"12\"></head>"),
            Some(12)
        );
        assert_eq!(declared_charts("<head></head>"), None);
    }
}
