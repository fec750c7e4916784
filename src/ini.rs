//! Ansible's INI inventory format (its default, and kubespray's sample), read
//! as ansible-core 2.19's `ini` plugin reads it: lines before any section
//! are hosts of `ungrouped`; `[group]` lists hosts (`name key=value ...`,
//! split as Python's `shlex.split(line, comments=True)`), `[group:vars]`
//! one `key=value` a line, `[group:children]` group names, which may be
//! declared later in the file. Every value, inline or in `:vars`, goes
//! through Python's `ast.literal_eval` (`23` is a number, `True` a
//! boolean, `"x"` the string x) and stays the text as written where that
//! fails (`0755`, `/usr/bin/python3`). Ansible's documentation says `:vars`
//! values stay strings; the plugin's code, and the oracle test, say not.
//!
//! This module turns the file into the same `RawGroup` tree a YAML inventory
//! is read into, with every key's line; `inventory` does the rest.

use indexmap::IndexMap;
use serde_json::{Number, Value};

/// A variable as an INI line sets it: name, value, and its column.
pub type IniVar = (String, Value, usize);

/// One group's sections: what they set and where.
#[derive(Debug, Default)]
pub struct IniGroup {
    /// Host pattern (as written, ranges and ports unexpanded), its line,
    /// and its inline variables, each with its column.
    pub hosts: Vec<(String, usize, Vec<IniVar>)>,
    /// Each `:vars` entry with its line and column.
    pub vars: Vec<(String, Value, usize, usize)>,
    pub children: Vec<(String, usize)>,
    /// Where `[group]`, `[group:children]` (or only `[group:vars]`) is.
    pub declared: Option<usize>,
    pub vars_line: Option<usize>,
}

/// The groups of an INI inventory, in the order they appear, or an error
/// message and its line.
pub fn parse(text: &str) -> Result<IndexMap<String, IniGroup>, (usize, String)> {
    let mut groups: IndexMap<String, IniGroup> = IndexMap::new();
    groups.insert("ungrouped".into(), IniGroup::default());
    let mut group = "ungrouped".to_string();
    let mut state = "hosts".to_string();
    for (index, raw) in text.lines().enumerate() {
        let n = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some((name, kind)) = section(line) {
            if !["hosts", "children", "vars"].contains(&kind.as_str()) {
                return Err((
                    n,
                    format!(
                        "section [{name}:{kind}] has an unknown type `{kind}` (expected vars or children)"
                    ),
                ));
            }
            let entry = groups.entry(name.clone()).or_default();
            if kind == "vars" {
                entry.vars_line.get_or_insert(n);
            } else {
                entry.declared.get_or_insert(n);
            }
            (group, state) = (name, kind);
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            return Err((
                n,
                format!(
                    "invalid section `{line}`: no blanks, and only `:vars` or `:children` after the group name"
                ),
            ));
        }
        let column = raw.len() - raw.trim_start().len() + 1;
        match state.as_str() {
            "hosts" => {
                let tokens = shlex(line)
                    .map_err(|why| (n, format!("cannot split host line `{line}`: {why}")))?;
                let Some((pattern, rest)) = tokens.split_first() else {
                    continue;
                };
                if pattern.ends_with(':') {
                    return Err((
                        n,
                        format!("host `{pattern}` ends in `:`, which is reserved for a port"),
                    ));
                }
                let mut vars = Vec::new();
                for token in rest {
                    let Some((key, value)) = token.split_once('=') else {
                        return Err((
                            n,
                            format!("expected key=value after the host name, found `{token}`"),
                        ));
                    };
                    let at = raw.find(key).map_or(column, |i| i + 1);
                    vars.push((
                        key.to_string(),
                        literal(value).map_err(|why| (n, format!("{key}: {why}")))?,
                        at,
                    ));
                }
                groups[&group].hosts.push((pattern.clone(), n, vars));
            }
            "vars" => {
                let Some((key, value)) = line.split_once('=') else {
                    return Err((
                        n,
                        format!("expected key=value in [{group}:vars], found `{line}`"),
                    ));
                };
                let key = key.trim();
                let value = literal(value.trim()).map_err(|why| (n, format!("{key}: {why}")))?;
                groups[&group]
                    .vars
                    .push((key.to_string(), value, n, column));
            }
            _ => {
                let name = line.split('#').next().unwrap_or("").trim();
                if name.is_empty()
                    || name.contains([':', ']'])
                    || name.contains(char::is_whitespace)
                {
                    return Err((
                        n,
                        format!("expected a group name in [{group}:children], found `{line}`"),
                    ));
                }
                groups[&group].children.push((name.to_string(), n));
            }
        }
    }
    for (name, g) in &groups {
        if g.declared.is_none()
            && name != "ungrouped"
            && name != "all"
            && let Some(line) = g.vars_line
        {
            return Err((
                line,
                format!(
                    "section [{name}:vars] is for a group the file never declares (with [{name}] or [{name}:children])"
                ),
            ));
        }
        for (child, line) in &g.children {
            let implicit = child == "all" || child == "ungrouped";
            if !implicit && groups.get(child).is_none_or(|c| c.declared.is_none()) {
                return Err((
                    *line,
                    format!(
                        "section [{name}:children] names `{child}`, a group the file never declares"
                    ),
                ));
            }
        }
    }
    Ok(groups)
}

/// `[name]` or `[name:kind]`, with nothing but a comment after it.
fn section(line: &str) -> Option<(String, String)> {
    let inner = line.strip_prefix('[')?;
    let (inner, after) = inner.split_once(']')?;
    let after = after.trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        return None;
    }
    let (name, kind) = match inner.split_once(':') {
        Some((name, kind)) => (name, kind),
        None => (inner, "hosts"),
    };
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
    if name.is_empty() || name.contains(char::is_whitespace) || !word(kind) {
        return None;
    }
    Some((name.to_string(), kind.to_string()))
}

/// Python's `shlex.split(line, comments=True)`: blanks separate words,
/// quotes group them, `\` escapes, `#` starts a comment anywhere.
fn shlex(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' => break,
            '\\' => {
                word.push(chars.next().ok_or("no escaped character")?);
                in_word = true;
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next().ok_or("no closing quotation")? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next().ok_or("no closing quotation")? {
                        '"' => break,
                        '\\' => {
                            let next = chars.next().ok_or("no closing quotation")?;
                            if !['"', '\\', '$', '`'].contains(&next) {
                                word.push('\\');
                            }
                            word.push(next);
                        }
                        c => word.push(c),
                    }
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// A value as Python's `ast.literal_eval` reads it, or the text itself when
/// Python would fail to. Where csdeploy cannot be sure which (a literal
/// form it does not read: sets, bytes, complex numbers, string prefixes), it
/// refuses rather than guess.
pub fn literal(text: &str) -> Result<Value, String> {
    let trimmed = text.trim_matches([' ', '\t']);
    let mut parser = Literal {
        chars: trimmed.chars().collect(),
        at: 0,
    };
    if let Some(value) = parser.value().filter(|_| {
        parser.blanks();
        parser.at == parser.chars.len()
    }) {
        return Ok(value);
    }
    if python_fails(trimmed) {
        return Ok(Value::String(text.to_string()));
    }
    Err(format!(
        "csdeploy cannot tell how Ansible reads `{text}` (a Python literal it does not \
         support, or text that only looks like one): quote it to make it a string, \
         e.g. '\"{text}\"', or write it in YAML"
    ))
}

/// Whether `ast.literal_eval` surely fails on `text` (which csdeploy's
/// reader did not take), so that Ansible keeps the text: it starts with a
/// name other than `True`/`False`/`None` or a string prefix (`foo`, `a,b`),
/// with a character no literal starts with (`/usr/bin`, `~/.ssh`), or it is
/// a number-like word no literal is (`0755`, `10.0.0.1`, `1:30`, `--1`).
fn python_fails(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return true;
    };
    if first.is_alphabetic() || first == '_' {
        let word: String = text
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let next = text[word.len()..].chars().next();
        let prefix = ["b", "r", "u", "f", "br", "rb", "fr", "rf"]
            .contains(&word.to_ascii_lowercase().as_str())
            && matches!(next, Some('\'' | '"'));
        return !(["True", "False", "None"].contains(&word.as_str()) || prefix);
    }
    if first.is_ascii_digit() || "+-.".contains(first) {
        return text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/-".contains(c))
            && !text.contains(['j', 'J']);
    }
    !"{[(\"'".contains(first)
}

struct Literal {
    chars: Vec<char>,
    at: usize,
}

impl Literal {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn blanks(&mut self) {
        while self.peek().is_some_and(|c| c == ' ' || c == '\t') {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.blanks();
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Value> {
        self.blanks();
        match self.peek()? {
            '\'' | '"' => {
                let mut text = self.string()?;
                // Adjacent strings concatenate, as in Python.
                loop {
                    self.blanks();
                    if matches!(self.peek(), Some('\'' | '"')) {
                        text.push_str(&self.string()?);
                    } else {
                        return Some(Value::String(text));
                    }
                }
            }
            '[' => self.sequence('[', ']'),
            '(' => self.sequence('(', ')'),
            '{' => self.map(),
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => self.number(),
            _ => {
                let start = self.at;
                while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.at += 1;
                }
                let word: String = self.chars[start..self.at].iter().collect();
                match word.as_str() {
                    "True" => Some(Value::Bool(true)),
                    "False" => Some(Value::Bool(false)),
                    "None" => Some(Value::Null),
                    _ => None,
                }
            }
        }
    }

    fn string(&mut self) -> Option<String> {
        let quote = self.peek()?;
        let triple = self.chars.get(self.at..self.at + 3) == Some(&[quote; 3]);
        if triple {
            return None;
        }
        self.at += 1;
        let mut text = String::new();
        loop {
            let c = self.peek()?;
            self.at += 1;
            match c {
                c if c == quote => return Some(text),
                '\\' => {
                    let e = self.peek()?;
                    self.at += 1;
                    match e {
                        'n' => text.push('\n'),
                        't' => text.push('\t'),
                        'r' => text.push('\r'),
                        '0' => text.push('\0'),
                        '\\' | '\'' | '"' => text.push(e),
                        // \x, \u, \N{...}, octal: not read here, so refused.
                        _ => return None,
                    }
                }
                c => text.push(c),
            }
        }
    }

    fn sequence(&mut self, open: char, close: char) -> Option<Value> {
        self.at += 1;
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Some(Value::Array(items));
            }
            items.push(self.value()?);
            if !self.eat(',') {
                // `(1)` is 1, not a tuple; `(1,)` is.
                let one = open == '(' && items.len() == 1;
                return self.eat(close).then(|| {
                    if one {
                        items.remove(0)
                    } else {
                        Value::Array(items)
                    }
                });
            }
        }
    }

    fn map(&mut self) -> Option<Value> {
        self.at += 1;
        let mut map = serde_json::Map::new();
        loop {
            if self.eat('}') {
                return Some(Value::Object(map));
            }
            let Value::String(key) = self.value()? else {
                return None;
            };
            if !self.eat(':') {
                return None;
            }
            map.insert(key, self.value()?);
            if !self.eat(',') {
                return self.eat('}').then_some(Value::Object(map));
            }
        }
    }

    fn number(&mut self) -> Option<Value> {
        // One sign at most: literal_eval refuses `--1`.
        let mut sign = 1i64;
        if let Some(c @ ('-' | '+')) = self.peek() {
            if c == '-' {
                sign = -1;
            }
            self.at += 1;
            self.blanks();
        }
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            self.at += 1;
        }
        let word: String = self.chars[start..self.at].iter().collect();
        if word.starts_with('_') || word.ends_with('_') || word.contains("__") {
            return None;
        }
        let digits = word.replace('_', "");
        let radix = |prefix: &str, radix| {
            let lower = digits.to_ascii_lowercase();
            lower
                .strip_prefix(prefix)
                .and_then(|d| i64::from_str_radix(d, radix).ok())
        };
        let int = radix("0x", 16)
            .or_else(|| radix("0o", 8))
            .or_else(|| radix("0b", 2))
            .or_else(|| {
                let leading_zero = digits.len() > 1 && digits.starts_with('0');
                let all_zero = digits.bytes().all(|b| b == b'0');
                (digits.bytes().all(|b| b.is_ascii_digit()) && (!leading_zero || all_zero))
                    .then(|| digits.parse().ok())
                    .flatten()
            });
        if let Some(n) = int {
            return Some(Value::from(sign * n));
        }
        let float_chars = digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b"eE.".contains(&b));
        // A float has a point or an exponent: `0755` is neither int nor float.
        let float_form = digits.contains(['.', 'e', 'E']);
        if float_chars
            && float_form
            && digits.bytes().any(|b| b.is_ascii_digit())
            && !digits.ends_with(['e', 'E'])
        {
            let f: f64 = digits.parse().ok()?;
            return Number::from_f64(sign as f64 * f).map(Value::Number);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_read_as_python_literals_or_stay_text() {
        for (text, value) in [
            ("23", json!(23)),
            ("-4", json!(-4)),
            ("1_0", json!(10)),
            ("0x1F", json!(31)),
            ("0", json!(0)),
            ("1e3", json!(1000.0)),
            ("2.5", json!(2.5)),
            ("True", json!(true)),
            ("None", json!(null)),
            ("'x y'", json!("x y")),
            ("\"a\" 'b'", json!("ab")),
            ("[1, 'a', (2,)]", json!([1, "a", [2]])),
            ("(3)", json!(3)),
            ("{'k': [1]}", json!({"k": [1]})),
            ("/usr/bin/python3", json!("/usr/bin/python3")),
            ("true", json!("true")),
            ("~/.ssh/id", json!("~/.ssh/id")),
            ("spaced value", json!("spaced value")),
            ("a=b", json!("a=b")),
            ("10.0.0.1", json!("10.0.0.1")),
            ("0755", json!("0755")),
            ("1:30", json!("1:30")),
            ("--1", json!("--1")),
            ("foo, 1", json!("foo, 1")),
            ("", json!("")),
        ] {
            assert_eq!(literal(text).unwrap(), value, "{text}");
        }
        for text in [
            "1+2",
            "b'x'",
            "{1, 2}",
            "'\\x41'",
            "True, False",
            "80,443",
            "[1,",
            "1j",
        ] {
            let err = literal(text).unwrap_err();
            assert!(
                err.contains("cannot tell how Ansible reads"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn host_lines_split_as_shlex_does() {
        assert_eq!(
            shlex("h1 a=\"x y\" b='\"q\"' c=1#comment").unwrap(),
            ["h1", "a=x y", "b=\"q\"", "c=1"]
        );
        assert!(shlex("h1 a='x").is_err());
    }

    #[test]
    fn sections_hosts_vars_and_children() {
        let groups = parse(concat!(
            "lone ansible_port=2222\n",
            "[web]\n",
            "w[1:2] color=red\n",
            "[web:vars]\n",
            "ntp = pool.ntp.org \n",
            "[prod:children]\n",
            "web\n",
            "db\n",
            "[db]\n",
            "d1\n",
        ))
        .unwrap();
        assert_eq!(groups["ungrouped"].hosts[0].0, "lone");
        assert_eq!(groups["web"].hosts[0].2[0].1, json!("red"));
        assert_eq!(groups["web"].vars[0].1, json!("pool.ntp.org"));
        assert_eq!(groups["prod"].children.len(), 2);
        for (text, line, says) in [
            ("[web:vars]\nx=1\n", 1, "never declares"),
            ("[a:children]\nnope\n", 2, "never declares"),
            ("[a:hostz]\n", 1, "unknown type"),
            ("[a b]\n", 1, "invalid section"),
            ("[a]\nh1 novalue\n", 2, "expected key=value"),
            ("[a]\nh1:\n", 2, "reserved for a port"),
            ("[a:vars]\nx\n[a]\n", 2, "expected key=value"),
        ] {
            let (at, message) = parse(text).unwrap_err();
            assert_eq!(at, line, "{text}: {message}");
            assert!(message.contains(says), "{text}: {message}");
        }
    }
}
