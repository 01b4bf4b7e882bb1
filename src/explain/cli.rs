//! The `routerpolicy explain` command: its flags, which shell answers, and the exit code.

use std::path::PathBuf;

use crate::explain::model::{Explanation, Observed, explain};
use crate::explain::subject::Subject;
use crate::explain::{live, offline, text};
use crate::key::PolicyKey;

/// Examples shown by `explain --help`.
pub const EXAMPLES: &str = "\
Examples:
  # What team-a/avatars is, where it is written, and which gateway replicas serve it
  routerpolicy explain team-a/avatars

  # May team-b's app use it? (exit code 1 when it may not)
  routerpolicy explain team-a/avatars --as system:serviceaccount:team-b:app

  # The same, before merging: from the manifests of a pull request, no cluster
  routerpolicy explain -f policies/ team-a/avatars --as team-b/app

  # As a kubectl plugin (the binary installed as kubectl-routerpolicy)
  kubectl routerpolicy explain avatars -n team-a --context prod -o json

Exit codes: 0 answered (and --as is allowed), 1 --as is refused, 2 usage, reading or API error.";

/// `routerpolicy explain`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExplainArgs {
    /// The policy: NAMESPACE/NAME, or NAME in the namespace of -n (else of the kubeconfig's
    /// context, else `default`).
    #[arg(value_name = "NAMESPACE/NAME")]
    pub policy: String,
    /// Judge this caller: system:serviceaccount:NS:SA or NS/SA.
    #[arg(long = "as", value_name = "SUBJECT")]
    pub as_subject: Option<String>,
    /// Output format (the JSON shape is documented in docs/explain.md).
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: ExplainFormat,
    /// Include the documents (the current one, and any other a target holds).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub show_document: bool,
    /// Answer from these manifests (files, directories or -) instead of a cluster.
    #[arg(short = 'f', long = "filename")]
    pub paths: Vec<PathBuf>,
    /// The namespace of NAME, and of manifests without metadata.namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The kubeconfig file (else $KUBECONFIG, ~/.kube/config or the in-cluster config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
}

/// How `explain` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExplainFormat {
    /// One screen for people.
    Text,
    /// The documented JSON shape.
    Json,
}

/// Runs the command: prints the answer, or an error on stderr. Returns the exit code.
pub fn run(args: &ExplainArgs) -> u8 {
    let subject = match args.as_subject.as_deref().map(Subject::parse).transpose() {
        Ok(subject) => subject,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let observed = if args.paths.is_empty() { observe_live(args) } else { observe_offline(args) };
    let observed = match observed {
        Ok(observed) => observed,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let explanation = explain(&observed, subject.as_ref(), args.show_document);
    print!("{}", render(&explanation, args.output));
    match &explanation.caller {
        Some(caller) if !caller.allowed => 1,
        _ => 0,
    }
}

/// The explanation as `format` prints it.
pub fn render(explanation: &Explanation, format: ExplainFormat) -> String {
    match format {
        ExplainFormat::Text => text::format(explanation),
        ExplainFormat::Json => serde_json::to_string_pretty(explanation).unwrap_or_default() + "\n",
    }
}

/// `NAMESPACE/NAME`, or `NAME` in `namespace`.
pub fn policy_key(policy: &str, namespace: &str) -> Result<PolicyKey, String> {
    let (ns, name) = policy.split_once('/').unwrap_or((namespace, policy));
    let key = PolicyKey::parse(&format!("{ns}.{name}"))
        .map_err(|e| format!("{policy:?} does not name a policy (NAMESPACE/NAME or NAME): {e}"))?;
    if *key.name != *name {
        return Err(format!("{policy:?} does not name a policy (NAMESPACE/NAME or NAME)"));
    }
    Ok(key)
}

fn observe_offline(args: &ExplainArgs) -> Result<Observed, String> {
    let namespace = args.namespace.clone().unwrap_or_else(|| "default".into());
    let key = policy_key(&args.policy, &namespace)?;
    let docs = crate::manifests::load(&args.paths).map_err(|e| e.to_string())?;
    offline::observe(&docs, &crate::crd::openapi_schema(), &namespace, &key)
}

fn observe_live(args: &ExplainArgs) -> Result<Observed, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let connection = live::Connection { kubeconfig: args.kubeconfig.clone(), context: args.context.clone() };
        let (client, context_namespace) = live::client(&connection).await.map_err(|e| e.to_string())?;
        let namespace = args.namespace.clone().unwrap_or(context_namespace);
        let key = policy_key(&args.policy, &namespace)?;
        live::observe(&client, &key).await.map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_is_named_with_or_without_its_namespace() {
        assert_eq!(policy_key("team-a/avatars", "x"), Ok(PolicyKey::new("team-a", "avatars")));
        assert_eq!(policy_key("avatars", "team-b"), Ok(PolicyKey::new("team-b", "avatars")));
        assert!(policy_key("team-a/", "x").is_err());
        assert!(policy_key("Team/avatars", "x").is_err());
        assert!(policy_key("a/b/c", "x").is_err());
    }
}
