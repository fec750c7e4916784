//! `remove`: takes away what `push` installed, in one remote command (see
//! `src/remote/tools.py`): the files the built-in playbook copies, its PATH
//! link while it still points at our launcher, the bin directory once empty.
//! Sessions and their registry stay unless `purge`. What to remove is what
//! the built-in playbook would install on the host, so a file csdeploy never
//! installs is never touched.

use serde_json::json;

use super::{Action, Decision, Op};
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
        for action in push {
            match action {
                Action::Copy(copy) => files.push(copy.dest.clone()),
                Action::File(file) => {
                    if let Some(src) = &file.src {
                        link = Some((file.path.clone(), src.clone()));
                    }
                }
                _ => {}
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

    pub fn decide(&self, check_mode: bool) -> Decision {
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
