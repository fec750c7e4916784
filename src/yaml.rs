//! All YAML loading lives here, so the YAML crate can be swapped in one place
//! (serde_yaml is archived upstream).
//!
//! Typed deserialization goes through serde_yaml, whose errors already carry
//! the key path and position. Errors found later (an undefined template
//! variable on one host, a missing `src` file) need a position too, so
//! [`load`] also returns a [`Locations`] index from key paths such as
//! `[0].tasks[2].copy.dest` to where that key stands in the file.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, Parser};

use crate::error::{Error, Location};

/// Where each key of a YAML document stands, by key path.
#[derive(Debug, Default, Clone)]
pub struct Locations {
    file: String,
    positions: HashMap<String, (usize, usize)>,
}

impl Locations {
    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &str) -> Location {
        let mut probe = path;
        loop {
            if let Some(&(line, column)) = self.positions.get(probe) {
                return Location {
                    file: self.file.clone(),
                    line,
                    column,
                };
            }
            match probe.rfind(['.', '[']) {
                Some(cut) => probe = &probe[..cut],
                None => {
                    return Location {
                        file: self.file.clone(),
                        line: 1,
                        column: 1,
                    };
                }
            }
        }
    }

    /// An input error at `path`, with its position.
    pub fn error(&self, path: &str, message: impl Into<String>) -> Error {
        Error::Yaml {
            location: self.find(path),
            key: path.to_string(),
            message: message.into(),
        }
    }
}

/// Parses `text` (read from `file`, used in messages) as a `T`.
pub fn load<T: DeserializeOwned>(file: &str, text: &str) -> Result<(T, Locations), Error> {
    let value = serde_yaml::from_str::<T>(text).map_err(|err| convert(file, &err))?;
    Ok((value, index(file, text)))
}

fn convert(file: &str, err: &serde_yaml::Error) -> Error {
    let full = err.to_string();
    // serde_yaml renders "PATH: MESSAGE at line L column C"; split that back up.
    let without_position = match full.rfind(" at line ") {
        Some(cut) => &full[..cut],
        None => full.as_str(),
    };
    let (key, message) = match without_position.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && !path.contains(char::is_whitespace) => {
            (path.trim_start_matches('.').to_string(), rest.to_string())
        }
        _ => ("(document)".to_string(), without_position.to_string()),
    };
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    Error::Yaml {
        location: Location {
            file: file.to_string(),
            line,
            column,
        },
        key,
        message,
    }
}

enum Frame {
    Map { path: String, pending_key: bool },
    Seq { path: String, next: usize },
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Builds the key-path index. Best effort: a document serde_yaml accepted is
/// indexed fully; anything odd only makes positions coarser, never an error.
fn index(file: &str, text: &str) -> Locations {
    let mut positions = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut parser = Parser::new_from_str(text);
    // The path a value about to start will have.
    let mut value_path = String::new();
    while let Ok((event, mark)) = parser.next_token() {
        let position = (mark.line(), mark.col() + 1);
        // Decide whether this event is a mapping key, and if not, the path of the value.
        if let Some(Frame::Map { path, pending_key }) = stack.last_mut() {
            if *pending_key {
                if let Event::Scalar(key, ..) = &event {
                    // A block mapping's own marker is unreliable; its first key is where it starts.
                    positions.entry(path.clone()).or_insert(position);
                    value_path = child_path(path, key);
                    positions.entry(value_path.clone()).or_insert(position);
                    *pending_key = false;
                    continue;
                }
            } else {
                *pending_key = true;
            }
        } else if let Some(Frame::Seq { path, next }) = stack.last_mut()
            && !matches!(event, Event::SequenceEnd)
        {
            value_path = format!("{path}[{next}]");
            *next += 1;
            if !matches!(event, Event::MappingStart(..)) {
                positions.entry(value_path.clone()).or_insert(position);
            }
        }
        match event {
            Event::MappingStart(..) => stack.push(Frame::Map {
                path: value_path.clone(),
                pending_key: true,
            }),
            Event::SequenceStart(..) => stack.push(Frame::Seq {
                path: value_path.clone(),
                next: 0,
            }),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                // The container was the value of its parent's key.
                if let Some(Frame::Map { pending_key, .. }) = stack.last_mut() {
                    *pending_key = true;
                }
            }
            Event::StreamEnd => break,
            _ => {}
        }
    }
    Locations {
        file: file.to_string(),
        positions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAYBOOK: &str = "- name: a\n  tasks:\n    - name: x\n      copy:\n        dest: /x\n    - name: y\n      file: {path: /y}\n";

    #[test]
    fn indexes_nested_keys() {
        let locations = index("p.yml", PLAYBOOK);
        assert_eq!(locations.find("[0].tasks[0].copy.dest").line, 5);
        assert_eq!(locations.find("[0].tasks[0].copy.dest").column, 9);
        assert_eq!(locations.find("[0].tasks[1].file.path").line, 7);
        assert_eq!(locations.find("[0].tasks[1].name").line, 6);
        // Unknown leaf falls back to the nearest known ancestor.
        assert_eq!(locations.find("[0].tasks[1].file.mode").line, 7);
    }

    #[test]
    fn serde_errors_keep_key_and_position() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            name: String,
        }
        let err = load::<Vec<T>>("p.yml", "- name: a\n- nmae: b\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("p.yml:2:3: [1]: unknown field `nmae`"),
            "{text}"
        );
    }
}
