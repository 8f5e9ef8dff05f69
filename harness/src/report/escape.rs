//! The one markdown escaping function of the harness ([`cell`]), for `report.md` (through tera's
//! autoescape, [`escape`]) and the gate's `compare.md`. A leaf: it depends on nothing else of the
//! harness, so the report and the gate can both use it without depending on each other.

/// Characters that are markdown syntax (CommonMark, or GitHub's: strikethrough, math) anywhere
/// in a line; [`cell`] escapes each with a backslash.
pub const ACTIVE: [char; 10] = ['\\', '`', '*', '_', '[', ']', '|', '~', '$', '#'];

/// Whether `c` ends a line or is a control character: [`cell`] writes a space instead.
pub fn is_line_break(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Markdown-escape `text` for use inside a table cell or a paragraph: tera's escape function for
/// this template (see [`cell`]).
pub fn escape(text: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    out.write_all(cell(text).as_bytes())
}

/// `text` as inert markdown, for a table cell, a list item or the middle of a paragraph, whatever
/// it holds (the one escaping function of every markdown the harness writes):
///
/// * line breaks and other control characters (`\r`, `\n`, U+2028, …) become spaces, so a value
///   never ends a table row or starts a block;
/// * the characters of [`ACTIVE`] are backslash-escaped everywhere, `<`, `>` and `&` become
///   entities (no HTML);
/// * at the start, what would open a block is neutralized: `+`, `-`, `=` (unless a digit
///   follows, as in `-3 %`) are backslash-escaped, a leading space becomes `&#32;` (no indented
///   code), and the `.` or `)` of an ordered-list marker (`1. `) is escaped.
pub fn cell(text: &str) -> String {
    let chars: Vec<char> = text
        .chars()
        .map(|c| if is_line_break(c) { ' ' } else { c })
        .collect();
    let digits = chars.iter().take_while(|c| c.is_ascii_digit()).count();
    let list_marker = (1..=9).contains(&digits)
        && matches!(chars.get(digits), Some('.' | ')'))
        && chars.get(digits + 1).is_none_or(|c| *c == ' ');
    let mut out = String::with_capacity(text.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        match c {
            c if ACTIVE.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            ' ' if i == 0 => out.push_str("&#32;"),
            '+' | '-' | '=' if i == 0 && !chars.get(1).is_some_and(char::is_ascii_digit) => {
                out.push('\\');
                out.push(c);
            }
            '.' | ')' if list_marker && i == digits => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}
