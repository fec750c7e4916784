//! `rollback`: puts back what the last `push --backup` replaced on a host, in
//! one remote command (see `src/remote/tools.py`), from the manifest that
//! push's agent wrote (`src/remote/agent.py`). Refuses, changing
//! nothing, when a file changed since that push, unless `force`.

use serde_json::{Value, json};

use super::{Decision, Facts, Module, ModuleKind, Op, Run};
use crate::builtin;
use crate::events::{TaskResult, TaskStatus};

#[derive(Debug, Clone)]
pub struct RollbackAction {
    pub host: String,
    pub force: bool,
}

impl Module for RollbackAction {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Rollback
    }

    fn judge(&self, task: &mut TaskResult) {
        judge(task);
    }

    fn decide(&self, _facts: &mut Facts, run: Run) -> Decision {
        let (check_mode, want_diff) = (run.check, run.diff);
        Decision {
            op: Some(Op::program(
                &json!({
                    "action": "rollback",
                    "host": self.host,
                    "force": self.force,
                    "check": check_mode,
                    "diff": want_diff,
                }),
                builtin::TOOLS,
                true,
            )),
            ..Decision::default()
        }
    }
}

pub fn judge(task: &mut TaskResult) {
    let Some(Value::Object(data)) = &mut task.data else {
        return;
    };
    let check = data.get("check") == Some(&Value::Bool(true));
    let mut diffs = String::new();
    let mut text = String::new();
    let mut count = 0;
    if let Some(Value::Array(restored)) = data.get_mut("restored") {
        count = restored.len();
        for item in restored.iter_mut() {
            let path = item["path"].as_str().unwrap_or("?").to_string();
            let verb = match (item["action"].as_str(), check) {
                (Some("remove"), false) => "removed (new in that push)",
                (Some("remove"), true) => "would remove (new in that push)",
                (_, false) => "restored",
                (_, true) => "would restore",
            };
            text.push_str(&format!("\n  {verb} {path}"));
            // The texts travel only for the diff; the report keeps the paths.
            if let Some(fields) = item.as_object_mut() {
                let current = fields.remove("current");
                let previous = fields.remove("previous");
                if let (Some(Value::String(current)), Some(Value::String(previous))) =
                    (current, previous)
                {
                    diffs.push_str(&super::copy::unified_diff(
                        &path,
                        current.as_bytes(),
                        previous.as_bytes(),
                    ));
                }
            }
        }
    }
    if task.status == TaskStatus::Failed {
        return;
    }
    if count > 0 {
        task.status = TaskStatus::Changed;
    }
    let verb = if check { "would restore" } else { "restored" };
    let files = crate::report::plural(count, "file");
    task.msg = Some(format!("{verb} {files}{text}"));
    if !diffs.is_empty() {
        task.diff = Some(diffs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::modules::program_op as program;

    #[test]
    fn decide_passes_check_diff_and_force_on() {
        let action = RollbackAction {
            host: "h".into(),
            force: true,
        };
        let (args, honours) = program(action.decide(&mut Facts::empty(), Run::CHECK));
        assert!(honours);
        assert_eq!(
            (args["check"].clone(), args["diff"].clone()),
            (true.into(), false.into())
        );
        assert_eq!(args["force"], true);
        let (args, _) = program(action.decide(&mut Facts::empty(), Run::DIFF));
        assert_eq!(
            (args["check"].clone(), args["diff"].clone()),
            (false.into(), true.into())
        );
    }
}
