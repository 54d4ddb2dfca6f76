//! The log subscriber the `jobyard` binary installs: text lines with every field escaped, or
//! JSON, and client stream errors kept out of the error level.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use super::EscapeWriter;
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
