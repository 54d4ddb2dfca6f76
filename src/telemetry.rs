//! Logging: `tracing` with the level from `RUST_LOG` (default `info`), as text or JSON.
//!
//! Log lines cannot be forged through what clients send: text lines are written with every
//! control character of every field escaped ([`EscapedFields`]; JSON escapes them itself), and
//! the places that log client-supplied text (a job's error, its kind) escape it themselves with
//! [`Escaped`], for whatever subscriber an embedder installs. Errors that only say a client sent
//! something malformed are not logged as errors ([`QuietClientErrors`]).

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; a second call is a no-op (tests start many servers).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = match format {
        LogFormat::Text => {
            text_subscriber(std::io::stderr, filter, std::io::stderr().is_terminal()).try_init()
        }
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(QuietClientErrors)
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// The text subscriber [`init`] installs, writing to `writer`: one line per event, fields
/// escaped.
pub fn text_subscriber<W>(writer: W, filter: EnvFilter, ansi: bool) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry().with(filter).with(QuietClientErrors).with(
        tracing_subscriber::fmt::layer()
            .fmt_fields(EscapedFields::default())
            .with_ansi(ansi)
            .with_writer(writer),
    )
}

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
struct EscapeWriter<W>(W);

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

/// tracing-subscriber's text fields (`message key=value ...`), with every value escaped: the
/// catch-all that keeps one event on one line whatever a call site logs.
#[derive(Default)]
pub struct EscapedFields(DefaultFields);

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        // Without ANSI styling of the field names: their escape codes would be escaped too.
        let mut escaped = EscapeWriter(writer);
        self.0.format_fields(Writer::new(&mut escaped), fields)
    }
}

/// Drops the error actix-http's HTTP/1 dispatcher logs for every connection that ends in a
/// protocol error ("stream error: request parse error ...", a reset connection...): a client
/// sending garbage must not fill the error log. The API's connection layer logs the answers it
/// makes to such requests at debug (`jobyard::api::conn`).
pub struct QuietClientErrors;

impl<S: Subscriber> Layer<S> for QuietClientErrors {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        !is_client_stream_error(event)
    }
}

fn is_client_stream_error(event: &Event<'_>) -> bool {
    let meta = event.metadata();
    if *meta.level() != Level::ERROR || meta.target() != "actix_http::h1::dispatcher" {
        return false;
    }
    struct StreamError(bool);
    impl Visit for StreamError {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}").starts_with("stream error");
            }
        }
    }
    let mut visit = StreamError(false);
    event.record(&mut visit);
    visit.0
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
