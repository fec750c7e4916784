//! What the engine tells the world. The engine never prints: it sends these,
//! and reporters (human, JSON) turn them into output.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ExitCode;

/// The csdeploy command a run is for: what shapes its reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Push,
    Run,
    Verify,
    Doctor,
    Sessions,
    Cleanup,
    Remove,
    Rollback,
}

impl Command {
    const ALL: [Command; 8] = [
        Command::Push,
        Command::Run,
        Command::Verify,
        Command::Doctor,
        Command::Sessions,
        Command::Cleanup,
        Command::Remove,
        Command::Rollback,
    ];

    /// The command a report names (`"command"` of a JSON report).
    pub fn named(name: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The command's name on the command line and in every report.
    pub fn name(self) -> &'static str {
        match self {
            Command::Push => "push",
            Command::Run => "run",
            Command::Verify => "verify",
            Command::Doctor => "doctor",
            Command::Sessions => "sessions",
            Command::Cleanup => "cleanup",
            Command::Remove => "remove",
            Command::Rollback => "rollback",
        }
    }

    /// Whether its report is a verification's: checks, and each host's
    /// pass, fail or unreachable.
    pub fn reports_checks(self) -> bool {
        matches!(self, Command::Verify | Command::Doctor)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Ok,
    Changed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    pub name: String,
    pub play: String,
    pub module: crate::modules::ModuleKind,
    pub status: TaskStatus,
    pub path: Option<String>,
    pub backup: Option<String>,
    pub diff: Option<String>,
    pub msg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rc: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// The verification's checks, for a `verify` task.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// What a day-two program found (sessions, cleanup, remove), as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Fail,
    Warn,
    Skip,
}

/// One verification check on one host, as the remote verifier judged it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub id: String,
    pub status: CheckStatus,
    pub expected: Option<String>,
    pub actual: Option<String>,
    pub detail: Option<String>,
    pub duration_ms: u64,
    /// On the `client` check: which client the sessions ran (`kind`,
    /// `path`, `version`), for the reports to name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    Ok,
    Changed,
    Failed,
    Unreachable,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub host: String,
    pub status: HostStatus,
    pub ok: usize,
    pub changed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub remote_commands: usize,
    pub duration_ms: u64,
    /// Where the host's time went.
    pub phases: Phases,
    pub tasks: Vec<TaskResult>,
    pub error: Option<String>,
}

/// Milliseconds per phase of a host's run: connecting (the SSH handshake),
/// the gather command, the apply command (which includes a verification).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Phases {
    pub connect_ms: u64,
    pub gather_ms: u64,
    pub apply_ms: u64,
}

impl HostReport {
    pub fn new(
        host: &str,
        tasks: Vec<TaskResult>,
        error: Option<String>,
        unreachable: bool,
    ) -> HostReport {
        let count = |s: TaskStatus| tasks.iter().filter(|t| t.status == s).count();
        let (ok, changed, failed, skipped) = (
            count(TaskStatus::Ok),
            count(TaskStatus::Changed),
            // A host that failed outside any task (its remote step could not
            // run) has failed once, as Ansible's recap counts it.
            count(TaskStatus::Failed).max(usize::from(error.is_some() && !unreachable)),
            count(TaskStatus::Skipped),
        );
        let status = if unreachable {
            HostStatus::Unreachable
        } else if failed > 0 || error.is_some() {
            HostStatus::Failed
        } else if changed > 0 {
            HostStatus::Changed
        } else {
            HostStatus::Ok
        };
        HostReport {
            host: host.to_string(),
            status,
            ok,
            changed,
            failed,
            skipped,
            remote_commands: 0,
            duration_ms: 0,
            phases: Phases::default(),
            tasks,
            error,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// This run's id (a UUID), the same in every report of it, so that a CI
    /// log, a JSON artifact and a JUnit file can be matched up.
    pub run_id: String,
    pub hosts: usize,
    pub ok: usize,
    pub changed: usize,
    pub failed: usize,
    pub unreachable: usize,
    pub remote_commands: usize,
    pub duration_ms: u64,
    pub check: bool,
    /// What the process exits with, unless a report cannot be written.
    pub exit_code: ExitCode,
}

impl Summary {
    /// `interrupted`: the run was stopped by a signal, which decides the exit
    /// code whatever the hosts did.
    pub fn of(
        run_id: &str,
        reports: &[HostReport],
        duration_ms: u64,
        check: bool,
        interrupted: bool,
    ) -> Summary {
        let count = |s: HostStatus| reports.iter().filter(|r| r.status == s).count();
        let failed = count(HostStatus::Failed);
        let unreachable = count(HostStatus::Unreachable);
        Summary {
            run_id: run_id.to_string(),
            hosts: reports.len(),
            ok: count(HostStatus::Ok),
            changed: count(HostStatus::Changed),
            failed,
            unreachable,
            remote_commands: reports.iter().map(|r| r.remote_commands).sum(),
            duration_ms,
            check,
            exit_code: if interrupted {
                ExitCode::Interrupted
            } else {
                ExitCode::for_outcome(failed > 0, unreachable > 0)
            },
        }
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    RunStarted {
        command: Command,
        hosts: Vec<String>,
        check: bool,
        /// The inventory file the hosts came from; None: the built-in one.
        inventory: Option<String>,
        /// Each host's planned task names, in the order of `hosts`: what
        /// a progress bar counts, and what a failed host never got to.
        tasks: Vec<Vec<String>>,
    },
    HostStarted {
        host: String,
    },
    HostConnected {
        host: String,
    },
    /// A host's remote step began: `task` names what it works on (the
    /// gather, or the tasks one apply command carries out together).
    TaskStarted {
        host: String,
        task: String,
    },
    TaskDone {
        host: String,
        task: TaskResult,
    },
    HostDone(HostReport),
    RunDone(Summary),
}
