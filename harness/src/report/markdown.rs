//! The markdown report (`report.md`): one summary table short enough for a pull-request comment or
//! a GitHub Actions job summary, details below it.
//!
//! Values are escaped for markdown by tera's autoescape with [`escape`], so a branch name or a
//! commit subject cannot break a table, inject HTML or start a code span.

use super::view::RunView;
use anyhow::Context as _;
use serde::Serialize;

/// GitHub rejects comments longer than 65 536 characters and truncates job summaries at 1 MiB;
/// the report stays well below the former.
pub const MAX_CHARS: usize = 60_000;

const TEMPLATE: &str = include_str!("templates/report.md.tera");
const TEMPLATE_NAME: &str = "report.md";

/// Markdown-escape `text` for use inside a table cell or a paragraph.
pub fn escape(text: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut buf = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '|' | '[' | ']' => {
                buf.push('\\');
                buf.push(c);
            }
            '<' => buf.push_str("&lt;"),
            '>' => buf.push_str("&gt;"),
            '&' => buf.push_str("&amp;"),
            '\r' | '\n' => buf.push(' '),
            _ => buf.push(c),
        }
    }
    out.write_all(buf.as_bytes())
}

#[derive(Serialize)]
struct Page<'a> {
    run: &'a RunView,
    details: bool,
}

/// Render the markdown report, leaving the details out when they would make it too long.
pub fn render(view: &RunView) -> anyhow::Result<String> {
    let mut tera = tera::Tera::new();
    tera.set_escape_fn(escape);
    tera.autoescape_on([".md"]);
    tera.add_raw_template(TEMPLATE_NAME, TEMPLATE)
        .context("parse the markdown template")?;
    let render = |details: bool| -> anyhow::Result<String> {
        let page = Page { run: view, details };
        let context = tera::Context::from_serialize(&page).context("markdown context")?;
        let text = tera
            .render(TEMPLATE_NAME, &context)
            .context("render the markdown report")?;
        Ok(tidy(&text))
    };
    let full = render(true)?;
    if full.chars().count() <= MAX_CHARS {
        return Ok(full);
    }
    let short = render(false)?;
    anyhow::ensure!(
        short.chars().count() <= MAX_CHARS,
        "the markdown summary is {} characters even without details (limit {MAX_CHARS})",
        short.chars().count()
    );
    Ok(short)
}

/// Collapse runs of blank lines that template conditionals leave behind, and end with one newline.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        let mut out = Vec::new();
        escape(s, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_markdown() {
        assert_eq!(esc("a|b"), "a\\|b");
        assert_eq!(
            esc("<script>alert(1)</script>"),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(esc("`rm -rf`"), "\\`rm -rf\\`");
        assert_eq!(esc("[x](http://e)"), "\\[x\\](http://e)");
        assert_eq!(esc("two\nlines"), "two lines");
        assert_eq!(esc("single_event_latency"), "single_event_latency");
    }

    #[test]
    fn tidy_collapses_blank_lines() {
        assert_eq!(tidy("\n\na\n\n\n\nb  \n\n"), "a\n\nb\n");
    }
}
