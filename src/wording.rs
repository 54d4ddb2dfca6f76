//! Bad input said in the API's words. serde describes a mismatch in Rust's terms ("invalid
//! type: floating point `1e+20`, expected i32", "expected struct Sleep at line 1 column 4");
//! a client needs the field, what it allows and what it sent ("priority must be an integer
//! from -1000 to 1000; got 1e+20"). [`field_error`] rewrites serde's messages, with what each
//! field of the API allows from [`allowed`].

use crate::job::spec::{
    MAX_COST, MAX_DELAY_MS, MAX_FLOW_NAME, MAX_IDEMPOTENCY_KEY_BYTES, MAX_JOB_LIMITS,
    MAX_KIND_BYTES, MAX_LIST_LEN, MAX_QUEUE_NAME, MAX_TIMEOUT_MS,
};
use crate::queue::flow::{MAX_CONCURRENCY, MAX_TOKENS, MAX_WEIGHT, MAX_WINDOW_MS};

/// What a cron expression is.
pub const CRON: &str = "6 fields, sec min hour day-of-month month day-of-week (e.g. \"0 */5 * * * *\"), \
                        or 5 without the seconds; each *, a value, a list a,b, a range a-b or a step */n";

/// The fields of a cron expression with seconds, and what each allows.
const CRON_FIELDS: [(&str, &str); 7] = [
    ("seconds", "0-59"),
    ("minutes", "0-59"),
    ("hours", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "1-7 or SUN-SAT"),
    ("year", "a year"),
];

/// Why `expr` is not a cron expression, from the parser's `message`, which draws a caret under
/// the spot it stopped at in `parsed` (`expr` with seconds added when it had 5 fields).
pub fn cron_error(expr: &str, parsed: &str, message: &str) -> String {
    let fields: Vec<(usize, &str)> = parsed
        .split_whitespace()
        .map(|token| (token.as_ptr() as usize - parsed.as_ptr() as usize, token))
        .collect();
    if !(6..=7).contains(&fields.len()) {
        let count = expr.split_whitespace().count();
        return format!("invalid cron expression '{expr}': it has {count} fields; expected {CRON}");
    }
    let caret = message.lines().find_map(|line| line.find('^'));
    let at = caret
        .map_or(0, |column| fields.iter().rposition(|(start, _)| *start <= column).unwrap_or(0));
    let (name, range) = CRON_FIELDS[at];
    format!("invalid cron expression '{expr}': the {name} field '{}' is not valid ({range}, *, lists, ranges or steps)", fields[at].1)
}

/// What the API's field `name` allows (`priority`, `jobs[2].timeout_ms`, `job.run_at`...),
/// named by its last segment; `None` for a name this table does not know.
// Read by the HTTP API only (a build without `server` has no request fields to explain).
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub fn allowed(name: &str) -> Option<String> {
    let field = name.rsplit(['.', ']']).next().unwrap_or(name);
    Some(match field {
        "kind" => format!("a string of 1 to {MAX_KIND_BYTES} bytes naming a registered kind"),
        "payload" => "any JSON value the kind accepts".into(),
        "queue" => format!("a string matching [A-Za-z0-9_.-]{{1,{MAX_QUEUE_NAME}}}"),
        "priority" => "an integer from -1000 to 1000 (higher runs first)".into(),
        "max_attempts" => "an integer from 1 to 100".into(),
        "timeout_ms" => format!("a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}"),
        "delay_ms" => format!("a whole number of milliseconds from 0 to {MAX_DELAY_MS}"),
        "run_at" | "at" | "until" => "an RFC 3339 date-time such as 2026-12-24T18:00:00Z".into(),
        "depends_on" => format!("an array of at most {MAX_LIST_LEN} job ids (UUIDs)"),
        "idempotency_key" => format!("a string of 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes"),
        "limits" => format!("an array of at most {MAX_JOB_LIMITS} limit names"),
        "cost" => format!("an integer from 1 to {MAX_COST}"),
        "group" => format!("a string matching [A-Za-z0-9_.:@/-]{{1,{MAX_FLOW_NAME}}}"),
        "ref" => "a string naming this job for depends_on within the batch".into(),
        "jobs" => format!("an array of 1 to {MAX_LIST_LEN} job specs"),
        "backoff" => {
            "an object {\"initial_ms\", \"max_ms\", \"multiplier\", \"jitter\"}, each optional"
                .into()
        }
        "initial_ms" => format!("a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}"),
        "max_ms" => format!("a whole number of milliseconds from initial_ms to {MAX_DELAY_MS}"),
        "multiplier" => "a number from 1 to 100".into(),
        "jitter" => "true or false".into(),
        "cron" => CRON.into(),
        "timezone" => "an IANA time zone name such as Europe/Paris".into(),
        "catch_up" => "true or false".into(),
        "job" => "a job spec: an object with at least \"kind\"".into(),
        "rate" => "an object {\"tokens\": N, \"per_ms\": T}".into(),
        "tokens" => format!("an integer from 1 to {MAX_TOKENS}"),
        "per_ms" => format!("a whole number of milliseconds from 1 to {MAX_WINDOW_MS}"),
        "concurrency" => format!("an integer from 1 to {MAX_CONCURRENCY}"),
        "weight" => format!("an integer from 1 to {MAX_WEIGHT}"),
        "ttl_secs" => "a whole number of seconds, 1 or more".into(),
        "wait_ms" => "a whole number of milliseconds, 0 or more".into(),
        "limit" => format!("an integer from 1 to {MAX_LIST_LEN}"),
        "prefix" => "a string".into(),
        "tags" => "an array of strings".into(),
        _ => return None,
    })
}

/// serde's `message` about field `name` (at fault in a request), said in the API's words: the
/// field, what it allows, what was sent.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub fn field_error(name: &str, message: &str) -> String {
    say(name, message, allowed(name))
}

/// serde's `message` about the payload of a job of `kind` (the kind's own type said why).
pub fn payload_error(kind: &str, message: &str) -> String {
    let said = say("payload", message, None);
    match said.strip_prefix("payload ") {
        Some(rest) if said != strip_position(message) => {
            format!("the payload of kind '{kind}' {rest}")
        }
        _ => format!("the payload of kind '{kind}': {said}"),
    }
}

/// `message` about `name`, with what the field allows when known (else what serde expected,
/// said without Rust's types).
fn say(name: &str, message: &str, allows: Option<String>) -> String {
    let message = strip_position(message);
    if let Some(missing) = between(message, "missing field `", "`") {
        return format!("{missing} is required");
    }
    if let Some(unknown) = between(message, "unknown field `", "`") {
        let known: Vec<&str> = message
            .split_once("expected one of ")
            .map(|(_, list)| list.split(", ").map(|f| f.trim_matches('`')).collect())
            .unwrap_or_default();
        return match known.is_empty() {
            true => format!("unknown field '{unknown}'"),
            false => format!("unknown field '{unknown}'; the fields are {}", known.join(", ")),
        };
    }
    if let Some(variant) = between(message, "unknown variant `", "`") {
        let known = message.split_once("expected one of ").map(|(_, l)| l.replace('`', "'"));
        let known =
            known.or_else(|| message.split_once("expected ").map(|(_, l)| l.replace('`', "'")));
        return format!("{name} cannot be '{variant}'; it is one of {}", known.unwrap_or_default());
    }
    let sent = sent(message);
    let expected = message.rsplit_once("expected ").map(|(_, expected)| rust_type(expected));
    match (allows.or(expected), sent) {
        (Some(allows), Some(sent)) => format!("{name} must be {allows}; got {sent}"),
        (Some(allows), None) => format!("{name} must be {allows}"),
        // A type's own words (a custom check of a payload, say): already for people.
        (None, _) => message.to_owned(),
    }
}

/// What the client sent, from serde's "invalid type: X, expected Y" or "invalid value: X,
/// expected Y"; `None` when the message does not say.
fn sent(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))?;
    let (what, _) = rest.split_once(", expected")?;
    let literal = between(what, "`", "`").map(str::to_owned);
    Some(match what {
        "null" => "null".into(),
        "map" => "an object".into(),
        "sequence" => "an array".into(),
        _ if what.starts_with("string ") => what["string ".len()..].to_owned(),
        _ if what.starts_with("boolean ") => literal.unwrap_or_else(|| what.to_owned()),
        _ => literal.unwrap_or_else(|| what.to_owned()),
    })
}

/// A Rust type serde expected, as the API says it.
fn rust_type(expected: &str) -> String {
    let expected = expected.trim();
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".into(),
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "an array".into(),
        "a map" => "an object".into(),
        _ if expected.starts_with("struct ") => "a JSON object".into(),
        _ if expected.starts_with("a borrowed string") => "a string".into(),
        _ => expected.replace('`', "'"),
    }
}

/// The text between `open` and the next `close` after it.
fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

/// serde_json's " at line L column C" suffix means nothing to the client's field.
pub fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_become_the_apis_words() {
        let cases = [
            ("priority", "invalid type: floating point `1e+20`, expected i32", "priority must be an integer from -1000 to 1000 (higher runs first); got 1e+20"),
            ("delay_ms", "invalid value: integer `-5`, expected u64", &format!("delay_ms must be a whole number of milliseconds from 0 to {MAX_DELAY_MS}; got -5")),
            ("max_attempts", "invalid type: string \"3\", expected u32 at line 1 column 30", "max_attempts must be an integer from 1 to 100; got \"3\""),
            ("body", "missing field `kind`", "kind is required"),
            ("extra", "unknown field `extra`, expected one of `kind`, `payload`", "unknown field 'extra'; the fields are kind, payload"),
            ("payload", "invalid type: map, expected a string", "payload must be any JSON value the kind accepts; got an object"),
            ("ms", "invalid type: string \"x\", expected u64", "ms must be a whole number (0 or more); got \"x\""),
            ("jobs[3].run_at", "input contains invalid characters", "jobs[3].run_at must be an RFC 3339 date-time such as 2026-12-24T18:00:00Z"),
            ("flag", "invalid type: map, expected a boolean", "flag must be a boolean; got an object"),
        ];
        for (field, serde, api) in cases {
            assert_eq!(field_error(field, serde), api, "{field}: {serde}");
        }
    }

    #[test]
    fn payload_errors_name_the_kind() {
        let said =
            payload_error("sleep", "invalid type: null, expected struct Sleep at line 1 column 4");
        assert_eq!(said, "the payload of kind 'sleep' must be a JSON object; got null");
        let said = payload_error("http", "host 'x' is not in JOBYARD_HTTP_ALLOWED_HOSTS");
        assert_eq!(
            said,
            "the payload of kind 'http': host 'x' is not in JOBYARD_HTTP_ALLOWED_HOSTS"
        );
        let said = payload_error("sleep", "missing field `ms`");
        assert_eq!(said, "the payload of kind 'sleep': ms is required");
        let said = payload_error("sleep", "invalid type: string \"x\", expected u64");
        assert_eq!(
            said,
            "the payload of kind 'sleep' must be a whole number (0 or more); got \"x\""
        );
    }

    #[test]
    fn cron_errors_name_the_field() {
        let said = cron_error("61 * * * * *", "61 * * * * *", "61 * * * * *\n^\n");
        assert!(said.contains("the seconds field '61' is not valid (0-59"), "{said}");
        let said = cron_error("* 25 * * *", "0 * 25 * * *", "0 * 25 * * *\n    ^\n");
        assert!(said.contains("the hours field '25'"), "{said}");
        let said = cron_error("* * *", "* * *", "");
        assert!(said.contains("it has 3 fields; expected 6 fields"), "{said}");
    }

    #[test]
    fn no_rust_type_is_named() {
        for ty in ["i32", "u64", "usize", "struct Sleep", "f64"] {
            let said = field_error("x", &format!("invalid type: null, expected {ty}"));
            assert!(!said.contains(ty), "{said}");
        }
    }
}
