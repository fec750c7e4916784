//! `{{ var }}` substitution, the small part of Jinja that playbooks and
//! inventories here need.
//!
//! There are no filters or expressions: a placeholder names one variable. An
//! undefined or null variable is an error, never an empty string. Inventory
//! variables are resolved as Ansible resolves them ([`resolve_vars`]); a
//! playbook template never inserts a value that still holds Jinja.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::vars::Vars;

/// How a substituted value is written into the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As it is: file contents.
    None,
    /// As it is, but never with a NUL byte, which no path can hold.
    Path,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TemplateError {
    Undefined(String),
    Null(String),
    Unclosed,
    BadName(String),
    Nul(String),
    /// A NUL byte in the template's own text, where it goes into a path or command.
    NulInText,
    /// The variable's value holds Jinja csdeploy did not evaluate (see [`resolve_vars`]).
    Unevaluated(String),
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::Undefined(name) => write!(f, "undefined variable `{name}`"),
            TemplateError::Null(name) => write!(
                f,
                "variable `{name}` is null (YAML reads a bare `~` or an empty value as null): give it a value, in quotes if it starts with `~`"
            ),
            TemplateError::NulInText => {
                f.write_str("contains a NUL byte, which no path or command can hold")
            }
            TemplateError::Unclosed => write!(f, "`{{{{` without a closing `}}}}`"),
            TemplateError::Nul(name) => write!(f, "variable `{name}` {}", crate::quote::NulByte),
            TemplateError::Unevaluated(name) => write!(
                f,
                "variable `{name}` holds Jinja csdeploy cannot evaluate (filters, lookups, \
                 expressions; only `{{{{ name }}}}` is): `csdeploy inventory` shows it; write \
                 its value itself"
            ),
            TemplateError::BadName(name) => {
                write!(
                    f,
                    "`{name}` is not a variable name (only `{{{{ name }}}}` is supported)"
                )
            }
        }
    }
}

/// Whether `text` holds a `{{` placeholder at all (shell text may not).
pub fn has_placeholder(text: &str) -> bool {
    text.contains("{{")
}

/// The text a variable's value stands for in a template; none for null.
pub fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

pub fn render(template: &str, vars: &Vars, escape: Escape) -> Result<String, TemplateError> {
    if escape != Escape::None && template.contains('\0') {
        return Err(TemplateError::NulInText);
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let name = after[..end].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(TemplateError::BadName(name.to_string()));
        }
        let value = vars
            .get(name)
            .ok_or_else(|| TemplateError::Undefined(name.to_string()))?;
        let text = value_text(value).ok_or_else(|| TemplateError::Null(name.to_string()))?;
        if holds_jinja(value) {
            return Err(TemplateError::Unevaluated(name.to_string()));
        }
        let nul = || TemplateError::Nul(name.to_string());
        match escape {
            Escape::None => out.push_str(&text),
            Escape::Path if text.contains('\0') => return Err(nul()),
            Escape::Path => out.push_str(&text),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `value` (at any depth) holds Jinja: `{{`, `{%` or `{#`.
pub fn holds_jinja(value: &Value) -> bool {
    match value {
        Value::String(s) => text_holds_jinja(s),
        Value::Array(items) => items.iter().any(holds_jinja),
        Value::Object(map) => map.values().any(holds_jinja),
        _ => false,
    }
}

/// Whether `text` holds `{{`, `{%` or `{#`. Searched for `{` alone, which
/// std does with memchr even in a debug build: inventories hold values of
/// many megabytes, and every host's variables are checked.
fn text_holds_jinja(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = text[from..].find('{') {
        let at = from + found;
        if matches!(bytes.get(at + 1), Some(b'{' | b'%' | b'#')) {
            return true;
        }
        from = at + 1;
    }
    false
}

/// Magic variables Ansible provides that csdeploy does not: a template
/// naming one is told so, not that it is undefined.
const NOT_PROVIDED: &[&str] = &[
    "groups",
    "hostvars",
    "playbook_dir",
    "play_hosts",
    "ansible_play_hosts",
    "ansible_play_batch",
    "role_path",
    "omit",
];

/// Inventory variables with every `{{ name }}` resolved, as Ansible resolves
/// them when a host uses them: lazily, against the host's merged variables
/// and `magic` ones (`inventory_hostname`, `group_names`, ...), a variable
/// naming another that is itself a template. A value that is one
/// placeholder and nothing else is the named value itself, of its type (as
/// ansible-core 2.19's native templating gives it); inside text, a value is
/// written as Python writes it (`True`, `3`). A value csdeploy cannot
/// resolve (a filter, a lookup, an expression, `{% %}`, an undefined name,
/// a loop) stays as written, and the second map says why, for each such
/// variable: it is an error only where the value is used.
pub fn resolve_vars(mut values: Vars, magic: &Vars) -> (Vars, BTreeMap<String, String>) {
    let templated: Vec<String> = values
        .iter()
        .filter(|(_, value)| holds_jinja(value))
        .map(|(key, _)| key.clone())
        .collect();
    let mut outcomes = Vec::with_capacity(templated.len());
    let mut resolver = Resolver {
        values: &values,
        magic,
        done: BTreeMap::new(),
        stack: Vec::new(),
    };
    for key in templated {
        let outcome = resolver.variable(&key);
        outcomes.push((key, outcome));
    }
    let mut failed = BTreeMap::new();
    for (key, outcome) in outcomes {
        match outcome {
            Ok(value) => {
                values.insert(key, value);
            }
            Err(why) => {
                failed.insert(key, why);
            }
        }
    }
    (values, failed)
}

struct Resolver<'a> {
    values: &'a Vars,
    magic: &'a Vars,
    done: BTreeMap<String, Result<Value, String>>,
    stack: Vec<String>,
}

impl Resolver<'_> {
    fn variable(&mut self, name: &str) -> Result<Value, String> {
        if let Some(done) = self.done.get(name) {
            return done.clone();
        }
        if self.stack.iter().any(|n| n == name) {
            return Err(format!(
                "`{name}` refers to itself ({} -> {name})",
                self.stack.join(" -> ")
            ));
        }
        let Some(raw) = self.values.get(name).or_else(|| self.magic.get(name)) else {
            return Err(if NOT_PROVIDED.contains(&name) {
                format!("`{name}` is a variable Ansible provides and csdeploy does not")
            } else {
                format!("`{name}` is undefined")
            });
        };
        self.stack.push(name.to_string());
        let result = self.value(&raw.clone());
        self.stack.pop();
        self.done.insert(name.to_string(), result.clone());
        result
    }

    fn value(&mut self, value: &Value) -> Result<Value, String> {
        match value {
            Value::String(text) => self.text(text),
            Value::Array(items) => items.iter().map(|v| self.value(v)).collect(),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.value(v)?)))
                .collect::<Result<serde_json::Map<_, _>, String>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    fn text(&mut self, text: &str) -> Result<Value, String> {
        if text.contains("{%") || text.contains("{#") {
            return Err("`{% ... %}` and `{# ... #}`: csdeploy evaluates only `{{ name }}`".into());
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| TemplateError::Unclosed.to_string())?;
            let inner = &after[..end];
            let name = inner.trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`{{{{{inner}}}}}`: csdeploy evaluates only `{{{{ name }}}}`, no filters, \
                     lookups or expressions"
                ));
            }
            let value = self.variable(name)?;
            rest = &after[end + 2..];
            if start == 0 && out.is_empty() && rest.is_empty() {
                return Ok(value);
            }
            match value {
                Value::String(s) => out.push_str(&s),
                Value::Bool(b) => out.push_str(if b { "True" } else { "False" }),
                Value::Number(n) => out.push_str(&n.to_string()),
                Value::Null => return Err(TemplateError::Null(name.to_string()).to_string()),
                _ => {
                    return Err(format!(
                        "`{name}` is a list or a map inside text, which Ansible would write as \
                         Python's text: csdeploy does not; use `{{{{ {name} }}}}` as the whole value"
                    ));
                }
            }
        }
        out.push_str(rest);
        Ok(Value::String(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.insert("home".into(), Value::from("~/.claude"));
        v.insert("n".into(), Value::from(3));
        v
    }

    #[test]
    fn substitutes_and_keeps_the_rest() {
        let out = render("{{home}}/bin and {{ n }}", &vars(), Escape::None).unwrap();
        assert_eq!(out, "~/.claude/bin and 3");
    }

    #[test]
    fn undefined_is_an_error() {
        let err = render("a {{ nope }}", &vars(), Escape::None).unwrap_err();
        assert_eq!(err, TemplateError::Undefined("nope".into()));
        assert_eq!(
            render("{{ home", &vars(), Escape::None),
            Err(TemplateError::Unclosed)
        );
        assert!(matches!(
            render("{{ a | b }}", &vars(), Escape::None),
            Err(TemplateError::BadName(_))
        ));
    }

    #[test]
    fn null_is_an_error_not_an_empty_string() {
        let mut v = vars();
        v.insert("nothing".into(), Value::Null);
        for escape in [Escape::None, Escape::Path] {
            assert_eq!(
                render("{{ nothing }}/sessions", &v, escape),
                Err(TemplateError::Null("nothing".into()))
            );
        }
    }

    #[test]
    fn nul_bytes_never_reach_a_path_or_an_argument() {
        let mut v = vars();
        v.insert("nul".into(), Value::from("a\0b"));
        assert_eq!(
            render("x/{{ nul }}", &v, Escape::Path),
            Err(TemplateError::Nul("nul".into()))
        );
        assert_eq!(
            render("a\0b", &v, Escape::Path),
            Err(TemplateError::NulInText)
        );
        assert_eq!(render("a\0{{ nul }}", &v, Escape::None).unwrap(), "a\0a\0b");
    }

    #[test]
    fn jinja_is_found_at_any_depth_and_only_there() {
        for text in ["{{ x }}", "a{%", "{#", "{ {{"] {
            assert!(holds_jinja(&Value::from(text)), "{text}");
        }
        for text in ["{ x }", "{", "a{b}{", "%}", ""] {
            assert!(!holds_jinja(&Value::from(text)), "{text}");
        }
        assert!(holds_jinja(&serde_json::json!([1, {"k": ["{{x}}"]}])));
        assert!(!holds_jinja(&serde_json::json!([1, {"k": ["{x}"]}])));
    }

    #[test]
    fn placeholders_are_found_anywhere() {
        assert!(has_placeholder("echo {{ x }}"));
        assert!(has_placeholder("echo \"{{x}}\""));
        assert!(!has_placeholder("echo \"$X\" {}"));
    }

    #[test]
    fn inventory_vars_resolve_lazily_with_their_types() {
        let values: Vars = serde_json::from_value(serde_json::json!({
            "domain": "example.com",
            "n": 3,
            "flag": true,
            "ports": [22, 2222],
            "host": "{{ inventory_hostname }}.{{ domain }}",
            "whole": "{{ n }}",
            "chain": "{{ whole }}",
            "text": "x{{ n }}-{{ flag }}",
            "list": "{{ ports }}",
            "nested": ["{{ n }}", {"z": "{{ domain }}"}],
            "groups_too": "{{ group_names }}",
        }))
        .unwrap();
        let magic: Vars = serde_json::from_value(serde_json::json!({
            "inventory_hostname": "w1",
            "group_names": ["web"],
        }))
        .unwrap();
        let (resolved, failed) = resolve_vars(values, &magic);
        assert!(failed.is_empty(), "{failed:?}");
        let get = |k: &str| resolved[k].clone();
        assert_eq!(get("host"), "w1.example.com");
        assert_eq!(get("whole"), 3);
        assert_eq!(get("chain"), 3);
        assert_eq!(get("text"), "x3-True");
        assert_eq!(get("list"), serde_json::json!([22, 2222]));
        assert_eq!(get("nested"), serde_json::json!([3, {"z": "example.com"}]));
        assert_eq!(get("groups_too"), serde_json::json!(["web"]));
        assert!(!resolved.contains_key("inventory_hostname"));
    }

    #[test]
    fn what_csdeploy_cannot_resolve_stays_as_written_with_the_reason() {
        let values: Vars = serde_json::from_value(serde_json::json!({
            "filter": "{{ x | default('y') }}",
            "lookup": "{{ lookup('env', 'HOME') }}",
            "block": "{% if a %}b{% endif %}",
            "undefined": "{{ nope }}",
            "magic": "{{ hostvars }}",
            "a": "{{ b }}",
            "b": "{{ a }}",
            "uses_filter": "{{ filter }}",
            "list_in_text": "x{{ l }}",
            "l": [1],
            "unclosed": "{{ a",
        }))
        .unwrap();
        let (resolved, failed) = resolve_vars(values.clone(), &Vars::new());
        assert_eq!(resolved["filter"], values["filter"]);
        for (key, why) in [
            ("filter", "no filters"),
            ("lookup", "no filters, lookups"),
            ("block", "`{% ... %}`"),
            ("undefined", "`nope` is undefined"),
            ("magic", "Ansible provides and csdeploy does not"),
            ("a", "refers to itself (a -> b -> a)"),
            ("b", "refers to itself"),
            ("uses_filter", "no filters"),
            ("list_in_text", "inside text"),
            ("unclosed", "without a closing"),
        ] {
            assert!(failed[key].contains(why), "{key}: {}", failed[key]);
        }
        assert!(!failed.contains_key("l"));
        // A playbook template never inserts such a value.
        assert_eq!(
            render("{{ filter }}", &resolved, Escape::None),
            Err(TemplateError::Unevaluated("filter".into()))
        );
    }
}
