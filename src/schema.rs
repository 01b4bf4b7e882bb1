//! Checks a raw manifest against the CRD's OpenAPI schema, as the API server does at
//! admission: unknown fields, types, required fields, enums, bounds, patterns and list
//! uniqueness (`x-kubernetes-list-type`). Pure.
//!
//! This is what lets `routerpolicy validate` refuse everything `kubectl apply` would, before
//! the manifest reaches a cluster. The cross-field CEL rules are covered by the Rust rules in
//! [`crate::validate`], which run after this check. Messages are the ones [`crate::validate`]
//! uses, so one broken bound reported by both reads the same and is shown once.

use serde_json::Value;

use crate::validate::{Violation, describe_pattern, matches_pattern, msg};

/// Validates `value` (a whole object: apiVersion, kind, metadata, spec, …) against `schema`
/// (the CRD's `openAPIV3Schema`). Returns every violation, with API-server field paths.
pub fn check(schema: &Value, value: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    check_node(schema, value, "", &mut out);
    out
}

/// Normalizes `value` as the API server does before it validates a custom resource: a `null`
/// for a field that is not `nullable` is dropped (pruned), and an integral number in an
/// `integer` field becomes that integer (`1.0` → `1`). Pure. Without this, a manifest the
/// cluster accepts (Helm renders unset values as `null`) would fail offline.
pub fn normalize(schema: &Value, value: &mut Value) {
    let Some(schema) = schema.as_object() else {
        return;
    };
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let child_schema = |field: &str| properties.and_then(|p| p.get(field)).or(additional);
            map.retain(|field, child| {
                !(child.is_null()
                    && child_schema(field).is_some_and(|c| c.get("nullable").and_then(Value::as_bool) != Some(true)))
            });
            for (field, child) in map.iter_mut() {
                if let Some(child_schema) = child_schema(field) {
                    normalize(child_schema, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    normalize(item_schema, item);
                }
            }
        }
        Value::Number(n) if schema.get("type").and_then(Value::as_str) == Some("integer") && !n.is_i64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                *value = Value::from(f as i64);
            }
        }
        _ => {}
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_string() } else { format!("{path}.{field}") }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
        "number" => value.is_number(),
        _ => true,
    }
}

fn display_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { format!("{n}") }
}

/// `<root>` for the empty path.
fn at(path: &str) -> String {
    if path.is_empty() { "<root>".to_string() } else { path.to_string() }
}

fn check_node(schema: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) {
    let Some(schema) = schema.as_object() else {
        return;
    };
    if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !type_matches(expected, value)
    {
        out.push(Violation::new(at(path), format!("must be of type {expected}, got {}", type_name(value))));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list = allowed.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
        out.push(Violation::new(at(path), format!("must be one of {list}, got {value}")));
    }
    match value {
        Value::Object(map) => check_object(schema, map, path, out),
        Value::Array(items) => check_array(schema, items, path, out),
        Value::String(s) => check_string(schema, s, path, out),
        Value::Number(n) => check_number(schema, n.as_f64().unwrap_or(f64::NAN), path, out),
        _ => {}
    }
}

type Schema = serde_json::Map<String, Value>;

fn check_object(schema: &Schema, map: &serde_json::Map<String, Value>, path: &str, out: &mut Vec<Violation>) {
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && (map.len() as u64) > max
    {
        out.push(Violation::new(at(path), msg::max_properties(max)));
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for field in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(field) {
                out.push(Violation::new(join(path, field), msg::REQUIRED));
            }
        }
    }
    for (field, child) in map {
        let child_path = join(path, field);
        if let Some(prop) = properties.and_then(|p| p.get(field)) {
            check_node(prop, child, &child_path, out);
        } else if let Some(additional) = schema.get("additionalProperties") {
            if additional.is_object() {
                check_node(additional, child, &child_path, out);
            }
        } else if path.is_empty() && IMPLICIT_ROOT_FIELDS.contains(&field.as_str()) {
            // apiVersion, kind and metadata are implicit in every CRD schema; the
            // object name is checked by the Rust rules.
        } else if properties.is_some() {
            out.push(Violation::new(child_path, "unknown field (not declared in the schema)"));
        }
    }
}

fn check_array(schema: &Schema, items: &[Value], path: &str, out: &mut Vec<Violation>) {
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        out.push(Violation::new(at(path), msg::min_items(min)));
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && (items.len() as u64) > max
    {
        out.push(Violation::new(at(path), msg::max_items(max)));
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            check_node(item_schema, item, &format!("{path}[{i}]"), out);
        }
    }
    check_list_type(schema, items, path, out);
}

fn check_string(schema: &Schema, s: &str, path: &str, out: &mut Vec<Violation>) {
    let len = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        out.push(Violation::new(at(path), msg::min_length(min)));
    } else if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        out.push(Violation::new(at(path), msg::max_length(max)));
    } else if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && !matches_pattern(pattern, s)
    {
        out.push(Violation::new(at(path), msg::pattern(describe_pattern(pattern), pattern)));
    }
}

fn check_number(schema: &Schema, v: f64, path: &str, out: &mut Vec<Violation>) {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && v < min
    {
        out.push(Violation::new(at(path), msg::minimum(display_number(min))));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && v > max
    {
        out.push(Violation::new(at(path), msg::maximum(display_number(max))));
    }
}

/// Fields every Kubernetes object has, which a CRD's root schema does not declare.
const IMPLICIT_ROOT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn check_list_type(schema: &serde_json::Map<String, Value>, items: &[Value], path: &str, out: &mut Vec<Violation>) {
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    out.push(Violation::new(format!("{path}[{i}]"), msg::duplicate(item)));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key_of = |item: &Value| keys.iter().map(|k| item.get(*k).cloned()).collect::<Vec<_>>();
            for (i, item) in items.iter().enumerate() {
                let key = key_of(item);
                if key.iter().all(Option::is_some) && items[..i].iter().any(|prev| key_of(prev) == key) {
                    let shown = key.iter().flatten().map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()));
                    out.push(Violation::new(
                        format!("{path}[{i}]"),
                        msg::duplicate(shown.collect::<Vec<_>>().join(",")),
                    ));
                }
            }
        }
        _ => {}
    }
}
