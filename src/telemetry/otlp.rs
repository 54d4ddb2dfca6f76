//! The OTLP trace exporter: with `OTEL_EXPORTER_OTLP_ENDPOINT` set (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, a whole URL; see `Config::otlp_traces_endpoint`),
//! finished spans are sent in batches to `<endpoint>/v1/traces` as OTLP/HTTP JSON, which the OpenTelemetry Collector and most
//! tracing back-ends accept. JSON over the HTTP client the server already has costs the build
//! nothing, where the OpenTelemetry crates bring a second HTTP stack and protobuf.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::spans::{self, FinishedSpan, SpanKind};

/// Spans waiting to be sent, at most (beyond, they are dropped and counted).
const QUEUE: usize = 8_192;
/// Spans per request, at most.
const BATCH: usize = 512;
/// How long a span may wait for its batch to fill.
const LINGER: Duration = Duration::from_millis(500);

/// Starts the exporter on the current actix system, sending to `url`, once per process.
pub fn start(url: String, service: String) {
    let (sink, mut spans_in) = tokio::sync::mpsc::channel::<FinishedSpan>(QUEUE);
    if !spans::set_sink(sink) {
        return;
    }
    tracing::info!(%url, "exporting traces (OTLP/HTTP JSON)");
    actix_rt::spawn(async move {
        let http = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(first) = spans_in.recv().await {
            batch.push(first);
            let until = tokio::time::Instant::now() + LINGER;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(until, spans_in.recv()).await {
                    Ok(Some(span)) => batch.push(span),
                    _ => break,
                }
            }
            let body = encode(&service, &batch);
            batch.clear();
            let sent = http.post(&url).insert_header(("content-type", "application/json"));
            match sent.send_body(body.to_string()).await {
                Ok(answer) if answer.status().is_success() => {}
                Ok(answer) => warn_failed(&format!("the collector answered {}", answer.status())),
                Err(err) => warn_failed(&err.to_string()),
            }
        }
    });
}

fn warn_failed(why: &str) {
    if super::repeated::admit("trace exports failed") {
        tracing::warn!("exporting traces failed ({why}); the spans of that batch are dropped");
    }
}

fn nanos(at: SystemTime) -> String {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos().to_string()
}

fn string_attribute(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

/// The OTLP/JSON request of `spans` (ids in hex, times as decimal strings of nanoseconds, as
/// the OTLP JSON mapping asks).
pub fn encode(service: &str, spans: &[FinishedSpan]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|span| {
            let mut out = json!({
                "traceId": span.trace_id.to_string(),
                "spanId": span.span_id.to_string(),
                "name": span.name,
                "kind": match span.kind { SpanKind::Server => 2, SpanKind::Consumer => 5 },
                "startTimeUnixNano": nanos(span.start),
                "endTimeUnixNano": nanos(span.end),
                "attributes": span.attributes.iter().map(|(k, v)| string_attribute(k, v)).collect::<Vec<_>>(),
                "status": match &span.error {
                    None => json!({"code": 1}),
                    Some(message) => json!({"code": 2, "message": message}),
                },
            });
            if let Some(parent) = span.parent {
                out["parentSpanId"] = json!(parent.to_string());
            }
            out
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [string_attribute("service.name", service)]},
        "scopeSpans": [{"scope": {"name": "jobyard", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::trace::TraceContext;

    #[test]
    fn spans_are_encoded_as_otlp_json() {
        let trace = TraceContext::new();
        let span = FinishedSpan {
            trace_id: trace.trace_id,
            span_id: trace.child().span_id,
            parent: Some(trace.span_id),
            name: "job noop".into(),
            kind: SpanKind::Consumer,
            start: UNIX_EPOCH + Duration::from_nanos(5),
            end: UNIX_EPOCH + Duration::from_nanos(7),
            attributes: vec![("job.kind", "noop".into())],
            error: Some("boom".into()),
        };
        let body = encode("svc", &[span]);
        let out = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(out["traceId"], trace.trace_id.to_string());
        assert_eq!(out["parentSpanId"], trace.span_id.to_string());
        assert_eq!(
            (&out["startTimeUnixNano"], &out["endTimeUnixNano"]),
            (&json!("5"), &json!("7"))
        );
        assert_eq!(out["kind"], 5);
        assert_eq!(out["status"], json!({"code": 2, "message": "boom"}));
    }
}
