//! A JSON Schema validator for the subset utoipa emits (OpenAPI 3.1 schemas): `type` (one or
//! several), `enum`, `properties`, `required`, `additionalProperties`, `items`, `$ref` to
//! `#/components/schemas`, `oneOf`/`anyOf`/`allOf`, and the numeric, length and count bounds.
//! Written here rather than taken from a crate: the validator crates bring HTTP clients, regex
//! engines and more to resolve what this document never needs. A keyword it does not know
//! fails the check, so a schema it cannot judge is never passed silently.

use serde_json::{Map, Value};

/// Keywords that describe and never constrain (`format` included: utoipa's `int32`,
/// `date-time`, `uuid` are hints here, and the server is the judge of them).
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "example",
    "examples",
    "default",
    "format",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
];

/// The errors of `value` against `schema`, resolving `$ref`s in `document`; empty when valid.
pub fn errors(document: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(document, schema, value, "$", &mut errors);
    errors
}

fn check(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => return errors.push(format!("{at}: nothing is allowed here")),
        Value::Object(schema) => schema,
        other => return errors.push(format!("{at}: not a schema: {other}")),
    };
    for (keyword, rule) in schema {
        match keyword.as_str() {
            "$ref" => check(doc, resolve(doc, rule), value, at, errors),
            "type" => check_type(rule, value, at, errors),
            "enum" => {
                if !rule.as_array().is_some_and(|allowed| allowed.contains(value)) {
                    errors.push(format!("{at}: {value} is not one of {rule}"));
                }
            }
            "properties" | "required" | "additionalProperties" => {
                // Judged together, once, under "properties" or whichever comes alone.
                if keyword == first_of(schema, &["properties", "required", "additionalProperties"])
                {
                    check_object(doc, schema, value, at, errors);
                }
            }
            "propertyNames" => {
                for name in value.as_object().into_iter().flat_map(Map::keys) {
                    let key = Value::String(name.clone());
                    check(doc, rule, &key, &format!("{at} (key {name})"), errors);
                }
            }
            "items" => {
                for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                    check(doc, rule, item, &format!("{at}[{i}]"), errors);
                }
            }
            "allOf" => {
                for part in as_list(rule) {
                    check(doc, part, value, at, errors);
                }
            }
            "oneOf" | "anyOf" => {
                let passing = as_list(rule).filter(|part| errors_of(doc, part, value)).count();
                let ok = if keyword == "oneOf" { passing == 1 } else { passing >= 1 };
                if !ok {
                    errors.push(format!("{at}: {passing} of the {keyword} alternatives match"));
                }
            }
            "minimum" | "maximum" => {
                if let (Some(n), Some(bound)) = (value.as_f64(), rule.as_f64()) {
                    let out = if keyword == "minimum" { n < bound } else { n > bound };
                    if out {
                        errors.push(format!("{at}: {n} is beyond the {keyword} {bound}"));
                    }
                }
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" => {
                let len = match value {
                    Value::String(s) if keyword.ends_with("Length") => Some(s.chars().count()),
                    Value::Array(a) if keyword.ends_with("Items") => Some(a.len()),
                    _ => None,
                };
                if let (Some(len), Some(bound)) = (len, rule.as_u64()) {
                    let out = if keyword.starts_with("min") {
                        len < bound as usize
                    } else {
                        len > bound as usize
                    };
                    if out {
                        errors.push(format!("{at}: length {len} is beyond the {keyword} {bound}"));
                    }
                }
            }
            other if ANNOTATIONS.contains(&other) => {}
            other => errors.push(format!("{at}: the test's validator does not know `{other}`")),
        }
    }
}

/// True when `value` matches `schema` (for the alternatives of `oneOf`/`anyOf`).
fn errors_of(doc: &Value, schema: &Value, value: &Value) -> bool {
    errors(doc, schema, value).is_empty()
}

fn first_of<'a>(schema: &Map<String, Value>, keywords: &[&'a str]) -> &'a str {
    keywords.iter().find(|k| schema.contains_key(**k)).copied().unwrap_or("")
}

fn as_list(rule: &Value) -> impl Iterator<Item = &Value> {
    rule.as_array().into_iter().flatten()
}

/// The schema a `$ref` names: only `#/components/schemas/...`, all utoipa writes.
pub fn resolve<'a>(doc: &'a Value, reference: &Value) -> &'a Value {
    let reference = reference.as_str().expect("a $ref is a string");
    let name = reference
        .strip_prefix("#/components/schemas/")
        .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
    doc.pointer(&format!("/components/schemas/{name}"))
        .unwrap_or_else(|| panic!("$ref {reference} names no schema"))
}

fn check_type(rule: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let allowed: Vec<&str> = match rule {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        other => return errors.push(format!("{at}: unexpected type rule {other}")),
    };
    let matches = |kind: &str| match kind {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => false,
    };
    if !allowed.iter().any(|kind| matches(kind)) {
        errors.push(format!("{at}: {value} is not of type {rule}"));
    }
}

fn check_object(
    doc: &Value,
    schema: &Map<String, Value>,
    value: &Value,
    at: &str,
    errors: &mut Vec<String>,
) {
    let Some(object) = value.as_object() else { return };
    let properties = schema.get("properties").and_then(Value::as_object);
    for name in as_list(schema.get("required").unwrap_or(&Value::Null)).filter_map(Value::as_str) {
        if !object.contains_key(name) {
            errors.push(format!("{at}: the required `{name}` is missing"));
        }
    }
    for (name, field) in object {
        let at = format!("{at}.{name}");
        match (properties.and_then(|p| p.get(name)), schema.get("additionalProperties")) {
            (Some(property), _) => check(doc, property, field, &at, errors),
            (None, Some(Value::Bool(false))) => errors.push(format!("{at}: unknown field")),
            (None, Some(extra)) => check(doc, extra, field, &at, errors),
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::errors;

    /// The validator itself rejects what it should: each case is (schema, value, valid).
    #[test]
    fn the_validator_judges_each_keyword() {
        let doc = json!({"components": {"schemas": {"N": {"type": "integer", "minimum": 1}}}});
        let object = json!({
            "type": "object",
            "properties": {"n": {"$ref": "#/components/schemas/N"}, "s": {"type": ["string", "null"]}},
            "required": ["n"],
            "additionalProperties": false,
        });
        let cases = [
            (object.clone(), json!({"n": 1}), true),
            (object.clone(), json!({"n": 1, "s": null}), true),
            (object.clone(), json!({"n": 0}), false),
            (object.clone(), json!({"n": "1"}), false),
            (object.clone(), json!({"s": "x"}), false),
            (object.clone(), json!({"n": 1, "x": 1}), false),
            (json!({"type": "array", "items": {"enum": ["a", "b"]}}), json!(["a", "b"]), true),
            (json!({"type": "array", "items": {"enum": ["a", "b"]}}), json!(["c"]), false),
            (json!({"oneOf": [{"type": "null"}, {"type": "integer"}]}), json!(3), true),
            (json!({"oneOf": [{"type": "number"}, {"type": "integer"}]}), json!(3), false),
            (json!({"allOf": [{"type": "integer"}, {"maximum": 2}]}), json!(3), false),
            (json!({"type": "string", "maxLength": 2}), json!("abc"), false),
            (json!({"type": "integer"}), json!(1.5), false),
            (json!({"unknownKeyword": 1}), json!(1), false),
        ];
        for (schema, value, valid) in cases {
            let found = errors(&doc, &schema, &value);
            assert_eq!(found.is_empty(), valid, "{value} against {schema}: {found:?}");
        }
    }
}
