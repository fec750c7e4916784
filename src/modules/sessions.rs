//! `sessions`: the sessions on a host, as the deployed `claude-session-list
//! --json` reports them (see `src/remote/tools.py`), in one remote command.
//! Its objects pass through unchanged: their keys are the list tool's contract.

use serde_json::json;

use super::{Decision, Facts, Module, ModuleKind, Op, Run};
use crate::builtin;
use crate::events::{TaskResult, TaskStatus};

#[derive(Debug, Clone)]
pub struct SessionsAction {
    pub host: String,
    pub claude_home: String,
    /// Only the active sessions (`--active`).
    pub active: bool,
}

impl Module for SessionsAction {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Sessions
    }

    fn path(&self) -> Option<&str> {
        Some(&self.claude_home)
    }

    fn judge(&self, task: &mut TaskResult) {
        judge(task);
    }

    fn decide(&self, _facts: &mut Facts, _run: Run) -> Decision {
        Decision {
            op: Some(Op::program(
                &json!({
                    "action": "sessions",
                    "host": self.host,
                    "claude_home": self.claude_home,
                    "active": self.active,
                }),
                builtin::TOOLS,
                false,
            )),
            ..Decision::default()
        }
    }
}

/// The sessions a task's step reported.
pub fn listed(task: &TaskResult) -> &[serde_json::Value] {
    task.data
        .as_ref()
        .and_then(|d| d["sessions"].as_array())
        .map_or(&[], Vec::as_slice)
}

/// How many sessions, by state, as the task's message.
pub fn judge(task: &mut TaskResult) {
    if task.status == TaskStatus::Failed {
        return;
    }
    let sessions = listed(task);
    let count = |state: &str| sessions.iter().filter(|s| s["state"] == state).count();
    task.msg = Some(format!(
        "{} sessions: {} active, {} ended, {} orphaned",
        sessions.len(),
        count("active"),
        count("ended"),
        count("orphaned")
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_counts_sessions_by_state() {
        let mut task = TaskResult {
            name: "sessions".into(),
            play: String::new(),
            module: ModuleKind::Sessions,
            status: TaskStatus::Ok,
            path: None,
            backup: None,
            diff: None,
            msg: None,
            rc: None,
            stdout: None,
            stderr: None,
            checks: Vec::new(),
            data: Some(
                json!({"sessions": [{"state": "active"}, {"state": "ended"}, {"state": "active"}]}),
            ),
        };
        judge(&mut task);
        assert_eq!(
            task.msg.as_deref(),
            Some("3 sessions: 2 active, 1 ended, 0 orphaned")
        );
    }

    #[test]
    fn decide_lists_only_the_active_when_asked() {
        let action = SessionsAction {
            host: "h".into(),
            claude_home: "~/.claude".into(),
            active: true,
        };
        let Some(Op::Program { args, .. }) = action.decide(&mut Facts::empty(), Run::PLAIN).op
        else {
            panic!("a program op");
        };
        assert_eq!(args["action"], "sessions");
        assert_eq!(args["active"], true);
    }
}
