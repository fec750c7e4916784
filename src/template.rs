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
            (
                "echo $(( {{ n }} + 1 ))",
                Context::Unfollowed("an arithmetic expansion `$((`"),
            ),
            ("echo ${x:-{{ dir }}}", Context::ParameterExpansion),
            (
                "echo `ls {{ dir }}`",
                Context::Unfollowed("backquotes (write `$(...)`)"),
            ),
            ("true # {{ dir }}", Context::Comment),
            (
                "cat <<EOF\n{{ dir }}\nEOF",
                Context::Unfollowed("a here-document or here-string `<<`"),
            ),
            (
                "arr[{{ dir }}]=1",
                Context::Unfollowed("a bash array subscript `name[`"),
            ),
            ("ls *.[ch]{{ dir }}", Context::Subscript),
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

    /// Differential check against real shells: random command templates
    /// built from tricky shell fragments, rendered with hostile values, never
    /// run any of the value under dash, bash --posix or bash (those present).
    /// A refused template is fine; a rendered one must be inert.
    #[test]
    fn rendered_commands_never_run_a_value_in_real_shells() {
        const ATOMS: &[&str] = &[
            "echo ",
            "true",
            ":",
            "x",
            "a=1 ",
            "printf %s ",
            " ",
            " ",
            " ",
            ";",
            " && ",
            " || ",
            " | ",
            " & ",
            "\n",
            "\\\n",
            "\t",
            "'",
            "\"",
            "`",
            "$'",
            "$\"",
            "\\",
            "\\'",
            "\\\"",
            "\\`",
            "\\$",
            "$(",
            "$((",
            "${",
            "${x:-",
            "${x#",
            "${x%",
            "${x##",
            "${#x}",
            "${x}",
            "$x",
            "$#",
            "$$",
            "$[",
            "((",
            "(",
            ")",
            "))",
            "}",
            "{ ",
            " }",
            "]",
            ")\n",
            "#",
            " #",
            "<<",
            "<<EOF\n",
            "<<'EOF'\n",
            "<<-EOF\n",
            "\nEOF\n",
            "<<<",
            "<(",
            ">(",
            " </dev/null",
            " >/dev/null",
            "case x in ",
            "x) ",
            "(x) ",
            ";;",
            " esac",
            "if true; then ",
            "; fi",
            "for i in 1; do ",
            "; done",
            "f() { ",
            "'}'",
            "\"}\"",
            "')'",
            "\")\"",
            "'))'",
            "\\)",
            "\\}",
            "$",
            "=",
            "a#",
            "~",
            "*",
            "[[ ",
            " ]]",
            "!",
            "{a,b}",
            "$((1))",
            "$(true)",
            "`true`",
            "\"$(\"",
            "'\"'",
            "\"'\"",
            "$(echo ')')",
            "# c\n",
            "${x#'}'}",
            "\"${x#'}'}\"",
            "${x%\"}\"}",
            "\"${x%\"}\"}",
            "\"${x:-'}\"",
            "$(cat <<EOF\n",
            "$( ",
            "$(echo \")\")",
            "'$('",
            "\"$(echo \\\")\\\")\"",
            "$(( $(",
            " # )\n",
            "esac)",
            "in x)",
            "case x in x) ",
            "$(case x in x) ",
            "${x:+\"",
            "${x:-\"",
            "${x-'",
            "`echo \\`",
            "\"\\$(\"",
            "$(''",
            "${x:-$(",
            "${x#\\}}",
            "\"${x#\\}}\"",
            "let ",
            "declare -i x=",
            "a[",
            "x=(",
            "(( ",
        ];
        const CONTEXTS: &[&str] = &[
            "{}",
            "\"{}\"",
            "'{}'",
            "$(({}))",
            "${x:-{}}",
            "`{}`",
            "# {}\n",
            "<<EOF\n{}\nEOF\n",
            "$[{}]",
            "(({}))",
            "$'{}'",
            "$({})",
            "\"$({})\"",
            "$(echo {})",
            "\"$(echo {})\"",
            "a[{}]=1",
            "${x:$(echo {})}",
        ];
        const VALUES: &[&str] = &[
            "a'b\"c$(touch MARKER1)`touch MARKER2`;touch MARKER3 #\n touch MARKER4",
            "x}' \"$(touch MARKER7)\" `touch MARKER8` )\ntouch MARKER9\n",
        ];
        let shells: Vec<Vec<&str>> = [
            vec!["dash", "-c"],
            vec!["bash", "--posix", "-c"],
            vec!["bash", "-c"],
        ]
        .into_iter()
        .filter(|argv| {
            std::process::Command::new(argv[0])
                .arg("-c")
                .arg("true")
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
        assert!(!shells.is_empty(), "no shell to test with");
        let mut seed: u64 = 0x5eed_c5d3;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % n
        };
        let dir = tempfile::tempdir().unwrap();
        let (mut rendered, mut runs) = (0, 0);
        // CSDEPLOY_FUZZ_TEMPLATES=50000 searches further than CI needs to.
        let count = std::env::var("CSDEPLOY_FUZZ_TEMPLATES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1500);
        for _ in 0..count {
            let fragment = |k: usize, next: &mut dyn FnMut(usize) -> usize| -> String {
                (0..k).map(|_| ATOMS[next(ATOMS.len())]).collect()
            };
            let prefix = {
                let k = 1 + next(6);
                fragment(k, &mut next)
            };
            let inner = {
                let k = next(3);
                fragment(k, &mut next)
            } + "{{ v }}";
            let suffix = {
                let k = next(4);
                fragment(k, &mut next)
            };
            // Half the time the placeholder in a context of its own, else bare.
            let around = match next(2) {
                0 => CONTEXTS[next(CONTEXTS.len())].replacen("{}", &inner, 1),
                _ => inner,
            };
            let template = format!("{prefix}{around}{suffix}");
            for value in VALUES {
                let mut vars = Vars::new();
                vars.insert("v".into(), Value::from(*value));
                let Ok(command) = render(&template, &vars, Escape::Shell) else {
                    continue;
                };
                rendered += 1;
                for argv in &shells {
                    runs += 1;
                    let run = dir.path().join(format!("run{runs}"));
                    std::fs::create_dir(&run).unwrap();
                    let _ = std::process::Command::new("timeout")
                        .arg("2")
                        .args(argv)
                        .arg(&command)
                        .current_dir(&run)
                        .env_clear()
                        .env("PATH", "/usr/bin:/bin")
                        .env("HOME", &run)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status();
                    let markers: Vec<_> = std::fs::read_dir(&run)
                        .unwrap()
                        .filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().starts_with("MARKER"))
                        .collect();
                    assert!(
                        markers.is_empty(),
                        "{:?} ran the value of {{{{ v }}}}\ntemplate: {template:?}\nrendered: {command:?}",
                        argv[0]
                    );
                    std::fs::remove_dir_all(&run).unwrap();
                }
            }
        }
        assert!(
            rendered > 100,
            "only {rendered} of the templates rendered: the test tests little"
        );
    }
}
