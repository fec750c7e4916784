//! `remove`: takes away what `push` installed, in one remote command (see
//! `src/remote/tools.py`): the files the built-in playbook copies, its PATH
//! link while it still points at our launcher, the bin directory once empty.
//! Sessions and their registry stay unless `purge`. What to remove is what
//! the built-in playbook would install on the host, so a file csdeploy never
//! installs is never touched.

use serde_json::json;

use super::{Action, Decision, Facts, Installed, Module, ModuleKind, Op, Run};
use crate::builtin;
use crate::events::{TaskResult, TaskStatus};

#[derive(Debug, Clone)]
pub struct RemoveAction {
    pub host: String,
    pub claude_home: String,
    /// The files push copies there.
    pub files: Vec<String>,
    /// The link push makes, and where it points.
    pub link: Option<(String, String)>,
    pub purge: bool,
}

impl RemoveAction {
    /// What to remove on a host: the destinations of its push plan's tasks.
    pub fn from_push(host: &str, claude_home: &str, push: &[Action], purge: bool) -> RemoveAction {
        let mut files = Vec::new();
        let mut link = None;
        for installed in push.iter().filter_map(|action| action.installs()) {
            match installed {
                Installed::File(dest) => files.push(dest),
                Installed::Link(path, target) => link = Some((path, target)),
            }
        }
        RemoveAction {
            host: host.into(),
            claude_home: claude_home.into(),
            files,
            link,
            purge,
        }
    }
}

impl Module for RemoveAction {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Remove
    }

    fn path(&self) -> Option<&str> {
        Some(&self.claude_home)
    }

    fn judge(&self, task: &mut TaskResult) {
        judge(task);
    }

    fn decide(&self, _facts: &mut Facts, run: Run) -> Decision {
        let check_mode = run.check;
        let link = self
            .link
            .as_ref()
            .map(|(path, target)| json!({"path": path, "target": target}));
        Decision {
            op: Some(Op::program(
                &json!({
                    "action": "remove",
                    "host": self.host,
                    "claude_home": self.claude_home,
                    "files": self.files,
                    "link": link,
                    "purge": self.purge,
                    "check": check_mode,
                }),
                builtin::TOOLS,
                true,
            )),
            ..Decision::default()
        }
    }
}

pub fn judge(task: &mut TaskResult) {
    let Some(data) = &task.data else {
        return;
    };
    let list = |key: &str| data[key].as_array().cloned().unwrap_or_default();
    let (removed, kept) = (list("removed"), list("kept"));
    let check = data["check"] == true;
    let verb = if check { "would remove" } else { "removed" };
    let mut text = format!("{verb} {}, kept {}", removed.len(), kept.len());
    let text_of = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    for r in &removed {
        text.push_str(&format!("\n  {verb} {}", text_of(&r["path"])));
    }
    for k in &kept {
        text.push_str(&format!(
            "\n  kept {} ({})",
            text_of(&k["path"]),
            text_of(&k["reason"])
        ));
    }
    if task.status != TaskStatus::Failed && !removed.is_empty() {
        task.status = TaskStatus::Changed;
    }
    task.msg = Some(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::modules::program_op as program;

    #[test]
    fn decide_sends_what_push_installs_and_honours_check_mode() {
        let file = crate::modules::file::FileAction {
            path: "~/.local/bin/claude-session".into(),
            state: crate::modules::file::State::Link,
            mode: None,
            src: Some("/h/.claude/bin/claude-session".into()),
        };
        let copy = crate::modules::copy::CopyAction {
            dest: "~/.claude/bin/claude-session".into(),
            content: std::sync::Arc::new(Vec::new()),
            sha256: String::new(),
            mode: None,
            backup: false,
        };
        let push: Vec<Action> = vec![std::sync::Arc::new(copy), std::sync::Arc::new(file)];
        let action = RemoveAction::from_push("h", "~/.claude", &push, false);
        assert_eq!(action.files, ["~/.claude/bin/claude-session"]);
        let (args, honours) = program(action.decide(&mut Facts::empty(), Run::CHECK));
        assert!(honours, "remove is sent in check mode, changing nothing");
        assert_eq!(args["check"], true);
        assert_eq!(args["link"]["target"], "/h/.claude/bin/claude-session");
        let (args, _) = program(action.decide(&mut Facts::empty(), Run::PLAIN));
        assert_eq!(args["check"], false);
    }
}
