//! `file`: a directory that must exist (with a mode), or a path that must not.

use serde::Deserialize;

use super::{Action, Decision, Facts, Mode, Op, RenderError, render};
use crate::facts::Kind;
use crate::template::Escape;
use crate::vars::Vars;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Directory,
    Absent,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileArgs {
    pub path: String,
    pub state: State,
    pub mode: Option<Mode>,
}

#[derive(Debug, Clone)]
pub struct FileAction {
    pub path: String,
    pub state: State,
    pub mode: Option<u32>,
}

impl FileArgs {
    pub fn render(&self, vars: &Vars) -> Result<Action, RenderError> {
        Ok(Action::File(FileAction {
            path: render("path", &self.path, vars, Escape::Path)?,
            state: self.state,
            mode: self.mode.map(|m| m.0),
        }))
    }
}

impl FileAction {
    pub fn decide(&self, facts: &mut Facts) -> Decision {
        let state = facts.get(&self.path);
        match self.state {
            State::Absent if state.kind == Kind::Missing => Decision::default(),
            State::Absent => {
                facts.remove(&self.path);
                Decision {
                    changes: true,
                    op: Some(Op::remove(&self.path)),
                    msg: Some("removed".into()),
                    ..Decision::default()
                }
            }
            State::Directory => match state.kind {
                Kind::Dir if self.mode.is_none() || state.mode == self.mode => Decision::default(),
                Kind::Dir => {
                    facts.set(&self.path, Kind::Dir, self.mode, None);
                    Decision::chmod(&self.path, state.mode, self.mode.unwrap_or_default())
                }
                Kind::Missing => {
                    facts.set(&self.path, Kind::Dir, self.mode, None);
                    Decision {
                        changes: true,
                        op: Some(Op::mkdir(&self.path, self.mode)),
                        msg: Some("created".into()),
                        ..Decision::default()
                    }
                }
                other => Decision {
                    failure: Some(format!(
                        "{} exists and is not a directory ({other:?})",
                        state.path
                    )),
                    ..Decision::default()
                },
            },
        }
    }
}
