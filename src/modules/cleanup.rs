//! `cleanup`: runs the deployed `cleanup-sessions.py --json` on a host (see
//! `src/remote/tools.py`) and reports what it removed, or would, and what it
//! kept and why. The cleaner's rules stay its own; its exit code decides the
//! host's status: 0 ok (changed when it removed something), anything else
//! failed (see README, "Day two").

use serde_json::json;

use super::{Decision, Facts, Module, ModuleKind, Op, Run};
use crate::builtin;
use crate::events::{TaskResult, TaskStatus};

#[derive(Debug, Clone)]
pub struct CleanupAction {
    pub host: String,
    pub claude_home: String,
    pub dry_run: bool,
    pub days: Option<u32>,
    pub sessions: Vec<String>,
}

impl Module for CleanupAction {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Cleanup
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
                    "action": "cleanup",
                    "host": self.host,
                    "claude_home": self.claude_home,
                    "dry_run": self.dry_run,
                    "days": self.days,
                    "sessions": self.sessions,
                }),
                builtin::TOOLS,
                false,
            )),
            ..Decision::default()
        }
    }
}

/// One line per session the cleaner removed (or would) and kept, with its reason.
pub fn summary(data: &serde_json::Value) -> String {
    let list = |key: &str| data[key].as_array().cloned().unwrap_or_default();
    let (removed, kept) = (list("removed"), list("kept"));
    let verb = if data["dry_run"] == true {
        "would remove"
    } else {
        "removed"
    };
    let mut text = format!("{verb} {}, kept {}", removed.len(), kept.len());
    let text_of = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    for (word, items) in [(verb, &removed), ("kept", &kept)] {
        for item in items {
            text.push_str(&format!(
                "\n  {word} {} ({})",
                text_of(&item["id"]),
                text_of(&item["reason"])
            ));
        }
    }
    text
}

pub fn judge(task: &mut TaskResult) {
    let Some(data) = &task.data else {
        return;
    };
    let mut text = summary(data);
    if task.status == TaskStatus::Failed {
        if let Some(msg) = &task.msg {
            text = format!("{msg}\n  {}", text.replace('\n', "\n  "));
        }
    } else if data["dry_run"] != true && data["removed"].as_array().is_some_and(|r| !r.is_empty()) {
        task.status = TaskStatus::Changed;
    }
    task.msg = Some(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_every_session_and_reason() {
        let data = json!({
            "removed": [{"id": "a", "reason": "empty", "dir": "/s/a"}],
            "kept": [{"id": "b", "reason": "has-history", "dir": "/s/b"}],
            "dry_run": true,
        });
        assert_eq!(
            summary(&data),
            "would remove 1, kept 1\n  would remove a (empty)\n  kept b (has-history)"
        );
    }

    #[test]
    fn decide_names_the_sessions_and_is_never_sent_in_check_mode() {
        let action = CleanupAction {
            host: "h".into(),
            claude_home: "~/.claude".into(),
            dry_run: true,
            days: Some(3),
            sessions: vec!["a".into()],
        };
        let Some(Op::Program {
            args, check_mode, ..
        }) = action.decide(&mut Facts::empty(), Run::PLAIN).op
        else {
            panic!("a program op");
        };
        assert!(!check_mode, "--dry-run is cleanup's own check mode");
        assert_eq!(args["action"], "cleanup");
        assert_eq!(args["sessions"], json!(["a"]));
    }
}
