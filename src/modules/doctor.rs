//! `doctor`: what the tooling and Claude Code need on a host, judged there in
//! one remote command (`src/remote/doctor.py`; `src/remote/doctor.sh` answers
//! where no python3 can run). Its items are checks, like a verification's, so
//! the text, JSON and JUnit reports show them the same way.

use std::time::SystemTime;

use serde_json::json;

use super::{Decision, Facts, Module, ModuleKind, Op, Run};
use crate::builtin;
use crate::error::{Error, Result};
use crate::events::{CheckStatus, TaskResult, TaskStatus};
use crate::host::Host;
use crate::plan;

#[derive(Debug, Clone)]
pub struct DoctorAction {
    pub claude_home: String,
    pub max_sessions: u64,
}

impl DoctorAction {
    /// The doctor of one host, from its inventory variables.
    pub fn for_host(host: &Host) -> Result<DoctorAction> {
        let max_sessions = super::verify::max_sessions(&plan::var_text(host, "max_sessions")?)
            .map_err(|message| Error::Selection(format!("host {}: {message}", host.name)))?;
        Ok(DoctorAction {
            claude_home: plan::var_text(host, "claude_home")?,
            max_sessions,
        })
    }
}

impl Module for DoctorAction {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Doctor
    }

    fn path(&self) -> Option<&str> {
        Some(&self.claude_home)
    }

    fn judge(&self, task: &mut TaskResult) {
        judge(task);
    }

    fn without_python(&self) -> Option<&'static str> {
        Some(builtin::DOCTOR_SH)
    }

    fn decide(&self, _facts: &mut Facts, _run: Run) -> Decision {
        self.decide_at(SystemTime::now())
    }
}

impl DoctorAction {
    /// `now`: the controller's clock as the command leaves, which the host
    /// compares its own with.
    pub fn decide_at(&self, now: SystemTime) -> Decision {
        let controller_time = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Decision {
            op: Some(Op::program(
                &json!({
                    "claude_home": self.claude_home,
                    "max_sessions": self.max_sessions,
                    "controller_time": controller_time,
                }),
                builtin::DOCTOR,
                false,
            )),
            ..Decision::default()
        }
    }
}

/// A host fails when an item fails; warnings pass.
pub fn judge(task: &mut TaskResult) {
    if task.status == TaskStatus::Failed {
        return;
    }
    let failing: Vec<&str> = task
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .map(|c| c.id.as_str())
        .collect();
    if failing.is_empty() {
        task.status = TaskStatus::Ok;
        task.msg = Some(format!("{} items checked", task.checks.len()));
    } else {
        task.status = TaskStatus::Failed;
        task.msg = Some(format!("failed: {}", failing.join(", ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controller_time_travels_in_the_arguments() {
        let action = DoctorAction {
            claude_home: "~/.claude".into(),
            max_sessions: 4,
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        let Some(Op::Program { args, .. }) = action.decide_at(at).op else {
            panic!("the doctor is a program");
        };
        assert_eq!(args["controller_time"], 1.5);
        assert_eq!(args["max_sessions"], 4);
    }
}
