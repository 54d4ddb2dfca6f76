//! A job's place in a distributed trace (W3C Trace Context). A submit carrying a
//! `traceparent` header joins that trace; one without starts a new one. The job keeps the trace
//! id and the id of its submit's span: every attempt's span is a child of that span, so one
//! trace shows the request, its jobs and each of their attempts (retries included), and every
//! log line of an attempt carries the trace id.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 16-byte trace id, written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id, written as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// Where a job sits in its trace.
///
/// ```
/// use jobyard::job::trace::TraceContext;
///
/// let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let incoming = TraceContext::from_traceparent(parent).unwrap();
/// assert_eq!(incoming.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// // The submit's own span: same trace, a new span whose parent is the caller's.
/// let submit = incoming.child();
/// assert_eq!(submit.trace_id, incoming.trace_id);
/// assert_ne!(submit.span_id, incoming.span_id);
/// assert!(TraceContext::from_traceparent("00-0000-bad").is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct TraceContext {
    /// The trace the job belongs to (32 hex digits).
    #[cfg_attr(feature = "server", schema(value_type = String))]
    pub trace_id: TraceId,
    /// The span of the submit that created the job (16 hex digits): its attempts' spans are
    /// its children.
    #[cfg_attr(feature = "server", schema(value_type = String))]
    pub span_id: SpanId,
}

impl TraceContext {
    /// A new trace (a random trace id and span id).
    pub fn new() -> Self {
        TraceContext { trace_id: TraceId(random()), span_id: SpanId(random()) }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        TraceContext { trace_id: self.trace_id, span_id: SpanId(random()) }
    }

    /// Reads a `traceparent` header (`00-<trace id>-<parent span id>-<flags>`); `None` when it
    /// is malformed, or names the all-zero ids the standard declares invalid (a new trace is
    /// then started, as the standard asks).
    pub fn from_traceparent(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // A later version may add fields after the flags; version 00 has exactly four.
        if version.len() != 2 || version == "ff" || flags.len() != 2 || !is_hex(version) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = TraceId(hex_bytes(trace)?);
        let span_id = SpanId(hex_bytes(span)?);
        if trace_id.0 == [0; 16] || span_id.0 == [0; 8] || !is_hex(flags) {
            return None;
        }
        Some(TraceContext { trace_id, span_id })
    }

    /// The `traceparent` header naming this span as the parent (sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

impl Default for TraceContext {
    fn default() -> Self {
        Self::new()
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fastrand::fill(&mut bytes);
    // All zeros is invalid; vanishingly unlikely, but cheap to rule out.
    if bytes.iter().all(|b| *b == 0) {
        bytes[N - 1] = 1;
    }
    bytes
}

fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `N` bytes from exactly `2N` lowercase hex digits.
fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !is_hex(text) {
        return None;
    }
    let mut bytes = [0u8; N];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(bytes)
}

fn write_hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

macro_rules! hex_id {
    ($name:ident, $len:literal) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(&self.0, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                hex_bytes::<$len>(&text).map($name).ok_or_else(|| {
                    serde::de::Error::custom(format!("expected {} hex digits", $len * 2))
                })
            }
        }
    };
}

hex_id!(TraceId, 16);
hex_id!(SpanId, 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_strictly_and_written_back() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = TraceContext::from_traceparent(header).unwrap();
        assert_eq!(trace.traceparent(), header);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad}");
        }
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(TraceContext::from_traceparent(later).is_some(), "later versions may add fields");
    }

    #[test]
    fn ids_round_trip_as_hex_in_json() {
        let trace = TraceContext::new();
        let json = serde_json::to_string(&trace).unwrap();
        assert_eq!(serde_json::from_str::<TraceContext>(&json).unwrap(), trace);
        assert!(json.contains(&format!("\"trace_id\":\"{}\"", trace.trace_id)));
    }
}
