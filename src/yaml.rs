//! All YAML lives here, read the way Ansible's loader (PyYAML) reads it.
//!
//! One parser, yaml-rust2's event parser, reads a file once into a tree that
//! keeps where every node is written. Ansible's YAML is applied on that tree:
//! merge keys (`<<: *anchor`, `<<: [*a, *b]`), a key repeated in one mapping
//! refused, and YAML 1.1 scalars (`yes`/`off` booleans, `0755` octal, `1:30`
//! sexagesimal). Typed values are deserialized straight from the tree, so a
//! value given where a string is expected keeps its text (`1.10` stays
//! "1.10") and every error names file:line:column and the key path.
//!
//! Errors found later (an undefined template variable on one host, a missing
//! `src` file) need a position too, so [`load`] also returns a [`Locations`]
//! index from key paths such as `[0].tasks[2].copy.dest` to where that key
//! stands in the file.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::LazyLock;

use indexmap::IndexMap;
use regex::Regex;
use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, Deserializer as _, IntoDeserializer, Visitor};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::TScalarStyle;

use crate::error::{Error, Location, Result};

/// A line and a column, both from 1.
type Position = (usize, usize);

/// Where each key of a YAML document stands, by key path.
#[derive(Debug, Default, Clone)]
pub struct Locations {
    file: String,
    /// Where the key stands (a sequence item: where it starts).
    positions: HashMap<String, Position>,
}

impl Locations {
    /// Positions of a file csdeploy reads without this module (an INI
    /// inventory), filled in by [`Locations::insert`].
    pub fn new(file: &str) -> Locations {
        Locations {
            file: file.to_string(),
            positions: HashMap::new(),
        }
    }

    pub fn insert(&mut self, path: String, line: usize, column: usize) {
        self.positions.insert(path, (line, column));
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &str) -> Location {
        let mut probe = path;
        while !self.positions.contains_key(probe)
            && let Some(cut) = probe.rfind(['.', '['])
        {
            probe = &probe[..cut];
        }
        self.at(self.positions.get(probe).copied().unwrap_or((1, 1)))
    }

    /// An input error at `path`, with its position.
    pub fn error(&self, path: &str, message: impl Into<String>) -> Error {
        let Location { line, column, .. } = self.find(path);
        self.error_at((line, column), path, message.into())
    }

    /// An input error at `position`; a key path of `""` is the whole document.
    fn error_at(&self, position: Position, path: &str, message: impl Display) -> Error {
        Error::Yaml {
            location: self.at(position),
            key: if path.is_empty() { "(document)" } else { path }.to_string(),
            message: message.to_string(),
        }
    }

    fn at(&self, (line, column): Position) -> Location {
        let file = self.file.clone();
        Location { file, line, column }
    }

    fn index(&mut self, node: &Node, path: &str) {
        let children: Vec<(String, Position, &Node)> = match &node.body {
            Body::Scalar(..) => Vec::new(),
            Body::Seq(items) => (items.iter().enumerate())
                .map(|(i, item)| (format!("{path}[{i}]"), item.at, item))
                .collect(),
            Body::Map(entries) => (entries.iter())
                .map(|(text, (key, value))| (child_path(path, text), key.at, value))
                .collect(),
        };
        for (child, position, node) in children {
            self.index(node, &child);
            self.positions.insert(child, position);
        }
    }
}

/// Parses `text` (read from `file`, used in messages) as a `T`.
pub fn load<T: DeserializeOwned>(file: &str, text: &str) -> Result<(T, Locations)> {
    if text.len() > MAX_FILE_BYTES {
        return Err(crate::error::Error::Invalid {
            file: file.to_string(),
            key: "(document)".into(),
            message: format!(
                "{} MiB is more than the {} MiB csdeploy reads from one YAML file",
                text.len() >> 20,
                MAX_FILE_BYTES >> 20
            ),
        });
    }
    let mut reader = Reader {
        parser: Parser::new_from_str(text),
        text,
        locations: Locations {
            file: file.to_string(),
            positions: HashMap::new(),
        },
        anchors: HashMap::new(),
        budget: ALIAS_BUDGET,
        bytes_left: ALIAS_BYTES,
    };
    let root = reader.document()?;
    let mut locations = reader.locations;
    locations.index(&root, "");
    let value = T::deserialize(De::new(&root, String::new())).map_err(|err| {
        let (path, position) = err.1.unwrap_or_default();
        locations.error_at(position, &path, err.0)
    })?;
    Ok((value, locations))
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `value` as YAML text, for people to read.
pub fn to_string(value: &serde_json::Value) -> String {
    fn convert(value: &serde_json::Value) -> yaml_rust2::Yaml {
        use {serde_json::Value as J, yaml_rust2::Yaml as Y};
        match value {
            J::Null => Y::Null,
            J::Bool(b) => Y::Boolean(*b),
            J::Number(n) => n.as_i64().map_or(Y::Real(n.to_string()), Y::Integer),
            J::String(s) => Y::String(s.clone()),
            J::Array(items) => Y::Array(items.iter().map(convert).collect()),
            J::Object(map) => Y::Hash(
                map.iter()
                    .map(|(k, v)| (Y::String(k.clone()), convert(v)))
                    .collect(),
            ),
        }
    }
    let mut text = String::new();
    let _ = yaml_rust2::YamlEmitter::new(&mut text).dump(&convert(value));
    text.strip_prefix("---\n").unwrap_or(&text).to_string()
}

/// How many nodes, and how many bytes of text, aliases may copy: an alias
/// bomb of many small copies or of a few huge ones cannot exhaust memory.
const ALIAS_BUDGET: usize = 100_000;
const ALIAS_BYTES: usize = 16 << 20;
/// The largest YAML file read: inventories and playbooks are far smaller.
pub const MAX_FILE_BYTES: usize = 16 << 20;
/// How deep collections may nest, so a hostile file cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

/// A node of the document and where it is written.
#[derive(Debug, Clone)]
struct Node {
    /// Where it starts; a block mapping at its first key.
    at: Position,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    /// The text as written, and what it means.
    Scalar(String, Scalar),
    /// By key text: the key (a string scalar, for where it stands) and the
    /// value; merge keys applied, in the order PyYAML gives.
    Map(IndexMap<String, (Node, Node)>),
    Seq(Vec<Node>),
}

/// What a scalar means, as PyYAML resolves YAML 1.1.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str,
}

impl Node {
    /// How many nodes it holds, and how deep they nest.
    /// (nodes, bytes of text and keys, height) of this subtree.
    fn measure(&self) -> (usize, usize, usize) {
        let (own, children): (usize, Vec<&Node>) = match &self.body {
            Body::Scalar(text, _) => (text.len(), Vec::new()),
            Body::Map(entries) => (
                entries.keys().map(String::len).sum(),
                entries.values().map(|(_, value)| value).collect(),
            ),
            Body::Seq(items) => (0, items.iter().collect()),
        };
        (children.iter().map(|child| child.measure()))
            .fold((1, own, 1), |(nodes, bytes, height), (n, b, h)| {
                (nodes + n, bytes + b, height.max(h + 1))
            })
    }
}

/// Reads parser events into a [`Node`] tree.
struct Reader<'a> {
    parser: Parser<std::str::Chars<'a>>,
    /// The source, to name what a syntax error stumbled on.
    text: &'a str,
    /// Empty until the tree is read: only the file name, for errors.
    locations: Locations,
    anchors: HashMap<usize, Node>,
    budget: usize,
    bytes_left: usize,
}

impl Reader<'_> {
    fn fail<T>(&self, at: Position, path: &str, message: impl Display) -> Result<T> {
        Err(self.locations.error_at(at, path, message))
    }

    fn next(&mut self) -> Result<(Event, Position)> {
        match self.parser.next_token() {
            Ok((event, mark)) => Ok((event, (mark.line(), mark.col() + 1))),
            Err(err) => {
                let at = (err.marker().line(), err.marker().col() + 1);
                let line = self.text.lines().nth(at.0.saturating_sub(1)).unwrap_or("");
                if line.contains('\t') {
                    let column = line.find('\t').map_or(0, |i| line[..i].chars().count() + 1);
                    let message = format!(
                        "{} (a tab at column {column}: YAML indents and separates with spaces \
                         only; replace the tab with spaces)",
                        err.info()
                    );
                    return self.fail(at, "", message);
                }
                self.fail(at, "", err.info())
            }
        }
    }

    /// The one document of the file; an empty file is null.
    fn document(&mut self) -> Result<Node> {
        let mut root = None;
        loop {
            match self.next()? {
                (Event::StreamEnd, _) => break,
                (Event::StreamStart | Event::DocumentStart | Event::DocumentEnd, _) => {}
                (event, at) if root.is_none() => root = Some(self.node(event, at, "", 0)?),
                (_, at) => return self.fail(at, "", "a file holds one YAML document"),
            }
        }
        let null = Body::Scalar(String::new(), Scalar::Null);
        Ok(root.unwrap_or(Node {
            at: (1, 1),
            body: null,
        }))
    }

    /// The node that `event` (at `at`) starts, standing at key path `path`.
    fn node(&mut self, event: Event, at: Position, path: &str, depth: usize) -> Result<Node> {
        if depth > MAX_DEPTH {
            return self.fail(at, path, "nested too deeply");
        }
        let (at, body, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let scalar = match (tag, style) {
                    (None, TScalarStyle::Plain) => resolve(&text),
                    (None, _) => Scalar::Str,
                    (Some(Tag { handle, suffix }), _) => match (handle.as_str(), &*suffix) {
                        ("tag:yaml.org,2002:", "str") | ("", "!") => Scalar::Str,
                        ("tag:yaml.org,2002:", _) => resolve(&text),
                        _ => {
                            let message = format!("unsupported tag `{handle}{suffix}`");
                            return self.fail(at, path, message);
                        }
                    },
                };
                (at, Body::Scalar(text, scalar), anchor)
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id) else {
                    return self.fail(at, path, "unknown anchor");
                };
                let (size, bytes, height) = node.measure();
                if size > self.budget {
                    return self.fail(at, path, "aliases expand to too many nodes");
                } else if bytes > self.bytes_left {
                    return self.fail(at, path, "aliases expand to more than 16 MiB of text");
                } else if depth + height > MAX_DEPTH {
                    return self.fail(at, path, "nested too deeply");
                }
                self.budget -= size;
                self.bytes_left -= bytes;
                return Ok(Node { at, ..node.clone() });
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (event, item_at) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    let item_path = format!("{path}[{}]", items.len());
                    items.push(self.node(event, item_at, &item_path, depth + 1)?);
                }
                (at, Body::Seq(items), anchor)
            }
            Event::MappingStart(anchor, _) => {
                // A block mapping's event stands after its first key.
                let (body, first_key) = self.mapping(path, depth)?;
                (first_key.map_or(at, |key| key.min(at)), body, anchor)
            }
            _ => return self.fail(at, path, "unexpected YAML event"),
        };
        let node = Node { at, body };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    /// A mapping's entries, up to its end, with merge keys applied, and where
    /// its first key stands.
    fn mapping(&mut self, path: &str, depth: usize) -> Result<(Body, Option<Position>)> {
        let mut own: IndexMap<String, (Node, Node)> = IndexMap::new();
        let mut merges = Vec::new();
        let mut first_key = None;
        loop {
            let (text, at, merge) = match self.next()? {
                (Event::MappingEnd, _) => break,
                (Event::Scalar(text, style, ..), at) => {
                    let merge = text == "<<" && style == TScalarStyle::Plain;
                    (text, at, merge)
                }
                (_, at) => return self.fail(at, path, "a mapping key must be a scalar"),
            };
            first_key = first_key.or(Some(at));
            let child = child_path(path, &text);
            if !merge && let Some((first, _)) = own.get(&text) {
                let line = first.at.0;
                let message = format!("duplicate key `{text}` (first at line {line})");
                return self.fail(at, &child, message);
            }
            let (event, value_at) = self.next()?;
            let value = self.node(event, value_at, &child, depth + 1)?;
            if merge {
                merges.push((child, value));
            } else {
                let key = Node {
                    at,
                    body: Body::Scalar(text.clone(), Scalar::Str),
                };
                own.insert(text, (key, value));
            }
        }
        // As PyYAML: the merged mappings first (of a list, the last first),
        // then the mapping's own keys; a later key wins, in the first one's place.
        let mut entries = IndexMap::new();
        for (merge_at, value) in merges {
            match value.body {
                Body::Map(source) => entries.extend(source),
                Body::Seq(items) => {
                    let mut sources = Vec::with_capacity(items.len());
                    for (i, item) in items.into_iter().enumerate() {
                        let Body::Map(source) = item.body else {
                            let message = "a merge list holds mappings only, such as `*anchor`";
                            return self.fail(item.at, &format!("{merge_at}[{i}]"), message);
                        };
                        sources.push(source);
                    }
                    entries.extend(sources.into_iter().rev().flatten());
                }
                Body::Scalar(..) => {
                    let message = "`<<` merges a mapping or a list of mappings, such as `*anchor` or `[*a, *b]`";
                    return self.fail(value.at, &merge_at, message);
                }
            }
        }
        entries.extend(own);
        Ok((Body::Map(entries), first_key))
    }
}

/// PyYAML's implicit resolvers for ints and floats (`resolver.py`), as
/// Ansible's loader applies them to plain scalars.
static INT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)",
        r"|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
    ))
    .unwrap()
});
static FLOAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?",
        r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?",
        r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*",
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
    ))
    .unwrap()
});

/// What a plain scalar means to PyYAML. Its timestamps stay strings, as
/// JSON has no dates; an int beyond 64 bits stays a string too.
fn resolve(text: &str) -> Scalar {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => Scalar::Null,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Scalar::Bool(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Scalar::Bool(false)
        }
        _ if INT.is_match(text) => int(text).map_or(Scalar::Str, Scalar::Int),
        _ if FLOAT.is_match(text) => Scalar::Float(float(text)),
        _ => Scalar::Str,
    }
}

/// PyYAML's `construct_yaml_int`: `0b1_0`, `0x1F`, `0755` (octal; `0o755`
/// is a string), `1_000`, `1:30` (90).
fn int(text: &str) -> Option<i64> {
    let text = text.replace('_', "");
    let (sign, digits) = text
        .strip_prefix('-')
        .map_or((1, text.trim_start_matches('+')), |d| (-1, d));
    let n = match digits {
        _ if digits.starts_with("0b") => i64::from_str_radix(&digits[2..], 2).ok()?,
        _ if digits.starts_with("0x") => i64::from_str_radix(&digits[2..], 16).ok()?,
        _ if digits.starts_with('0') => i64::from_str_radix(digits, 8).ok()?,
        _ => (digits.split(':')).try_fold(0i64, |n, part| {
            n.checked_mul(60)?.checked_add(part.parse().ok()?)
        })?,
    };
    Some(sign * n)
}

/// PyYAML's `construct_yaml_float`: `1.10`, `1.0e+5`, `1:30.5` (90.5), `.inf`.
fn float(text: &str) -> f64 {
    let text = text.replace('_', "").to_lowercase();
    let (sign, digits) = text
        .strip_prefix('-')
        .map_or((1.0, text.trim_start_matches('+')), |d| (-1.0, d));
    sign * match digits {
        ".inf" => f64::INFINITY,
        ".nan" => f64::NAN,
        _ => (digits.split(':')).fold(0.0, |n, part| {
            n * 60.0 + part.parse::<f64>().unwrap_or(f64::NAN)
        }),
    }
}

/// An error while deserializing, and where: the key path and position of
/// the innermost node that saw it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DeError(String, Option<(String, Position)>);

impl de::Error for DeError {
    fn custom<M: Display>(message: M) -> Self {
        DeError(message.to_string(), None)
    }
}

/// Deserializes one node standing at key path `path`.
struct De<'de> {
    node: &'de Node,
    path: String,
}

impl<'de> De<'de> {
    fn new(node: &'de Node, path: String) -> Self {
        De { node, path }
    }

    fn place(&self, mut err: DeError) -> DeError {
        (err.1).get_or_insert_with(|| (self.path.clone(), self.node.at));
        err
    }

    /// The text, unless the scalar is null or the node is no scalar.
    fn text(&self) -> Option<&'de str> {
        match &self.node.body {
            Body::Scalar(text, scalar) if *scalar != Scalar::Null => Some(text),
            _ => None,
        }
    }

    /// A collection; null (`tasks:` with nothing) is an empty one.
    fn collection<V: Visitor<'de>>(self, visitor: V, map: bool) -> Result<V::Value, DeError> {
        let result = match &self.node.body {
            Body::Scalar(_, Scalar::Null) if map => {
                visitor.visit_map(MapDeserializer::new(std::iter::empty::<((), ())>()))
            }
            Body::Scalar(_, Scalar::Null) => {
                visitor.visit_seq(SeqDeserializer::new(std::iter::empty::<()>()))
            }
            _ => return self.deserialize_any(visitor),
        };
        result.map_err(|e| self.place(e))
    }
}

impl<'de> IntoDeserializer<'de, DeError> for De<'de> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for De<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let path = &self.path;
        let result = match &self.node.body {
            Body::Scalar(_, Scalar::Null) => visitor.visit_unit(),
            Body::Scalar(_, Scalar::Bool(b)) => visitor.visit_bool(*b),
            Body::Scalar(_, Scalar::Int(n)) => visitor.visit_i64(*n),
            Body::Scalar(_, Scalar::Float(x)) => visitor.visit_f64(*x),
            Body::Scalar(text, Scalar::Str) => visitor.visit_borrowed_str(text),
            Body::Seq(items) => visitor.visit_seq(SeqDeserializer::new(
                (items.iter().enumerate()).map(|(i, item)| De::new(item, format!("{path}[{i}]"))),
            )),
            // A key's errors (an unknown field) stand at the key and name the mapping.
            Body::Map(entries) => visitor.visit_map(MapDeserializer::new(entries.iter().map(
                |(text, (k, v))| (De::new(k, path.clone()), De::new(v, child_path(path, text))),
            ))),
        };
        result.map_err(|e| self.place(e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.body {
            Body::Scalar(_, Scalar::Null) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    /// A string keeps the text as written, whatever YAML 1.1 makes of it.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.text() {
            Some(text) => visitor.visit_borrowed_str(text).map_err(|e| self.place(e)),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.text() {
            Some(text) => (visitor.visit_enum(text.into_deserializer())).map_err(|e| self.place(e)),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.collection(visitor, false)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.collection(visitor, true)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.collection(visitor, true)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        unit unit_struct newtype_struct tuple tuple_struct ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn json(text: &str) -> Value {
        load::<Value>("m.yml", text).unwrap().0
    }

    fn error<T: DeserializeOwned + std::fmt::Debug>(text: &str) -> String {
        load::<T>("m.yml", text).unwrap_err().to_string()
    }

    /// Plain scalars and what PyYAML 6.0.3 (`yaml.safe_load`, Ansible's
    /// resolver) makes of them, checked by hand: `input json` pairs.
    /// PyYAML's date (`2001-12-14`) and ints beyond 64 bits stay strings here.
    const PYYAML: &str = r#"
        yes true  Yes true  YES true  on true  On true  ON true  true true  True true  TRUE true
        no false  No false  NO false  off false  Off false  OFF false  false false  FALSE false
        y "y"  Y "Y"  n "n"  N "N"  yEs "yEs"  ~ null  null null  Null null  NULL null  nUll "nUll"
        0755 493  -0755 -493  +0755 493  00 0  0_7 7  0o755 "0o755"  08 "08"  012345678 "012345678"
        0x1F 31  -0x1F -31  0X1F "0X1F"  0b101 5  -0b1_0 -2  0b2 "0b2"  0 0  -0 0  +12 12
        1_000 1000  1__2 12  _1 "_1"  1:30 90  -1:30 -90  1:30:05 5405  1:3 63  1:60 "1:60"
        0:30 "0:30"  1.10 1.1  1.0 1.0  1. 1.0  0. 0.0  -1.5 -1.5  +1.5 1.5  .5 0.5  -.5 "-.5"
        1e5 "1e5"  1.0e5 "1.0e5"  1.0e+5 100000.0  1.5E-3 0.0015  1_0.5 10.5  0.1_ 0.1  1:30.5 90.5
        0755.5 755.5  1.2.3 "1.2.3"  Nothing "Nothing"  NaN "NaN"  inf "inf"  2001-12-14 "2001-12-14"
        9223372036854775807 9223372036854775807  9223372036854775808 "9223372036854775808"
    "#;

    #[test]
    fn plain_scalars_mean_what_pyyaml_reads_and_strings_keep_their_text() {
        let words: Vec<&str> = PYYAML.split_whitespace().collect();
        let (texts, expected): (Vec<&str>, Vec<Value>) = (words.chunks(2))
            .map(|p| (p[0], serde_json::from_str(p[1]).unwrap()))
            .unzip();
        let doc: String = texts.iter().map(|text| format!("- {text}\n")).collect();
        assert_eq!(json(&doc), Value::Array(expected.clone()));
        // Where a string is expected, the text stays as written.
        let (strings, _) = load::<Vec<Option<String>>>("m.yml", &doc).unwrap();
        let texts =
            (texts.iter().zip(&expected)).map(|(t, e)| (!e.is_null()).then(|| t.to_string()));
        assert_eq!(strings, texts.collect::<Vec<_>>());
        let (floats, _) = load::<Vec<f64>>("m.yml", "[.inf, -.Inf, .NaN]").unwrap();
        assert_eq!(format!("{floats:?}"), "[inf, -inf, NaN]");
        // Quoted scalars are strings; `!!str` makes one, `!!int` reads the text as if plain.
        let doc = json("d: '0755'\ne: \"yes\"\nf: !!str 0755\ng: !!int '0755'\nh:\n");
        assert_eq!(
            doc,
            json!({"d": "0755", "e": "yes", "f": "0755", "g": 493, "h": null})
        );
    }

    #[test]
    fn indexes_nested_keys() {
        let text = "- name: a\n  tasks:\n    - name: x\n      copy:\n        dest: /x\n    - name: y\n      file: {path: /y}\n";
        let (_, locations) = load::<Value>("p.yml", text).unwrap();
        let at = |path: &str| locations.find(path).to_string();
        assert_eq!(at("[0].tasks[0].copy.dest"), "p.yml:5:9");
        assert_eq!(at("[0].tasks[1].file.path"), "p.yml:7:14");
        // A sequence item where it starts; a block mapping at its first key.
        assert_eq!(at("[0].tasks[1]"), at("[0].tasks[1].name"));
        // Unknown leaf falls back to the nearest known ancestor.
        assert_eq!(at("[0].tasks[1].file.mode"), "p.yml:7:7");
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Host {
        port: u16,
        user: Option<String>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Hosts {
        defaults: Value,
        hosts: IndexMap<String, Host>,
    }

    #[test]
    fn a_tab_that_breaks_the_syntax_is_named() {
        let err = error::<Value>("all:\n  hosts:\n\tlocal: {}\n");
        assert!(
            err.contains(":3:") && err.contains("a tab at column 1"),
            "{err}"
        );
        assert!(err.contains("replace the tab with spaces"), "{err}");
    }

    #[test]
    fn errors_name_where_and_which_key() {
        #[rustfmt::skip]
        let cases = [
            ("a: {port: 1}\nb: {prot: 2}\n", "m.yml:2:5: b: unknown field `prot`, expected `port` or `user`"),
            ("a:\n  port: [22]\n", "m.yml:2:9: a.port: invalid type: sequence, expected u16"),
            ("a:\n  port: 70000\n", "m.yml:2:9: a.port: invalid value: integer `70000`, expected u16"),
            ("a:\n  user: x\n", "m.yml:2:3: a: missing field `port`"),
            ("a: [\n", "m.yml:2:1: (document): while parsing a node, did not find expected node content"),
            ("a: {port: 1}\n---\nb: {port: 2}\n", "m.yml:3:2: (document): a file holds one YAML document"),
            ("a: {port: !vault x}\n", "m.yml:1:18: a.port: unsupported tag `!vault`"),
        ];
        for (text, expected) in cases {
            assert_eq!(error::<IndexMap<String, Host>>(text), expected);
        }
        let mut bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n".to_string();
        for i in 1..9 {
            bomb += &format!("a{i}: &a{i} [{}]\n", format!("*a{}, ", i - 1).repeat(10));
        }
        assert!(error::<Value>(&bomb).ends_with("aliases expand to too many nodes"));
        // A few copies of a big scalar: few nodes, many bytes.
        let big = format!(
            "a: &a \"{}\"\nb: [{}]\n",
            "x".repeat(1 << 20),
            vec!["*a"; 20].join(", ")
        );
        assert!(error::<Value>(&big).ends_with("aliases expand to more than 16 MiB of text"));
        let huge = "x".repeat(MAX_FILE_BYTES + 1);
        assert!(error::<Value>(&huge).contains("csdeploy reads from one YAML file"));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(error::<Value>(&deep).ends_with("nested too deeply"));
        let deep = format!(
            "a: &a {}x{}\nb: [[[*a]]]\n",
            "[".repeat(125),
            "]".repeat(125)
        );
        assert_eq!(
            error::<Value>(&deep),
            "m.yml:2:7: b[0][0][0]: nested too deeply"
        );
    }

    #[test]
    fn merge_keys_merge_in_pyyaml_order_and_explicit_keys_win() {
        let doc = json(concat!(
            "base: &base {port: 22, user: root}\n",
            "other: &other {port: 23, shell: sh}\n",
            "after: {<<: *base, user: deploy}\n",
            "before: {user: deploy, <<: *base}\n",
            "list: {<<: [*other, *base], shell: bash}\n",
            "inline: {<<: {port: 24}}\n",
            "nested: &nested {<<: *base, port: 25}\n",
            "twice: {<<: *nested}\n",
            "c:\n  <<: [*base, *other]\n  port: 3\n",
        ));
        let shown = |key: &str| doc[key].to_string();
        // Merged keys first, then the mapping's own: as PyYAML's dict has them.
        assert_eq!(shown("before"), r#"{"port":22,"user":"deploy"}"#);
        assert_eq!(shown("after"), shown("before"));
        // Of several merged mappings the first wins; the mapping's own keys win over all.
        assert_eq!(shown("list"), r#"{"port":23,"user":"root","shell":"bash"}"#);
        assert_eq!(shown("c"), r#"{"port":3,"shell":"sh","user":"root"}"#);
        assert_eq!(shown("inline"), r#"{"port":24}"#);
        // A merged mapping's own merges are applied too.
        assert_eq!(shown("twice"), r#"{"port":25,"user":"root"}"#);
    }

    #[test]
    fn a_repeated_key_is_an_error_naming_both_lines() {
        #[rustfmt::skip]
        let cases = [
            ("all:\n  hosts:\n    web1:\n      max_sessions: 2\n      max_sessions: 3\n", "m.yml:5:7: all.hosts.web1.max_sessions: duplicate key `max_sessions` (first at line 4)"),
            ("a: 1\nb: {c: 1, d: 2, c: 3}\n", "m.yml:2:17: b.c: duplicate key `c` (first at line 2)"),
            ("- name: x\n- name: y\n  tasks: []\n  name: z\n", "m.yml:4:3: [1].name: duplicate key `name` (first at line 2)"),
            // Within an anchored mapping too, though it is only ever merged.
            ("x: &x {p: 1, p: 2}\ny: {<<: *x}\n", "m.yml:1:14: x.p: duplicate key `p` (first at line 1)"),
        ];
        for (text, expected) in cases {
            assert_eq!(error::<Value>(text), expected);
        }
    }

    #[test]
    fn errors_in_merged_documents_point_where_the_key_is_written() {
        let hosts = |web1: &str, port: &str| {
            format!(
                "defaults: &base\n  port: {port}\n  user: root\nhosts:\n  web1:\n    <<: *base\n{web1}  web2: {{<<: *base}}\n"
            )
        };
        #[rustfmt::skip]
        let cases = [
            // A key written in the merging mapping: where it is, as without merges.
            (hosts("    port: 22\n    usr: x\n", "22"), "m.yml:8:5: hosts.web1: unknown field `usr`, expected `port` or `user`"),
            (hosts("    port: [22]\n", "22"), "m.yml:7:11: hosts.web1.port: invalid type: sequence, expected u16"),
            // A merged-in key: where the anchored mapping has it.
            (hosts("", "many"), "m.yml:2:9: hosts.web1.port: invalid type: string \"many\", expected u16"),
            ("defaults: 1\nhosts:\n  <<: [1]\n".into(), "m.yml:3:8: hosts.<<[0]: a merge list holds mappings only, such as `*anchor`"),
            ("defaults: 1\nhosts:\n  <<: 1\n".into(), "m.yml:3:7: hosts.<<: `<<` merges a mapping or a list of mappings, such as `*anchor` or `[*a, *b]`"),
        ];
        for (text, expected) in cases {
            assert_eq!(error::<Hosts>(&text), expected);
        }
        let (_, locations) = load::<Hosts>("m.yml", &hosts("    port: 22\n", "22")).unwrap();
        let at = |path: &str| locations.find(path).to_string();
        assert_eq!(at("hosts.web1.port"), "m.yml:7:5");
        // Merged-in keys stand where the anchored mapping has them.
        assert_eq!(at("hosts.web1.user"), "m.yml:3:3");
        assert_eq!(at("hosts.web2.port"), "m.yml:2:3");
    }
}
