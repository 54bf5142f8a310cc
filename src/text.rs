//! Text that crosses a trust boundary. Two directions:
//! - out to a terminal: anything from the repository, a certificate or git
//!   (user IDs, file names, commit summaries) is escaped so that control and
//!   bidirectional-override characters cannot rewrite what the user reads;
//! - into YAML or a shell line: repository text must not carry a line break
//!   other than `\n` (CR, NEL, U+2028/U+2029 are line breaks to some YAML
//!   readers) nor any other control character.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters that reorder or hide text on a terminal (Unicode bidi controls).
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Would `c` act on a terminal rather than print? (`\n` is kept by [`escape`]
/// only when `keep_newlines`.)
fn is_unsafe(c: char) -> bool {
    c.is_control() || is_bidi(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

fn escape_with(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && !(keep_newlines && c == '\n')) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) && !(keep_newlines && c == '\n') {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One line of untrusted text, safe to print: every control, line-break and
/// bidi character becomes a visible `\u{…}` escape.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_with(s, false)
}

/// A multi-line message (an error, a report) safe to print: as [`escape`],
/// but `\n` stays a line break.
pub fn escape_lines(s: &str) -> Cow<'_, str> {
    escape_with(s, true)
}

/// Why repository text may not reach YAML or a shell line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} contains the character U+{code:04X} at byte {at}; only printable text and \\n are allowed")]
pub struct UnsafeText {
    pub what: String,
    pub code: u32,
    pub at: usize,
}

/// Refuses text that carries any line break but `\n`, any other control
/// character, or a bidi override: what a YAML reader could take as structure.
pub fn check_plain(what: &str, s: &str) -> Result<(), UnsafeText> {
    match s.char_indices().find(|&(_, c)| c != '\n' && is_unsafe(c)) {
        None => Ok(()),
        Some((at, c)) => Err(UnsafeText { what: what.to_owned(), code: c as u32, at }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        assert_eq!(escape("alice <a@example.org>"), "alice <a@example.org>");
        assert_eq!(escape("x\u{1b}[2Jy"), "x\\u{001b}[2Jy");
        assert_eq!(escape("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert_eq!(escape("a\nb"), "a\\u{000a}b");
        assert_eq!(escape_lines("a\nb\rc"), "a\nb\\u{000d}c");
        assert_eq!(escape("\u{85}"), "\\u{0085}");
    }

    #[test]
    fn plain_text_refuses_every_other_line_break() {
        assert!(check_plain("f", "a: 1\nb: 2\n").is_ok());
        for bad in ["a\rb", "a\u{85}b", "a\u{2028}b", "a\u{2029}b", "a\u{0}b", "a\tb", "a\u{202e}b"] {
            assert!(check_plain("f", bad).is_err(), "{bad:?}");
        }
        let e = check_plain("rbac/x.yaml", "ok\rbootcmd").unwrap_err();
        assert_eq!((e.code, e.at), (0x0d, 2));
    }

    proptest::proptest! {
        #[test]
        fn escaped_text_has_nothing_unsafe(s in ".*") {
            proptest::prop_assert!(escape(&s).chars().all(|c| !is_unsafe(c)));
            proptest::prop_assert!(check_plain("x", &escape_lines(&s)).is_ok());
        }
    }
}
