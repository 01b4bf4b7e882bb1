//! `explain -o text`: the explanation on one screen, for people. Pure.

use std::fmt::Write as _;

use serde_json::Value;

use crate::explain::model::{Explanation, ReplicaView, Serves, TargetView};

/// The explanation as text.
pub fn format(e: &Explanation) -> String {
    let mut out = String::new();
    policy(&mut out, e);
    if let Some(caller) = &e.caller {
        let verdict = if caller.allowed { "allowed" } else { "REFUSED (403 forbidden)" };
        let _ = writeln!(out, "\nCaller {}: {verdict}\n  {}", caller.subject, caller.reason);
    }
    let _ = writeln!(out, "\nTargets");
    for target in &e.targets {
        target_lines(&mut out, target, e.policy.document.as_ref());
    }
    let r = &e.request;
    let _ =
        writeln!(out, "\nRequest\n  {} {}\n  {}: {}\n\n{}", r.method, r.path, r.header, r.value, indent(&r.example, 2));
    if let Some(document) = &e.policy.document {
        let _ = writeln!(out, "\nDocument (current, what orq receives as `orq`)\n{}", indent(&pretty(document), 2));
    }
    if !e.notes.is_empty() {
        let _ = writeln!(out, "\nNotes");
        for note in &e.notes {
            let _ = writeln!(out, "  - {note}");
        }
    }
    out
}

fn policy(out: &mut String, e: &Explanation) {
    let p = &e.policy;
    let _ = write!(out, "Policy {}/{}", p.namespace, p.name);
    if let Some(generation) = p.generation {
        let observed = p.observed_generation.map_or("not yet observed".to_string(), |g| format!("observed {g}"));
        let _ = write!(out, "  generation {generation} ({observed})");
    }
    let hash = p.hash.as_deref().unwrap_or("none: the spec is invalid");
    let _ = writeln!(out, "  hash {hash}");
    if let Some(reported) = p.config_hash.as_deref().filter(|h| Some(*h) != p.hash.as_deref()) {
        let _ = writeln!(out, "  configHash (status) {reported}");
    }
    for c in &p.conditions {
        let _ = writeln!(out, "  {:<12} {:<8} {:<20} {}", c.type_, c.status, c.reason, c.message);
    }
    if !p.valid {
        let _ = writeln!(out, "  INVALID: nothing new is written; the last good document stays where there is one");
    }
    for f in &p.errors {
        let _ = writeln!(out, "    error   {}: {}", f.path, f.message);
    }
    for f in &p.warnings {
        let _ = writeln!(out, "    warning {}: {}", f.path, f.message);
    }
}

fn target_lines(out: &mut String, t: &TargetView, current: Option<&Value>) {
    let held = match (&t.error, t.exists, &t.hash) {
        (Some(error), _, _) => format!("cannot be read: {error}"),
        (None, Some(false), _) => "does not exist".to_string(),
        (None, _, None) => "holds nothing for this policy".to_string(),
        (None, _, Some(hash)) if t.current => format!("holds the current document ({hash})"),
        (None, _, Some(hash)) => format!("holds an earlier document ({hash}), not the current one"),
    };
    let _ = writeln!(out, "  {}  key {}", t.config_map, t.key);
    let _ = writeln!(out, "    {held}");
    if let Some(reason) = &t.reason {
        let message = t.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        let _ = writeln!(out, "    operator: {reason}{message}");
    }
    if let Some(document) = t.document.as_ref().filter(|d| Some(*d) != current) {
        let _ = writeln!(out, "    document held there:\n{}", indent(&pretty(document), 6));
    }
    if let Some(error) = &t.replicas_error {
        let _ = writeln!(out, "    replicas: cannot be read: {error}");
    }
    if let Some(replicas) = &t.replicas {
        replica_lines(out, replicas);
    }
}

fn replica_lines(out: &mut String, replicas: &[ReplicaView]) {
    if replicas.is_empty() {
        let _ = writeln!(out, "    replicas: none reports for this ConfigMap");
        return;
    }
    let serving = replicas.iter().filter(|r| r.serves == Serves::Current).count();
    let _ = writeln!(out, "    replicas: {serving}/{} serve the current document", replicas.len());
    for r in replicas {
        let serves = match r.serves {
            Serves::Current => "current",
            Serves::Older => "older",
            Serves::Rejected => "rejected",
            Serves::Stale => "stale",
        };
        let _ = writeln!(out, "      {:<40} {serves:<8} renewed {:>4}s ago  {}", r.name, r.age_seconds, r.reason);
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines().map(|l| format!("{pad}{l}")).collect::<Vec<_>>().join("\n")
}
