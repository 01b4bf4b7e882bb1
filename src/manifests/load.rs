//! Loading: files, directories (recursively, `*.yaml`, `*.yml`, `*.json`) and stdin (`-`),
//! split into documents (multi-document YAML). The only I/O of the offline CLI.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// Where a document came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// File path, or `<stdin>`.
    pub file: String,
    /// 1-based index of the document in the file.
    pub document: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.file, self.document)
    }
}

/// One parsed document, or why it could not be parsed.
#[derive(Clone, Debug)]
pub struct Document {
    /// Where it came from.
    pub origin: Origin,
    /// Its content, or the YAML error.
    pub value: Result<Value, String>,
    /// Unquoted YAML 1.1 boolean words in it (`off`, `yes`, …), which `kubectl apply -f` reads
    /// as booleans.
    pub boolean_words: Vec<crate::yaml11::BooleanWord>,
}

impl Document {
    /// A document with a value already parsed (no YAML source to inspect).
    pub fn from_value(origin: Origin, value: Value) -> Self {
        Document { origin, value: Ok(value), boolean_words: Vec::new() }
    }
}

/// Reading the inputs failed (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct LoadError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// Reads every document from `paths` (files, directories, `-` for stdin).
pub fn load(paths: &[PathBuf]) -> Result<Vec<Document>, LoadError> {
    let mut docs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| LoadError { path: "<stdin>".into(), source })?;
            docs.extend(parse_documents("<stdin>", &text));
            continue;
        }
        for file in files_under(path)? {
            let text = std::fs::read_to_string(&file)
                .map_err(|source| LoadError { path: file.display().to_string(), source })?;
            docs.extend(parse_documents(&file.display().to_string(), &text));
        }
    }
    Ok(docs)
}

fn files_under(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let meta = std::fs::metadata(path).map_err(|source| LoadError { path: path.display().to_string(), source })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .map_err(|source| LoadError { path: path.display().to_string(), source })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            out.extend(files_under(&entry)?);
        } else if matches!(entry.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Splits a multi-document YAML text into documents (empty documents are skipped).
pub fn parse_documents(file: &str, text: &str) -> Vec<Document> {
    let mut out = Vec::new();
    let mut words = crate::yaml11::unquoted_boolean_words(text);
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let origin = Origin { file: file.to_string(), document: i + 1 };
        let boolean_words = words.remove(&(i + 1)).unwrap_or_default();
        match Value::deserialize(de) {
            Ok(Value::Null) => {}
            Ok(value) => out.push(Document { origin, value: Ok(value), boolean_words }),
            Err(e) => {
                out.push(Document { origin, value: Err(format!("not valid YAML: {e}")), boolean_words });
                // The parser cannot resume after a syntax error.
                break;
            }
        }
    }
    out
}
