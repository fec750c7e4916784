//! `--format junit`: a `<testsuite>` per host, a `<testcase>` per check (verify)
//! or per task (push, run); an unreachable host is one `<error>` testcase.

use std::path::PathBuf;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::{Collected, Reporter};
use crate::events::{CheckStatus, Event, HostReport, HostStatus, TaskStatus};

pub struct JunitReporter {
    command: String,
    target: Option<PathBuf>,
    collected: Collected,
    /// False once the document could not be written.
    written: bool,
}

impl JunitReporter {
    pub fn new(command: &str, target: Option<PathBuf>) -> JunitReporter {
        JunitReporter {
            command: command.to_string(),
            target,
            collected: Collected::default(),
            written: true,
        }
    }
}

fn failure(kind: NonSuccessKind, message: &str, body: &str) -> TestCaseStatus {
    let mut status = TestCaseStatus::non_success(kind);
    status.set_message(message).set_description(body);
    status
}

fn suite(report: &HostReport) -> TestSuite {
    let mut suite = TestSuite::new(report.host.as_str());
    suite.set_time(Duration::from_millis(report.duration_ms));
    // Which client the verification's sessions ran: a property per field.
    if let Some(client) = super::json::client_of(report).and_then(|c| c.as_object()) {
        for (key, value) in client {
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            suite.add_property(Property::new(format!("client.{key}"), text));
        }
    }
    // A host-level error: it could not be reached ("connect"), or its remote
    // step could not run or finish ("host"), beside whatever tasks did run.
    if report.status == HostStatus::Unreachable || report.error.is_some() {
        let error = report.error.clone().unwrap_or_default();
        let name = match report.status {
            HostStatus::Unreachable => "connect",
            _ => "host",
        };
        let mut case = TestCase::new(name, failure(NonSuccessKind::Error, &error, &error));
        case.set_classname(report.host.as_str());
        suite.add_test_case(case);
    }
    for task in &report.tasks {
        if task.checks.is_empty() {
            let status = match task.status {
                TaskStatus::Failed => {
                    let msg = task.msg.clone().unwrap_or_else(|| "failed".into());
                    failure(NonSuccessKind::Failure, &msg, &msg)
                }
                TaskStatus::Skipped => TestCaseStatus::skipped(),
                _ => TestCaseStatus::success(),
            };
            let mut case = TestCase::new(task.name.as_str(), status);
            case.set_classname(report.host.as_str());
            suite.add_test_case(case);
        }
        for check in &task.checks {
            let status = match check.status {
                CheckStatus::Pass | CheckStatus::Warn => TestCaseStatus::success(),
                CheckStatus::Skip => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(check.detail.clone().unwrap_or_default());
                    s
                }
                CheckStatus::Fail => {
                    let expected = check.expected.clone().unwrap_or_default();
                    let actual = check.actual.clone().unwrap_or_default();
                    let message = format!("expected {expected}; actual {actual}");
                    let mut body = format!("expected: {expected}\nactual: {actual}");
                    if let Some(detail) = &check.detail {
                        body.push_str(&format!("\ndetail: {detail}"));
                    }
                    failure(NonSuccessKind::Failure, &message, &body)
                }
            };
            let mut case = TestCase::new(check.id.as_str(), status);
            case.set_classname(report.host.as_str())
                .set_time(Duration::from_millis(check.duration_ms));
            if check.status == CheckStatus::Warn {
                case.set_system_out(format!(
                    "WARN: {}",
                    check.actual.clone().unwrap_or_default()
                ));
            } else if check.client.is_some() && check.status != CheckStatus::Fail {
                case.set_system_out(check.actual.clone().unwrap_or_default());
            }
            suite.add_test_case(case);
        }
    }
    suite
}

impl Reporter for JunitReporter {
    fn wrote_all(&self) -> bool {
        self.written
    }

    fn event(&mut self, event: &Event) {
        self.collected.take(event);
        if let Event::RunDone(summary) = event {
            let mut junit = Report::new(format!("csdeploy {}", self.command));
            junit.set_time(Duration::from_millis(summary.duration_ms));
            junit.add_test_suites(self.collected.in_order().iter().map(suite));
            let text = junit.to_string().unwrap_or_default();
            self.written = super::write_document(self.target.as_deref(), &text);
        }
    }
}
