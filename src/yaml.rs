//! All YAML loading lives here, so the YAML crate can be swapped in one place
//! (serde_yaml is archived upstream).
//!
//! Typed deserialization goes through serde_yaml, whose errors already carry
//! the key path and position. Errors found later (an undefined template
//! variable on one host, a missing `src` file) need a position too, so
//! [`load`] also returns a [`Locations`] index from key paths such as
//! `[0].tasks[2].copy.dest` to where that key stands in the file.
//!
//! Two things serde_yaml does not do are done here: YAML merge keys
//! (`<<: *anchor`, `<<: [*a, *b]`), which Ansible inventories use a lot, and
//! rejecting a key repeated in one mapping, which serde_yaml lets the last
//! occurrence win silently.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};
use yaml_rust2::parser::{Event, Parser};

use crate::error::{Error, Location};

/// The YAML merge key.
const MERGE: &str = "<<";

/// Where each key of a YAML document stands, by key path.
#[derive(Debug, Default, Clone)]
pub struct Locations {
    file: String,
    /// Where the key stands (a sequence item: where it starts).
    positions: HashMap<String, (usize, usize)>,
    /// Where the value starts, as serde_yaml counts it: a block mapping
    /// starts at its first key.
    values: HashMap<String, (usize, usize)>,
}

impl Locations {
    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &str) -> Location {
        let mut probe = path;
        loop {
            if let Some(&position) = self.positions.get(probe) {
                return self.at(position);
            }
            match probe.rfind(['.', '[']) {
                Some(cut) => probe = &probe[..cut],
                None => return self.at((1, 1)),
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

    fn at(&self, (line, column): (usize, usize)) -> Location {
        Location {
            file: self.file.clone(),
            line,
            column,
        }
    }
}

/// Parses `text` (read from `file`, used in messages) as a `T`.
///
/// A key repeated in one mapping is an error. Merge keys are applied before
/// `T` sees the document; a key written in the mapping wins over a merged
/// one, and of several merged mappings the first that has the key wins.
pub fn load<T: DeserializeOwned>(file: &str, text: &str) -> Result<(T, Locations), Error> {
    let (locations, has_merges) = index(file, text)?;
    // Without merge keys, the text goes to serde_yaml as it is.
    if !has_merges {
        let value = serde_yaml::from_str::<T>(text).map_err(|err| convert(file, &err))?;
        return Ok((value, locations));
    }
    let mut document: Value = serde_yaml::from_str(text).map_err(|err| convert(file, &err))?;
    apply_merges(&mut document, "", &locations)?;
    // Deserializing `T` from a `Value` would lose serde_yaml's positions and
    // its leniency (a plain `8080` is a fine `String` in text, not in a
    // `Value`), so the merged document goes back through text; errors are
    // then mapped back to the original file through both indexes. The one
    // loss: numbers come back spelled canonically, so in a document with
    // merges a plain `1.10` given for a string field reads as `1.1`.
    let merged = serde_yaml::to_string(&document).map_err(|err| Error::Invalid {
        file: file.to_string(),
        key: "(document)".into(),
        message: err.to_string(),
    })?;
    let value = serde_yaml::from_str::<T>(&merged)
        .map_err(|err| relocate(convert(file, &err), &merged, &locations))?;
    Ok((value, locations))
}

/// Applies the merge keys under `value` (at key path `path`), innermost first,
/// so a merged mapping's own merges are already done. Merged keys take the
/// place of the `<<` key, in order; keys the mapping itself has are kept.
fn apply_merges(value: &mut Value, path: &str, locations: &Locations) -> Result<(), Error> {
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                apply_merges(item, &format!("{path}[{i}]"), locations)?;
            }
        }
        Value::Tagged(tagged) => apply_merges(&mut tagged.value, path, locations)?,
        Value::Mapping(mapping) => {
            for (key, child) in mapping.iter_mut() {
                apply_merges(child, &child_path(path, &key_text(key)), locations)?;
            }
            if !mapping.contains_key(MERGE) {
                return Ok(());
            }
            let merge_at = child_path(path, MERGE);
            let explicit: Vec<Value> = mapping.keys().cloned().collect();
            let mut merged = Mapping::with_capacity(mapping.len());
            for (key, child) in std::mem::take(mapping) {
                if key.as_str() != Some(MERGE) {
                    merged.insert(key, child);
                    continue;
                }
                let sources = match child {
                    Value::Mapping(source) => vec![source],
                    Value::Sequence(items) => items
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| match item {
                            Value::Mapping(source) => Ok(source),
                            _ => Err(locations.error(
                                &format!("{merge_at}[{i}]"),
                                "a merge list holds mappings only, such as `*anchor`",
                            )),
                        })
                        .collect::<Result<_, _>>()?,
                    _ => {
                        return Err(locations.error(
                            &merge_at,
                            "`<<` merges a mapping or a list of mappings, such as `*anchor` or `[*a, *b]`",
                        ));
                    }
                };
                for source in sources {
                    for (key, child) in source {
                        if !explicit.contains(&key) && !merged.contains_key(&key) {
                            merged.insert(key, child);
                        }
                    }
                }
            }
            *mapping = merged;
        }
        _ => {}
    }
    Ok(())
}

/// A mapping key as the index spells it in key paths.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        Value::Null => "~".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim_end()
            .to_string(),
    }
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

/// Moves an error found in the merged text (`merged`) to the original file.
///
/// The position serde_yaml gives is a key's when the message names a key
/// standing there in the merged text (an unknown field), else the value's at
/// the error's key path. The original index says where that key or value is
/// written: in the mapping for its own keys, in the merged mapping for the
/// keys merged in.
fn relocate(err: Error, merged: &str, locations: &Locations) -> Error {
    let Error::Yaml {
        location,
        key,
        message,
    } = err
    else {
        return err;
    };
    let path = if key == "(document)" { "" } else { &key };
    let spot = (location.line, location.column);
    let Ok((here, _)) = index(&location.file, merged) else {
        return locations.error(path, message);
    };
    let named_key = here.positions.iter().find(|&(child, &at)| {
        at == spot
            && key_name(child, path).is_some_and(|name| message.contains(&format!("`{name}`")))
    });
    let position = match named_key {
        Some((child, _)) => locations.positions.get(child.as_str()),
        None => locations.values.get(path),
    };
    Error::Yaml {
        location: position.map_or_else(|| locations.find(path), |&p| locations.at(p)),
        key,
        message,
    }
}

/// The key `child` (a key path) has in `parent`, if it is a key of `parent`.
fn key_name<'a>(child: &'a str, parent: &str) -> Option<&'a str> {
    if parent.is_empty() {
        Some(child)
    } else {
        child.strip_prefix(parent)?.strip_prefix('.')
    }
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// A line and a column, both from 1.
type Position = (usize, usize);

/// How many nodes aliases may copy into the index, so an alias bomb cannot
/// exhaust memory here (serde_yaml refuses one itself).
const ALIAS_BUDGET: usize = 100_000;

/// A node of the document and where it is written.
#[derive(Debug, Clone)]
struct Node {
    /// Where it stands: its key in a mapping; otherwise where it starts, a
    /// mapping at its first key.
    at: Position,
    /// Where its value starts; a block mapping at its first key, as
    /// serde_yaml counts.
    value_at: Position,
    /// Nodes in this subtree, itself included.
    size: usize,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    Scalar,
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
}

/// A mapping or sequence whose end is still to come.
struct Open {
    node: Node,
    path: String,
    anchor: usize,
    /// Whether this is the value of a mapping key (else it starts at its
    /// first key, when it is a mapping).
    keyed: bool,
    /// Whether this is itself a mapping key: indexed as nothing.
    is_key: bool,
    /// In a mapping, the key just read: its text and position, or `None`
    /// as text for a key that is not a scalar (indexed as nothing).
    key: Option<(Option<String>, Position)>,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    has_merges: bool,
    budget: usize,
}

impl Builder {
    fn expects_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Open {
                node: Node {
                    body: Body::Map(_),
                    ..
                },
                key: None,
                ..
            })
        )
    }

    /// A mapping key; an error when the mapping already has it.
    fn key(&mut self, text: Option<String>, position: Position, file: &str) -> Result<(), Error> {
        let Some(open) = self.stack.last_mut() else {
            return Ok(());
        };
        let Body::Map(entries) = &open.node.body else {
            return Ok(());
        };
        if entries.is_empty() {
            open.node.value_at = open.node.value_at.min(position);
            if !open.keyed {
                open.node.at = position;
            }
        }
        if let Some(name) = &text
            && let Some((_, first)) = entries.iter().find(|(key, _)| key == name)
        {
            return Err(Error::Yaml {
                location: Location {
                    file: file.to_string(),
                    line: position.0,
                    column: position.1,
                },
                key: child_path(&open.path, name),
                message: format!("duplicate key `{name}` (first at line {})", first.at.0),
            });
        }
        open.key = Some((text, position));
        Ok(())
    }

    /// The path the next value will have.
    fn next_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Open {
                path, node, key, ..
            }) => match (&node.body, key) {
                (Body::Seq(items), _) => format!("{path}[{}]", items.len()),
                (_, Some((Some(name), _))) => child_path(path, name),
                _ => format!("{path}.?"),
            },
        }
    }

    fn open(&mut self, body: Body, anchor: usize, position: Position, is_key: bool) {
        let keyed = matches!(self.stack.last(), Some(Open { key: Some(_), .. }));
        let path = self.next_path();
        let node = Node {
            at: position,
            value_at: position,
            size: 1,
            body,
        };
        self.stack.push(Open {
            node,
            path,
            anchor,
            keyed,
            is_key,
            key: None,
        });
    }

    fn close(&mut self) {
        let Some(Open {
            mut node,
            anchor,
            is_key,
            ..
        }) = self.stack.pop()
        else {
            return;
        };
        if is_key {
            return;
        }
        if let Body::Map(entries) = &mut node.body {
            self.has_merges |= merge_entries(entries);
        }
        node.size = 1 + match &node.body {
            Body::Map(entries) => entries.iter().map(|(_, n)| n.size).sum(),
            Body::Seq(items) => items.iter().map(|n| n.size).sum(),
            Body::Scalar => 0,
        };
        self.value(node, anchor);
    }

    /// A complete node: the value of the pending key, or the next item.
    fn value(&mut self, mut node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some(open) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        match &mut open.node.body {
            Body::Seq(items) => {
                if items.is_empty() {
                    open.node.value_at = open.node.value_at.min(node.value_at);
                }
                items.push(node);
            }
            Body::Map(entries) => {
                if let Some((Some(name), at)) = open.key.take() {
                    node.at = at;
                    entries.push((name, node));
                }
            }
            Body::Scalar => {}
        }
    }

    fn alias(&mut self, id: usize, position: Position) {
        let mut node = match self.anchors.get(&id) {
            Some(anchored) if anchored.size <= self.budget => {
                self.budget -= anchored.size;
                anchored.clone()
            }
            _ => Node {
                at: position,
                value_at: position,
                size: 1,
                body: Body::Scalar,
            },
        };
        node.at = position;
        self.value(node, 0);
    }
}

/// Applies a mapping's merge key to its index entries, as [`apply_merges`]
/// does to the document; says whether there was one. The `<<` entry stays,
/// so errors about the merge itself have a place.
fn merge_entries(entries: &mut Vec<(String, Node)>) -> bool {
    let Some((_, merge)) = entries.iter().find(|(key, _)| key == MERGE) else {
        return false;
    };
    let sources = match &merge.body {
        Body::Seq(items) => items.clone(),
        _ => vec![merge.clone()],
    };
    for source in sources {
        if let Body::Map(merged) = source.body {
            for (key, node) in merged {
                if key != MERGE && !entries.iter().any(|(have, _)| *have == key) {
                    entries.push((key, node));
                }
            }
        }
    }
    true
}

/// Builds the key-path index, and says whether the document uses merge keys.
/// A key repeated in one mapping is an error; otherwise best effort: a
/// document serde_yaml accepts is indexed fully, anything odd only makes
/// positions coarser.
fn index(file: &str, text: &str) -> Result<(Locations, bool), Error> {
    let mut builder = Builder {
        budget: ALIAS_BUDGET,
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(text);
    while let Ok((event, mark)) = parser.next_token() {
        let position = (mark.line(), mark.col() + 1);
        let expects_key = builder.expects_key();
        match event {
            Event::Scalar(text, _, anchor, _) => {
                if expects_key {
                    builder.key(Some(text), position, file)?;
                } else {
                    let node = Node {
                        at: position,
                        value_at: position,
                        size: 1,
                        body: Body::Scalar,
                    };
                    builder.value(node, anchor);
                }
            }
            Event::Alias(_) if expects_key => builder.key(None, position, file)?,
            Event::Alias(id) => builder.alias(id, position),
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) if expects_key => {
                // A key that is a mapping or a sequence: indexed as nothing.
                builder.key(None, position, file)?;
                let body = if matches!(event, Event::MappingStart(..)) {
                    Body::Map(Vec::new())
                } else {
                    Body::Seq(Vec::new())
                };
                builder.open(body, anchor, position, true);
            }
            Event::MappingStart(anchor, _) => {
                builder.open(Body::Map(Vec::new()), anchor, position, false)
            }
            Event::SequenceStart(anchor, _) => {
                builder.open(Body::Seq(Vec::new()), anchor, position, false)
            }
            Event::MappingEnd | Event::SequenceEnd => builder.close(),
            Event::StreamEnd => break,
            _ => {}
        }
    }
    let mut locations = Locations {
        file: file.to_string(),
        ..Locations::default()
    };
    if let Some(root) = &builder.root {
        flatten(root, String::new(), &mut locations);
    }
    Ok((locations, builder.has_merges))
}

fn flatten(node: &Node, path: String, locations: &mut Locations) {
    match &node.body {
        Body::Map(entries) => {
            for (key, child) in entries {
                flatten(child, child_path(&path, key), locations);
            }
        }
        Body::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(item, format!("{path}[{i}]"), locations);
            }
        }
        Body::Scalar => {}
    }
    locations
        .values
        .entry(path.clone())
        .or_insert(node.value_at);
    locations.positions.entry(path).or_insert(node.at);
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAYBOOK: &str = "- name: a\n  tasks:\n    - name: x\n      copy:\n        dest: /x\n    - name: y\n      file: {path: /y}\n";

    #[test]
    fn indexes_nested_keys() {
        let (locations, _) = index("p.yml", PLAYBOOK).unwrap();
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

    fn json(text: &str) -> serde_json::Value {
        load::<serde_json::Value>("m.yml", text).unwrap().0
    }

    fn keys(value: &serde_json::Value) -> Vec<&str> {
        value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn merge_keys_merge_and_explicit_keys_win() {
        let doc = json(concat!(
            "base: &base {port: 22, user: root}\n",
            "other: &other {port: 23, shell: sh}\n",
            "after: {<<: *base, user: deploy}\n",
            "before: {user: deploy, <<: *base}\n",
            "list: {<<: [*other, *base], shell: bash}\n",
            "inline: {<<: {port: 24}}\n",
            "nested: &nested {<<: *base, port: 25}\n",
            "twice: {<<: *nested}\n",
        ));
        assert_eq!(
            doc["after"],
            serde_json::json!({"port": 22, "user": "deploy"})
        );
        assert_eq!(
            doc["before"],
            serde_json::json!({"user": "deploy", "port": 22})
        );
        // Of several merged mappings the first wins; the mapping's own keys win over all.
        assert_eq!(
            doc["list"],
            serde_json::json!({"port": 23, "shell": "bash", "user": "root"})
        );
        assert_eq!(doc["inline"], serde_json::json!({"port": 24}));
        // A merged mapping's own merges are applied too.
        assert_eq!(
            doc["twice"],
            serde_json::json!({"port": 25, "user": "root"})
        );
        // Merged keys take the place of `<<`.
        assert_eq!(keys(&doc["before"]), ["user", "port"]);
        assert_eq!(keys(&doc["list"]), ["port", "user", "shell"]);
    }

    #[test]
    fn a_repeated_key_is_an_error_at_its_second_occurrence() {
        let cases = [
            (
                "all:\n  hosts:\n    web1:\n      max_sessions: 2\n      max_sessions: 3\n",
                "m.yml:5:7: all.hosts.web1.max_sessions: duplicate key `max_sessions` (first at line 4)",
            ),
            (
                "a: 1\nb: {c: 1, d: 2, c: 3}\n",
                "m.yml:2:17: b.c: duplicate key `c` (first at line 2)",
            ),
            (
                "- name: x\n- name: y\n  tasks: []\n  name: z\n",
                "m.yml:4:3: [1].name: duplicate key `name` (first at line 2)",
            ),
            (
                "a: 1\nb: 2\na: 3\n",
                "m.yml:3:1: a: duplicate key `a` (first at line 1)",
            ),
            // Within an anchored mapping too, though it is only ever merged.
            (
                "x: &x {p: 1, p: 2}\ny: {<<: *x}\n",
                "m.yml:1:14: x.p: duplicate key `p` (first at line 1)",
            ),
        ];
        for (text, expected) in cases {
            let err = load::<serde_json::Value>("m.yml", text).unwrap_err();
            assert_eq!(err.to_string(), expected);
            assert_eq!(err.exit_code(), crate::error::ExitCode::InvalidInput);
        }
    }

    #[test]
    fn merged_keys_are_not_duplicates() {
        let doc = json(concat!(
            "a: &a {x: 1, y: 1}\n",
            "b: &b {x: 2, z: 2}\n",
            "c:\n  <<: [*a, *b]\n  x: 3\n",
            "d: {x: 4, <<: *a, y: 4}\n",
        ));
        assert_eq!(doc["c"], serde_json::json!({"x": 3, "y": 1, "z": 2}));
        assert_eq!(doc["d"], serde_json::json!({"x": 4, "y": 4}));
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Hosts {
        defaults: serde_json::Value,
        hosts: indexmap::IndexMap<String, Host>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Host {
        port: u16,
        user: Option<String>,
    }

    #[test]
    fn errors_in_merged_documents_point_where_the_key_is_written() {
        let hosts = |web1: &str, web2: &str| {
            format!(
                "defaults: &base\n  port: {web2}\n  user: root\nhosts:\n  web1:\n    <<: *base\n{web1}  web2: {{<<: *base}}\n"
            )
        };
        let error = |text: &str| load::<Hosts>("m.yml", text).unwrap_err().to_string();
        // A key written in the merging mapping: exactly where it is, as without merges.
        assert_eq!(
            error(&hosts("    port: 22\n    usr: x\n", "22")),
            "m.yml:8:5: hosts.web1: unknown field `usr`, expected `port` or `user`"
        );
        assert_eq!(
            error(&hosts("    port: [22]\n", "22")),
            "m.yml:7:11: hosts.web1.port: invalid type: sequence, expected u16"
        );
        // A merged-in key: where the anchored mapping has it.
        assert_eq!(
            error(&hosts("    port: 22\n", "many")),
            "m.yml:2:9: hosts.web2.port: invalid type: string \"many\", expected u16"
        );
        // A merge of something that is not a mapping: at the `<<` key.
        assert_eq!(
            load::<serde_json::Value>("m.yml", "a: 1\nb:\n  <<: [1]\n")
                .unwrap_err()
                .to_string(),
            "m.yml:3:8: b.<<[0]: a merge list holds mappings only, such as `*anchor`"
        );

        let (_, locations) = load::<Hosts>("m.yml", &hosts("    port: 22\n", "22")).unwrap();
        let at = |path: &str| {
            let l = locations.find(path);
            (l.line, l.column)
        };
        assert_eq!(at("hosts.web1.port"), (7, 5));
        assert_eq!(at("hosts.web1.user"), (3, 3));
        assert_eq!(at("hosts.web2.user"), (3, 3));
        assert_eq!(at("hosts.web2.<<"), (8, 10));
    }
}
