//! The verdicts as `validate` prints them: text, JSON or GitHub annotations. Pure.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::check::Checked;

/// Output format of `validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per finding.
    Text,
    /// One JSON object with every result.
    Json,
    /// GitHub Actions workflow annotations.
    Github,
}

/// Formats the results of `validate`.
pub fn format_results(results: &[Checked], format: Format) -> String {
    let mut out = String::new();
    let invalid = results.iter().filter(|r| !r.findings.is_valid()).count();
    let checked = results.iter().filter(|r| !r.skipped).count();
    match format {
        Format::Text => {
            for r in results {
                if r.skipped {
                    let _ = writeln!(
                        out,
                        "{}: skipped {} {} (not an ImageVariationPolicy)",
                        r.origin,
                        kind_or_unknown(&r.kind),
                        r.object
                    );
                    continue;
                }
                let subject =
                    if r.kind.is_empty() { String::new() } else { format!(" ImageVariationPolicy {}:", r.object) };
                if r.findings.is_valid() {
                    let _ = writeln!(out, "{}:{subject} valid", r.origin);
                }
                for e in &r.findings.errors {
                    let _ = writeln!(out, "{}:{subject} error: {e}", r.origin);
                }
                for w in &r.findings.warnings {
                    let _ = writeln!(out, "{}:{subject} warning: {w}", r.origin);
                }
            }
            let _ = writeln!(out, "{checked} policies checked, {invalid} invalid");
        }
        Format::Json => {
            let items: Vec<Value> = results
                .iter()
                .map(|r| {
                    json!({
                        "file": r.origin.file,
                        "document": r.origin.document,
                        "kind": r.kind,
                        "object": r.object,
                        "skipped": r.skipped,
                        "valid": r.findings.is_valid(),
                        "errors": r.findings.errors.iter().map(|v| json!({"path": v.path, "message": v.message})).collect::<Vec<_>>(),
                        "warnings": r.findings.warnings.iter().map(|v| json!({"path": v.path, "message": v.message})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let doc = json!({"checked": checked, "invalid": invalid, "results": items});
            out = serde_json::to_string_pretty(&doc).unwrap_or_default();
            out.push('\n');
        }
        Format::Github => {
            for r in results.iter().filter(|r| !r.skipped) {
                for (level, list) in [("error", &r.findings.errors), ("warning", &r.findings.warnings)] {
                    for v in list.iter() {
                        let _ = writeln!(
                            out,
                            "::{level} file={},title=ImageVariationPolicy {} (document {})::{}",
                            escape_property(&r.origin.file),
                            escape_property(&r.object),
                            r.origin.document,
                            escape_data(&v.to_string())
                        );
                    }
                }
            }
            let _ = writeln!(out, "{checked} policies checked, {invalid} invalid");
        }
    }
    out
}

fn kind_or_unknown(kind: &str) -> &str {
    if kind.is_empty() { "document without kind" } else { kind }
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}
