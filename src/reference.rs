//! The field reference (`docs/reference.md`), generated from the CRD's OpenAPI schema so the
//! documentation cannot drift from what the API server enforces. Pure.

use std::fmt::Write as _;

use serde_json::Value;

/// Markdown reference of every field under `spec`, with type, bounds and description.
pub fn markdown(schema: &Value) -> String {
    let mut out = String::new();
    out.push_str("# ImageVariationPolicy field reference\n\n");
    out.push_str("Generated from the CRD schema (`routerpolicy crd`); a test fails when it drifts. ");
    out.push_str("Regenerate with `UPDATE_GOLDEN=1 cargo test --test cli docs_reference`.\n\n");
    out.push_str(
        "`apiVersion: routerpolicy.io/v1alpha1`, `kind: ImageVariationPolicy` (short name `ivp`, namespaced).\n\n",
    );
    out.push_str("| Field | Type | Required | Constraints | Description |\n|---|---|---|---|---|\n");
    if let Some(spec) = schema.pointer("/properties/spec") {
        walk(&mut out, "spec", spec, true);
    }
    out.push_str("\nCross-field rules enforced at admission (CEL) and by the controller:\n\n");
    collect_cel(&mut out, "spec", schema.pointer("/properties/spec").unwrap_or(&Value::Null));
    out
}

fn walk(out: &mut String, path: &str, node: &Value, required: bool) {
    let ty = match node.get("type").and_then(Value::as_str) {
        Some("array") => {
            let item = node.pointer("/items/type").and_then(Value::as_str).unwrap_or("object");
            format!("[]{item}")
        }
        Some("object") if node.get("additionalProperties").is_some() => "map[string]string".to_string(),
        Some(t) => t.to_string(),
        None => "any".to_string(),
    };
    let description = node
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|");
    if path != "spec" {
        let _ = writeln!(
            out,
            "| `{path}` | {ty} | {} | {} | {description} |",
            if required { "yes" } else { "no" },
            constraints(node)
        );
    }
    let required_fields: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let (children, prefix) = match node.get("type").and_then(Value::as_str) {
        Some("array") => (node.pointer("/items/properties"), format!("{path}[]")),
        _ => (node.get("properties"), path.to_string()),
    };
    let item_required: Vec<&str> = node
        .pointer("/items/required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(Value::Object(props)) = children {
        for (name, child) in props {
            let req = required_fields.contains(&name.as_str()) || item_required.contains(&name.as_str());
            walk(out, &format!("{prefix}.{name}"), child, req);
        }
    }
}

fn constraints(node: &Value) -> String {
    let mut parts = Vec::new();
    let items = node.get("items");
    for (key, label) in [("minimum", "≥"), ("maximum", "≤")] {
        if let Some(v) = node.get(key).or_else(|| items.and_then(|i| i.get(key))) {
            parts.push(format!("{label} {}", number(v)));
        }
    }
    for (key, label) in [("minItems", "min items"), ("maxItems", "max items")] {
        if let Some(v) = node.get(key) {
            parts.push(format!("{label} {v}"));
        }
    }
    for (key, label) in [("minLength", "min length"), ("maxLength", "max length")] {
        if let Some(v) = node.get(key).or_else(|| items.and_then(|i| i.get(key))) {
            parts.push(format!("{label} {v}"));
        }
    }
    if let Some(Value::Array(values)) = node.get("enum") {
        parts.push(format!(
            "one of {}",
            values.iter().map(|v| format!("`{}`", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(p) = node.get("pattern").and_then(Value::as_str) {
        parts.push(format!("pattern `` {} ``", p.replace('|', "\\|")));
    }
    match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => parts.push("unique items".into()),
        Some("map") => parts.push("unique `model`".into()),
        _ => {}
    }
    parts.join("; ")
}

fn collect_cel(out: &mut String, path: &str, node: &Value) {
    if let Some(Value::Array(rules)) = node.get("x-kubernetes-validations") {
        for rule in rules {
            let _ = writeln!(
                out,
                "- `{path}`: {} (`{}`)",
                rule.get("message").and_then(Value::as_str).unwrap_or_default(),
                rule.get("rule").and_then(Value::as_str).unwrap_or_default()
            );
        }
    }
    let (children, prefix) = match node.get("type").and_then(Value::as_str) {
        Some("array") => (node.pointer("/items/properties"), format!("{path}[]")),
        _ => (node.get("properties"), path.to_string()),
    };
    if let Some(Value::Object(props)) = children {
        for (name, child) in props {
            collect_cel(out, &format!("{prefix}.{name}"), child);
        }
    }
}

fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => v.to_string(),
    }
}
