//! `{{ var }}` substitution, the small part of Jinja that playbooks here need.
//!
//! There are no filters or expressions: a placeholder names one variable. An
//! undefined variable is an error, never an empty string.

use serde_json::Value;

use crate::vars::Vars;

/// How a substituted value is written into the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As it is: paths, file contents.
    None,
    /// Shell-quoted, for `command` lines: a variable is data, never code.
    Shell,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TemplateError {
    Undefined(String),
    Unclosed,
    BadName(String),
    Nul(String),
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::Undefined(name) => write!(f, "undefined variable `{name}`"),
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

/// The text a variable's value stands for in a template.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn render(template: &str, vars: &Vars, escape: Escape) -> Result<String, TemplateError> {
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
        let text = value_text(value);
        match escape {
            Escape::None => out.push_str(&text),
            Escape::Shell => out.push_str(
                &crate::quote::shell(&text).map_err(|_| TemplateError::Nul(name.to_string()))?,
            ),
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
        v.insert("evil".into(), Value::from("$(touch /tmp/x); 'q'"));
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
    fn shell_escape_quotes_values() {
        let out = render("printf %s {{ evil }}", &vars(), Escape::Shell).unwrap();
        let printed = std::process::Command::new("sh")
            .arg("-c")
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(printed.stdout).unwrap(),
            "$(touch /tmp/x); 'q'"
        );
    }
}
