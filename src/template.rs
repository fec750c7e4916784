//! `{{ var }}` substitution, the small part of Jinja that playbooks here need.
//!
//! There are no filters or expressions: a placeholder names one variable. An
//! undefined or null variable is an error, never an empty string.

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
    fn placeholders_are_found_anywhere() {
        assert!(has_placeholder("echo {{ x }}"));
        assert!(has_placeholder("echo \"{{x}}\""));
        assert!(!has_placeholder("echo \"$X\" {}"));
    }
}
