//! The `routerpolicy` binary: `run`, `gateway`, `crd`, `validate`, `render`, `explain`.
//!
//! Thin: parse arguments, set up logging, call the library, map results to exit codes
//! (0 fine, 1 invalid input or failure, 2 usage or I/O error).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use routerpolicy::manifests::{self, Format};
use routerpolicy::operator::runtime::RunOptions;

/// An example policy rendered by `routerpolicy render` when no file is given.
const EMBEDDED_EXAMPLE: &str = include_str!("../examples/full.yaml");

#[derive(Parser, Debug)]
#[command(
    name = "routerpolicy",
    version,
    about = "Validate ImageVariationPolicy resources and sync them into gateway ConfigMaps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller against the cluster of the current kubeconfig (or in-cluster config).
    Run(RunOptions),
    /// Run the reference gateway: a proxy for orq's image-variation endpoint that puts each
    /// team's policy document (from the mounted gateway ConfigMap) on its requests.
    Gateway(Box<routerpolicy::gateway::GatewayOptions>),
    /// Print the CustomResourceDefinition YAML (the source of crds/).
    Crd,
    /// Check manifests offline against the CRD schema and every rule; exit 1 if any is invalid.
    Validate {
        /// Files, directories (recursive) or - for stdin.
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Format,
        /// Namespace for manifests without metadata.namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Unquoted YAML 1.1 boolean words (`off`, `yes`, …) in string fields: `kubectl apply -f`
        /// and Helm read them as booleans and refuse them; kustomize keeps them as strings.
        #[arg(long, value_enum, default_value = "error")]
        unquoted_booleans: manifests::BooleanWords,
    },
    /// Print the gateway ConfigMaps the operator would write for the given manifests.
    Render {
        /// Files, directories (recursive) or - for stdin; without it, a built-in example.
        #[arg(short = 'f', long = "filename")]
        paths: Vec<PathBuf>,
        /// Namespace for manifests without metadata.namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Output format: a multi-document YAML stream, or one JSON `List`.
        #[arg(short = 'o', long, value_enum, default_value = "yaml")]
        output: OutputFormat,
    },
    /// Explain a policy: its document, each target ConfigMap and gateway replica that serves
    /// it, and whether a ServiceAccount may use it (from the cluster, or offline with -f).
    #[command(after_help = routerpolicy::explain::cli::EXAMPLES)]
    Explain(routerpolicy::explain::cli::ExplainArgs),
    /// Print a shell completion script: `source <(routerpolicy completions bash)`, or save it
    /// where your shell loads completions (zsh: a `_routerpolicy` file on `$fpath`; fish:
    /// `~/.config/fish/completions/routerpolicy.fish`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// How `render` prints the ConfigMaps.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum OutputFormat {
    /// Multi-document YAML (`---` between ConfigMaps).
    Yaml,
    /// One JSON `v1` `List` of the ConfigMaps.
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match cli.command {
        Command::Crd => {
            print!("{}", routerpolicy::crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Validate { paths, output, namespace, unquoted_booleans } => {
            let docs = match manifests::load(&paths) {
                Ok(docs) => docs,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let schema = routerpolicy::crd::openapi_schema();
            let results: Vec<_> = docs
                .iter()
                .map(|d| manifests::check_document_with(d, &schema, &namespace, unquoted_booleans))
                .collect();
            print!("{}", manifests::format_results(&results, output));
            if results.iter().any(|r| !r.findings.is_valid()) { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Command::Explain(args) => ExitCode::from(routerpolicy::explain::cli::run(&args)),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "routerpolicy", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Render { paths, namespace, output } => {
            let docs = if paths.is_empty() {
                eprintln!("note: no -f given; rendering the built-in example (examples/full.yaml)");
                manifests::parse_documents("<built-in example>", EMBEDDED_EXAMPLE)
            } else {
                match manifests::load(&paths) {
                    Ok(docs) => docs,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                }
            };
            let rendered = manifests::render_configmaps(&docs, &routerpolicy::crd::openapi_schema(), &namespace);
            match output {
                OutputFormat::Yaml => print!("{}", rendered.yaml),
                OutputFormat::Json => print!("{}", rendered.json()),
            }
            for note in &rendered.notes {
                eprintln!("note: {note}");
            }
            if rendered.any_invalid { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Command::Gateway(options) => {
            routerpolicy::process::init_logging(options.log_format, &options.log_level);
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if options.worker_threads > 0 {
                runtime.worker_threads(options.worker_threads);
            }
            serve(runtime, routerpolicy::gateway::runtime::run(*options), routerpolicy::gateway::GatewayError::hint)
        }
        Command::Run(options) => {
            routerpolicy::process::init_logging(options.log_format, &options.log_level);
            // One thread: the operator waits on the API server, not on CPU, and a single thread
            // allocates from a single heap, which keeps a large index compact (docs/scaling.md).
            let runtime = tokio::runtime::Builder::new_current_thread();
            serve(
                runtime,
                routerpolicy::operator::runtime::run(options),
                routerpolicy::operator::runtime::RunError::hint,
            )
        }
    }
}

/// Runs a long-lived command (`run`, `gateway`) on the runtime `builder` describes; its error,
/// with a hint where one helps, is exit code 1.
fn serve<E: std::fmt::Display>(
    mut builder: tokio::runtime::Builder,
    command: impl std::future::Future<Output = Result<(), E>>,
    hint: fn(&E) -> Option<&'static str>,
) -> ExitCode {
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(1)
        }
    }
}
