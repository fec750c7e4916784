//! `command`: a shell command line (`sh -c`), made idempotent by `creates`.
//!
//! Variables substituted into `cmd` are shell-quoted: a value is one word of
//! data, never code, whatever it contains.

use serde::Deserialize;

use super::{Action, Decision, Facts, Op, RenderError, render};
use crate::facts::Kind;
use crate::template::Escape;
use crate::vars::Vars;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandArgs {
    pub cmd: String,
    pub creates: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CommandAction {
    pub cmd: String,
    pub creates: Option<String>,
}

impl CommandArgs {
    pub fn render(&self, vars: &Vars) -> Result<Action, RenderError> {
        Ok(Action::Command(CommandAction {
            cmd: render("cmd", &self.cmd, vars, Escape::Shell)?,
            creates: self
                .creates
                .as_ref()
                .map(|c| render("creates", c, vars, Escape::Path))
                .transpose()?,
        }))
    }
}

impl CommandAction {
    pub fn decide(&self, facts: &mut Facts) -> Decision {
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
            op: Some(Op::command(&self.cmd, self.creates.as_deref())),
            msg: Some(format!("would run: {}", self.cmd)),
            ..Decision::default()
        }
    }
}
