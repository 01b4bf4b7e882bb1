//! Unquoted YAML 1.1 boolean words. Pure.
//!
//! `kubectl apply -f` reads YAML 1.1, where a plain (unquoted) `yes`, `no`, `on`, `off`, `y`
//! or `n` is a boolean: `spec.name: off` reaches the API server as `false` and is refused
//! ("must be of type string"). `routerpolicy validate` reads YAML 1.2, where the same words
//! are strings. [`unquoted_boolean_words`] finds them, with their field paths, so `validate`
//! can refuse what `kubectl apply -f` refuses. (Helm decodes the same YAML 1.1 way; kustomize
//! reads YAML 1.2 and quotes such strings in its output; see the README's GitOps section.)

use std::collections::BTreeMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Plain scalars that YAML 1.1 reads as booleans but YAML 1.2 reads as strings. (`true`,
/// `false` and their capitalised forms are booleans in both.)
pub const YAML11_ONLY_BOOLEANS: [&str; 16] =
    ["y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF"];

/// One unquoted YAML 1.1 boolean word in a value position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BooleanWord {
    /// Field path in the API server's notation, e.g. `spec.identity.tags[1]`.
    pub path: String,
    /// The same place as a JSON pointer, e.g. `/spec/identity/tags/1`.
    pub pointer: String,
    /// The word as written.
    pub word: String,
}

enum Segment {
    Key(String),
    Index(usize),
}

enum Frame {
    Map { key: Option<String> },
    Seq { next: usize },
}

#[derive(Default)]
struct Finder {
    document: usize,
    frames: Vec<Frame>,
    path: Vec<Segment>,
    found: BTreeMap<usize, Vec<BooleanWord>>,
}

impl Finder {
    /// The segment of the value about to be read in the current frame, if it is a value.
    fn value_segment(&self) -> Option<Segment> {
        match self.frames.last()? {
            Frame::Map { key: Some(k) } => Some(Segment::Key(k.clone())),
            Frame::Map { key: None } => None,
            Frame::Seq { next } => Some(Segment::Index(*next)),
        }
    }

    /// A value (scalar, alias or whole collection) was read in the current frame.
    fn advance(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Map { key }) => *key = None,
            Some(Frame::Seq { next }) => *next += 1,
            None => {}
        }
    }

    fn pointer(path: &[Segment], last: &Segment) -> String {
        let mut out = String::new();
        for segment in path.iter().chain(std::iter::once(last)) {
            out.push('/');
            match segment {
                Segment::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
                Segment::Index(i) => out.push_str(&i.to_string()),
            }
        }
        out
    }

    fn render(path: &[Segment], last: &Segment) -> String {
        let mut out = String::new();
        for segment in path.iter().chain(std::iter::once(last)) {
            match segment {
                Segment::Key(k) if out.is_empty() => out.push_str(k),
                Segment::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

impl MarkedEventReceiver for Finder {
    fn on_event(&mut self, event: Event, _mark: Marker) {
        match event {
            Event::DocumentStart => {
                self.document += 1;
                self.frames.clear();
                self.path.clear();
            }
            Event::Scalar(value, style, _, _) => match self.value_segment() {
                None => {
                    if let Some(Frame::Map { key }) = self.frames.last_mut() {
                        *key = Some(value);
                    }
                }
                Some(segment) => {
                    if style == TScalarStyle::Plain && YAML11_ONLY_BOOLEANS.contains(&value.as_str()) {
                        let path = Self::render(&self.path, &segment);
                        let pointer = Self::pointer(&self.path, &segment);
                        self.found.entry(self.document).or_default().push(BooleanWord { path, pointer, word: value });
                    }
                    self.advance();
                }
            },
            Event::Alias(_) if self.value_segment().is_some() => self.advance(),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if let Some(segment) = self.value_segment() {
                    self.path.push(segment);
                } else if !self.frames.is_empty() {
                    // A collection as a mapping key: not a value; keep the path balanced.
                    self.path.push(Segment::Key(String::from("?")));
                }
                self.frames.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Map { key: None }
                } else {
                    Frame::Seq { next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.frames.pop();
                if !self.frames.is_empty() {
                    self.path.pop();
                    self.advance();
                }
            }
            _ => {}
        }
    }
}

/// The unquoted YAML 1.1 boolean words of every document of `text`, by 1-based document
/// number. A text that does not parse yields what was found before the error.
pub fn unquoted_boolean_words(text: &str) -> BTreeMap<usize, Vec<BooleanWord>> {
    let mut finder = Finder::default();
    let _ = Parser::new_from_str(text).load(&mut finder, true);
    finder.found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<(usize, String, String)> {
        unquoted_boolean_words(text)
            .into_iter()
            .flat_map(|(doc, found)| {
                found.into_iter().map(move |w| {
                    assert_eq!(
                        w.pointer.trim_start_matches('/').replace('/', "."),
                        w.path.replace('[', ".").replace(']', "")
                    );
                    (doc, w.path, w.word)
                })
            })
            .collect()
    }

    #[test]
    fn plain_words_in_values_are_found_with_their_paths() {
        let text = "spec:\n  name: off\n  identity:\n    tags: [a, no, 'on', \"yes\"]\n    metadata:\n    - {k: Y}\n";
        assert_eq!(
            words(text),
            [
                (1, "spec.name".to_string(), "off".to_string()),
                (1, "spec.identity.tags[1]".to_string(), "no".to_string()),
                (1, "spec.identity.metadata[0].k".to_string(), "Y".to_string()),
            ]
        );
    }

    #[test]
    fn keys_quoted_words_and_yaml12_booleans_are_not_reported() {
        assert!(words("on: x\nspec: {name: 'off', flag: true, other: \"no\"}\n").is_empty());
    }

    #[test]
    fn documents_are_numbered_like_the_manifest_loader() {
        let text = "a: 1\n---\nb: [x, [z, off]]\n---\nc: {d: n}\n";
        assert_eq!(
            words(text),
            [(2, "b[1][1]".to_string(), "off".to_string()), (3, "c.d".to_string(), "n".to_string())]
        );
    }
}
