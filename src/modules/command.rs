//! `command`: run a program on the host, made
//! idempotent by `creates`.
//!
//! Data never becomes code. `argv` is run without a shell: each element is a
//! template and exactly one argument, whatever its value holds. `cmd` is
//! shell text run with `sh -c` and takes no placeholder at all: where a word
//! stands cannot tell what a shell does with it (`eval {{ v }}`). Values
//! reach shell text only as environment variables the task names in `env`,
//! and the script decides what to do with `"$NAME"`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{Decision, Facts, Module, ModuleKind, Op, Probe, RenderError, Run, render};
use crate::facts::Kind;
use crate::template::{Escape, has_placeholder};
use crate::vars::Vars;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandArgs {
    pub argv: Option<Vec<String>>,
    pub cmd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, Value>,
    pub creates: Option<String>,
}

pub use crate::protocol::Program;

#[derive(Debug, Clone)]
pub struct CommandAction {
    pub program: Program,
    pub env: Vec<(String, String)>,
    pub creates: Option<String>,
    /// The command as the playbook wrote it, placeholders unrendered: what
    /// reports show, so that no rendered value (a password) is printed.
    pub shown: String,
}

const USE_ARGV_OR_ENV: &str = "pass values as `argv:` (a list run without a shell, \
    one argument per element) or as `env: {NAME: \"{{ var }}\"}` and write \"$NAME\" in `cmd`";

impl CommandArgs {
    pub fn render(&self, vars: &Vars) -> Result<CommandAction, RenderError> {
        let (program, shown) = match (&self.argv, &self.cmd) {
            (Some(argv), None) => (self.render_argv(argv, vars)?, shell_words(argv)),
            (None, Some(cmd)) if has_placeholder(cmd) => {
                return Err(RenderError {
                    field: "cmd",
                    message: format!(
                        "`cmd` is shell text and takes no `{{{{ }}}}` placeholder \
                         (a shell may run a value as code): {USE_ARGV_OR_ENV}"
                    ),
                });
            }
            (None, Some(cmd)) if cmd.contains('\0') => {
                return Err(RenderError {
                    field: "cmd",
                    message: "contains a NUL byte, which no command can hold".into(),
                });
            }
            (None, Some(cmd)) => (Program::Shell(cmd.clone()), cmd.clone()),
            (Some(_), Some(_)) => {
                return Err(RenderError {
                    field: "argv",
                    message: "give either `argv` (no shell) or `cmd` (shell text), not both".into(),
                });
            }
            (None, None) => {
                return Err(RenderError {
                    field: "cmd",
                    message: "a command needs `argv` (a list, run without a shell) or `cmd` \
                              (shell text)"
                        .into(),
                });
            }
        };
        Ok(CommandAction {
            program,
            env: self.render_env(vars)?,
            creates: self
                .creates
                .as_ref()
                .map(|c| render("creates", c, vars, Escape::Path))
                .transpose()?,
            shown,
        })
    }

    fn render_argv(&self, argv: &[String], vars: &Vars) -> Result<Program, RenderError> {
        if argv.is_empty() {
            return Err(RenderError {
                field: "argv",
                message: "is empty: name the program to run first".into(),
            });
        }
        argv.iter()
            .map(|arg| render("argv", arg, vars, Escape::Path))
            .collect::<Result<_, _>>()
            .map(Program::Argv)
    }

    fn render_env(&self, vars: &Vars) -> Result<Vec<(String, String)>, RenderError> {
        let mut env = Vec::with_capacity(self.env.len());
        for (name, value) in &self.env {
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(RenderError {
                    field: "env",
                    message: format!("`{name}` is not a valid environment variable name"),
                });
            }
            let template = match value {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => value.to_string(),
                other => {
                    return Err(RenderError {
                        field: "env",
                        message: format!("{name}: expected a string, found {other}"),
                    });
                }
            };
            let text = render("env", &template, vars, Escape::Path).map_err(|err| RenderError {
                field: "env",
                message: format!("{name}: {}", err.message),
            })?;
            env.push((name.clone(), text));
        }
        Ok(env)
    }
}

/// An argv as one line a person can read (and paste into a shell).
fn shell_words(argv: &[String]) -> String {
    crate::quote::join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
}

impl Module for CommandAction {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Command
    }

    fn path(&self) -> Option<&str> {
        self.creates.as_deref()
    }

    fn probes(&self, _want_diff: bool) -> Vec<Probe> {
        self.creates.iter().map(|c| Probe::stat(c)).collect()
    }

    /// The reply says how the command ended (its exit code).
    fn reply_is_the_message(&self) -> bool {
        true
    }

    fn decide(&self, facts: &mut Facts, _run: Run) -> Decision {
        if let Some(creates) = &self.creates {
            let state = facts.get(creates);
            if state.kind != Kind::Missing {
                return Decision {
                    msg: Some(format!("skipped, since {} exists", state.path)),
                    ..Decision::default()
                };
            }
        }
        Decision {
            changes: true,
            op: Some(Op::Command {
                program: self.program.clone(),
                env: self.env.iter().cloned().collect(),
                creates: self.creates.clone(),
            }),
            msg: Some(format!("would run: {}", self.shown)),
            ..Decision::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.insert("dir".into(), Value::from("my dir $(touch /tmp/never)"));
        v.insert("secret".into(), Value::from("hunter2"));
        v
    }

    fn args(yaml: &str) -> CommandArgs {
        crate::yaml::load("t.yml", yaml).unwrap().0
    }

    fn action(yaml: &str) -> CommandAction {
        args(yaml).render(&vars()).unwrap()
    }

    #[test]
    fn argv_elements_are_each_one_argument() {
        let a = action("argv: [mkdir, -p, '{{ dir }}/logs']");
        assert_eq!(
            a.program,
            Program::Argv(vec![
                "mkdir".into(),
                "-p".into(),
                "my dir $(touch /tmp/never)/logs".into()
            ])
        );
        assert_eq!(a.shown, "mkdir -p '{{ dir }}/logs'");
    }

    #[test]
    fn a_placeholder_in_shell_text_is_refused_with_the_way_out() {
        for cmd in [
            "eval {{ dir }}",
            "sh -c {{ dir }}",
            "mkdir -p \"{{ dir }}\"",
        ] {
            let err = args(&format!("cmd: '{cmd}'")).render(&vars()).unwrap_err();
            assert_eq!(err.field, "cmd");
            assert!(err.message.contains("argv:"), "{}", err.message);
            assert!(err.message.contains("env:"), "{}", err.message);
        }
    }

    #[test]
    fn values_reach_shell_text_only_through_env() {
        let a = action("cmd: 'mkdir -p \"$DIR\"'\nenv: {DIR: '{{ dir }}', N: 3}");
        assert_eq!(a.program, Program::Shell("mkdir -p \"$DIR\"".into()));
        assert_eq!(
            a.env,
            vec![
                ("DIR".into(), "my dir $(touch /tmp/never)".into()),
                ("N".into(), "3".into())
            ]
        );
        let op = a.decide(&mut Facts::empty(), Run::PLAIN).op.unwrap();
        let wire = serde_json::to_value(&op).unwrap();
        assert_eq!(wire["sh"], "mkdir -p \"$DIR\"");
        assert_eq!(wire["env"]["DIR"], "my dir $(touch /tmp/never)");
    }

    #[test]
    fn reports_show_the_template_not_the_rendered_value() {
        let a = action("argv: [login, '{{ secret }}']");
        let decision = a.decide(&mut Facts::empty(), Run::PLAIN);
        let msg = decision.msg.unwrap();
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("{{ secret }}"), "{msg}");
    }

    #[test]
    fn malformed_commands_are_refused() {
        for (yaml, field) in [
            ("argv: []", "argv"),
            ("argv: [a]\ncmd: b", "argv"),
            ("creates: x", "cmd"),
            ("argv: [a]\nenv: {'1X': y}", "env"),
            ("argv: [a]\nenv: {X: [1]}", "env"),
            ("argv: [a]\nenv: {X: '{{ nope }}'}", "env"),
            ("argv: ['{{ nope }}']", "argv"),
        ] {
            let err = args(yaml).render(&vars()).unwrap_err();
            assert_eq!(err.field, field, "{yaml}: {}", err.message);
        }
    }
}
