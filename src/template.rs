//! `{{ var }}` substitution, the small part of Jinja that playbooks here need.
//!
//! There are no filters or expressions: a placeholder names one variable. An
//! undefined or null variable is an error, never an empty string.

use serde_json::Value;

use crate::shell_context::{Context, Scanner};
use crate::vars::Vars;

/// How a substituted value is written into the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As it is: file contents.
    None,
    /// As it is, but never with a NUL byte, which no path can hold.
    Path,
    /// Shell-quoted, for `command` lines: a variable is one word of data,
    /// never code. A leading `~` stays the home directory (`"$HOME"`).
    Shell,
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
    /// A placeholder where a shell would not read a quoted value as one word.
    NotAWord(String, Context),
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
            TemplateError::NotAWord(name, context) => write!(
                f,
                "`{{{{ {name} }}}}` stands inside {context}, where a shell would not read its value as \
                 one word of data: write it outside quotes (values are quoted for you), e.g. \
                 `mkdir -p {{{{ {name} }}}}/logs`"
            ),
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

/// The text a variable's value stands for in a template; none for null.
pub fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// `value` as one shell word; `~` and `~/...` mean the home directory, as
/// they do in every path csdeploy handles.
fn shell_word(value: &str) -> Result<String, crate::quote::NulByte> {
    let home = |rest: &str| -> Result<String, crate::quote::NulByte> {
        if rest.is_empty() {
            Ok("\"$HOME\"".to_string())
        } else {
            Ok(format!("\"$HOME\"{}", crate::quote::shell(rest)?))
        }
    };
    match value.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => home(rest),
        _ => crate::quote::shell(value),
    }
}

pub fn render(template: &str, vars: &Vars, escape: Escape) -> Result<String, TemplateError> {
    if escape != Escape::None && template.contains('\0') {
        return Err(TemplateError::NulInText);
    }
    let mut out = String::with_capacity(template.len());
    let mut shell = Scanner::default();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        shell.feed(&rest[..start]);
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
            Escape::Shell => {
                let context = shell.context();
                if context != Context::Word {
                    return Err(TemplateError::NotAWord(name.to_string(), context));
                }
                out.push_str(&shell_word(&text).map_err(|_| nul())?);
                shell.word_written();
            }
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

    fn sh(command: &str, home: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("HOME", home)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn null_is_an_error_not_an_empty_string() {
        let mut v = vars();
        v.insert("nothing".into(), Value::Null);
        for escape in [Escape::None, Escape::Path, Escape::Shell] {
            assert_eq!(
                render("{{ nothing }}/sessions", &v, escape),
                Err(TemplateError::Null("nothing".into()))
            );
        }
    }

    #[test]
    fn nul_bytes_never_reach_a_path_or_a_command() {
        let mut v = vars();
        v.insert("nul".into(), Value::from("a\0b"));
        assert_eq!(
            render("x/{{ nul }}", &v, Escape::Path),
            Err(TemplateError::Nul("nul".into()))
        );
        assert_eq!(
            render("ls {{ nul }}", &v, Escape::Shell),
            Err(TemplateError::Nul("nul".into()))
        );
        assert_eq!(
            render("a\0b", &v, Escape::Path),
            Err(TemplateError::NulInText)
        );
        assert_eq!(
            render("a\0b", &v, Escape::Shell),
            Err(TemplateError::NulInText)
        );
        assert_eq!(render("a\0{{ nul }}", &v, Escape::None).unwrap(), "a\0a\0b");
    }

    #[test]
    fn a_leading_tilde_in_a_shell_value_is_the_home_directory() {
        let mut v = vars();
        v.insert("bare".into(), Value::from("~"));
        v.insert("odd".into(), Value::from("~root's"));
        v.insert("inner".into(), Value::from("a/~/b"));
        let out = render(
            "printf '%s|' {{ home }}/bin {{ bare }} --dir={{ home }} {{ odd }} {{ inner }}",
            &v,
            Escape::Shell,
        )
        .unwrap();
        assert_eq!(
            sh(&out, "/h o/me"),
            "/h o/me/.claude/bin|/h o/me|--dir=/h o/me/.claude|~root's|a/~/b|"
        );
    }

    #[test]
    fn a_placeholder_where_a_value_would_not_be_one_word_is_refused() {
        let mut v = vars();
        v.insert(
            "dir".into(),
            Value::from("my dir $(touch /tmp/csdeploy-never)"),
        );
        for (template, context) in [
            ("mkdir -p \"{{ dir }}\"", Context::DoubleQuotes),
            ("echo '{{ dir }}'", Context::SingleQuotes),
            ("echo $(( {{ n }} + 1 ))", Context::Arithmetic),
            ("echo ${x:-{{ dir }}}", Context::ParameterExpansion),
            ("echo `ls {{ dir }}`", Context::Backquotes),
            ("true # {{ dir }}", Context::Comment),
            ("cat <<EOF\n{{ dir }}\nEOF", Context::HereDocument),
            ("echo \\{{ dir }}", Context::Escaped),
            ("echo ${{ dir }}", Context::AfterDollar),
            ("echo \"$(ls)\"{{ n }}\"{{ dir }}\"", Context::DoubleQuotes),
        ] {
            let name = if template.contains("{{ n }} +") {
                "n"
            } else {
                "dir"
            };
            assert_eq!(
                render(template, &v, Escape::Shell),
                Err(TemplateError::NotAWord(name.into(), context)),
                "{template}"
            );
        }
        let err = render("mkdir -p \"{{ dir }}\"", &v, Escape::Shell).unwrap_err();
        assert!(err.to_string().contains("inside double quotes"), "{err}");
    }

    #[test]
    fn a_placeholder_inside_a_command_substitution_is_one_word() {
        let out = render(
            "printf %s \"$(printf %s {{ evil }})\"",
            &vars(),
            Escape::Shell,
        )
        .unwrap();
        assert_eq!(sh(&out, "/"), "$(touch /tmp/x); 'q'");
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
