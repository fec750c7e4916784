//! `--format json`: one document when the run ends. Its key names are a
//! contract for CI users: add keys, never rename them.
//!
//! push/run: `{"command","hosts":[{"host","status":"ok|changed|failed|unreachable",
//! "ok","changed","failed","remote_commands","duration_ms","tasks":[...],"error"}],"summary"}`.
//! verify (and doctor, with its command's name): `{"command":"verify","hosts":[{"host",
//! "status":"pass|fail|unreachable","client":{"kind","path","version"}|null,
//! "checks":[{"id","status","expected","actual","detail","duration_ms"}]}],"summary"}`.
//! sessions, cleanup, remove, rollback: see `day2`.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::{Collected, Reporter};
use crate::events::{CheckStatus, Command, Event, HostReport, HostStatus, Summary};

pub struct JsonReporter {
    command: Command,
    target: Option<PathBuf>,
    collected: Collected,
    /// False once the document could not be written.
    written: bool,
}

impl JsonReporter {
    pub fn new(command: Command, target: Option<PathBuf>) -> JsonReporter {
        JsonReporter {
            command,
            target,
            collected: Collected::default(),
            written: true,
        }
    }
}

/// pass|fail|unreachable for a host's verification.
pub fn verify_status(report: &HostReport) -> &'static str {
    match report.status {
        HostStatus::Unreachable => "unreachable",
        HostStatus::Failed => "fail",
        _ => "pass",
    }
}

/// Which client the host's sessions ran, as its `client` check names it.
pub fn client_of(report: &HostReport) -> Option<&Value> {
    report
        .tasks
        .iter()
        .flat_map(|t| t.checks.iter())
        .find_map(|c| c.client.as_ref())
}

fn verify_document(command: Command, reports: &[HostReport], summary: &Summary) -> Value {
    let hosts: Vec<Value> = reports
        .iter()
        .map(|r| {
            let checks: Vec<_> = r.tasks.iter().flat_map(|t| t.checks.iter()).collect();
            json!({
                "host": r.host,
                "status": verify_status(r),
                "client": client_of(r),
                "checks": checks,
                "error": r.error.clone().or_else(|| r.tasks.iter().find(|t| t.checks.is_empty()).and_then(|t| t.msg.clone())),
                "remote_commands": r.remote_commands,
                "duration_ms": r.duration_ms,
                "phases": r.phases,
            })
        })
        .collect();
    let count = |s: CheckStatus| {
        reports
            .iter()
            .flat_map(|r| r.tasks.iter().flat_map(|t| t.checks.iter()))
            .filter(|c| c.status == s)
            .count()
    };
    let hosts_with = |status: &str| {
        reports
            .iter()
            .filter(|r| verify_status(r) == status)
            .count()
    };
    json!({
        "command": command.name(),
        "hosts": hosts,
        "summary": {
            "run_id": summary.run_id,
            "hosts": reports.len(),
            "pass": hosts_with("pass"),
            "fail": hosts_with("fail"),
            "unreachable": hosts_with("unreachable"),
            "checks": {
                "pass": count(CheckStatus::Pass),
                "fail": count(CheckStatus::Fail),
                "warn": count(CheckStatus::Warn),
                "skip": count(CheckStatus::Skip),
            },
            "duration_ms": summary.duration_ms,
            "exit_code": summary.exit_code,
        },
    })
}

impl Reporter for JsonReporter {
    fn wrote_all(&self) -> bool {
        self.written
    }

    fn event(&mut self, event: &Event) {
        self.collected.take(event);
        if let Event::RunDone(summary) = event {
            let reports = self.collected.in_order();
            // `doctor` reports checks, as `verify` does.
            let document = if self.command.reports_checks() {
                verify_document(self.command, reports, summary)
            } else if super::day2::reports(self.command) {
                super::day2::document(self.command, reports, summary)
            } else {
                json!({"command": self.command.name(), "hosts": reports, "summary": summary})
            };
            let text = serde_json::to_string_pretty(&document).unwrap_or_default() + "\n";
            self.written = super::write_document(self.target.as_deref(), &text);
        }
    }
}
