//! Logging: `tracing` with the level from `RUST_LOG` (default `info`), as text or JSON.
//!
//! Log lines cannot be forged through what clients send: text lines are written with every
//! control character of every field escaped ([`EscapedFields`]; JSON escapes them itself), and
//! the places that log client-supplied text (a job's error, its kind) escape it themselves with
//! [`Escaped`], for whatever subscriber an embedder installs. Errors that only say a client sent
//! something malformed are not logged as errors ([`QuietClientErrors`]).

use std::fmt::{self, Write as _};

pub mod jobs;
#[cfg(feature = "server")]
pub mod otlp;
#[cfg(feature = "server")]
pub mod prometheus;
pub mod repeated;
pub mod spans;
#[cfg(feature = "server")]
mod subscriber;

#[cfg(feature = "server")]
pub use subscriber::{init, text_subscriber, EscapedFields, QuietClientErrors};

/// Displays a value with its control characters escaped (`\n`, `\r`, `\t`, `\u{1b}`...), and
/// the Unicode line separators and bidirectional overrides too, so that it stays on one line
/// and cannot rewrite what a terminal shows. Backslashes are kept as they are.
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapeWriter(f), "{}", self.0)
    }
}

impl<T: fmt::Display> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Whether `c` is written escaped.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A `fmt::Write` that escapes what [`needs_escape`] on its way through.
pub(crate) struct EscapeWriter<W>(pub(crate) W);

impl<W: fmt::Write> fmt::Write for EscapeWriter<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut clean = 0;
        for (at, c) in s.char_indices().filter(|&(_, c)| needs_escape(c)) {
            self.0.write_str(&s[clean..at])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                _ => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            clean = at + c.len_utf8();
        }
        self.0.write_str(&s[clean..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let escaped = Escaped("boom\n2026 ERROR forged\r\x1b[31m\t\u{2028}é \\n").to_string();
        assert_eq!(escaped, "boom\\n2026 ERROR forged\\r\\u{1b}[31m\\t\\u{2028}é \\n");
        assert_eq!(Escaped(Escaped("a\nb")).to_string(), "a\\nb", "escaping twice changes nothing");
    }
}
