//! Finished spans of a trace (a submit's request, each attempt), handed to the exporter the
//! server starts when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Without an exporter, recording
//! a span is one atomic read. The exporter's queue is bounded: when it is full (the collector
//! is slow or away), spans are dropped and counted, never held without bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::SystemTime;

use crate::job::trace::{SpanId, TraceId};

/// What kind of work a span is (OTLP's span kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// A request this server answered.
    Server,
    /// An attempt of a job taken from the queue.
    Consumer,
}

/// One finished span.
#[derive(Clone, Debug)]
pub struct FinishedSpan {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, String)>,
    /// `Some(message)` when the work failed.
    pub error: Option<String>,
}

static SINK: OnceLock<tokio::sync::mpsc::Sender<FinishedSpan>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Whether an exporter takes spans (so that callers skip building them otherwise).
pub fn exporting() -> bool {
    SINK.get().is_some()
}

/// Hands `span` to the exporter, if one runs; drops it when its queue is full.
pub fn record(span: FinishedSpan) {
    if let Some(sink) = SINK.get() {
        if sink.try_send(span).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Spans dropped because the exporter's queue was full.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Makes `sink` the exporter's queue; false when one was set already (once per process).
#[cfg(feature = "server")]
pub(crate) fn set_sink(sink: tokio::sync::mpsc::Sender<FinishedSpan>) -> bool {
    SINK.set(sink).is_ok()
}
