//! `--format junit`: a `<testsuite>` per host, a `<testcase>` per check (verify)
//! or per task (push, run); an unreachable host is one `<error>` testcase.
//!
//! Every testcase has a `time`: a check its own; a task an equal share of
//! the host's remote time (one apply command carries out all of a host's
//! tasks, so nothing finer is measured); a host-level error the host's time.
//! `<testsuites>` carries no `skipped` attribute: Jenkins' xunit
//! `junit-10.xsd` rejects it there (the suites keep theirs).

use std::path::PathBuf;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::{Collected, Reporter};
use crate::events::{CheckStatus, Command, Event, HostReport, HostStatus, TaskStatus};

pub struct JunitReporter {
    command: Command,
    target: Option<PathBuf>,
    collected: Collected,
    /// False once the document could not be written.
    written: bool,
}

impl JunitReporter {
    pub fn new(command: Command, target: Option<PathBuf>) -> JunitReporter {
        JunitReporter {
            command,
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
        let time = if report.tasks.is_empty() {
            report.duration_ms
        } else {
            0
        };
        case.set_classname(report.host.as_str())
            .set_time(Duration::from_millis(time));
        suite.add_test_case(case);
    }
    let share = task_share(report);
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
            case.set_classname(report.host.as_str()).set_time(share);
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

/// Each task testcase's time: the host's remote time beyond its checks'
/// own, shared equally by its tasks.
fn task_share(report: &HostReport) -> Duration {
    let tasks = report.tasks.iter().filter(|t| t.checks.is_empty()).count();
    let checks: u64 = report
        .tasks
        .iter()
        .flat_map(|t| t.checks.iter())
        .map(|c| c.duration_ms)
        .sum();
    let remote = (report.phases.gather_ms + report.phases.apply_ms).saturating_sub(checks);
    Duration::from_millis(remote / tasks.max(1) as u64)
}

/// The document without the `skipped` attribute quick-junit writes on
/// `<testsuites>`, which `junit-10.xsd` does not allow there.
fn without_suites_skipped(xml: &str) -> String {
    let Some(start) = xml.find("<testsuites") else {
        return xml.to_string();
    };
    let end = xml[start..].find('>').map_or(xml.len(), |e| start + e);
    let tag = regex::Regex::new(r#" skipped="\d+""#)
        .expect("valid pattern")
        .replace(&xml[start..end], "");
    format!("{}{tag}{}", &xml[..start], &xml[end..])
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
            let text = without_suites_skipped(&junit.to_string().unwrap_or_default());
            self.written = super::write_document(self.target.as_deref(), &text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{CheckResult, Phases, TaskResult};

    fn task(name: &str, status: TaskStatus, checks: Vec<CheckResult>) -> TaskResult {
        TaskResult {
            name: name.into(),
            play: "p".into(),
            module: crate::modules::ModuleKind::Copy,
            status,
            path: None,
            backup: None,
            diff: None,
            msg: Some("it went wrong".into()),
            rc: None,
            stdout: None,
            stderr: None,
            checks,
            data: None,
        }
    }

    /// The report of a push --verify on a verified host, one whose task
    /// failed, one unreachable, one whose remote step could not run.
    fn document() -> String {
        let check = |id: &str, status| CheckResult {
            id: id.into(),
            status,
            expected: None,
            actual: Some("fine".into()),
            detail: Some("why".into()),
            duration_ms: 250,
            client: None,
        };
        let mut good = HostReport::new(
            "good",
            vec![
                task("install", TaskStatus::Changed, Vec::new()),
                task("dirs", TaskStatus::Skipped, Vec::new()),
                task(
                    "verify",
                    TaskStatus::Ok,
                    vec![
                        check("isolation", CheckStatus::Pass),
                        check("cleanup", CheckStatus::Skip),
                    ],
                ),
            ],
            None,
            false,
        );
        good.phases = Phases {
            connect_ms: 100,
            gather_ms: 300,
            apply_ms: 1200,
        };
        let bad = HostReport::new(
            "bad",
            vec![task("install", TaskStatus::Failed, Vec::new())],
            None,
            false,
        );
        let mut gone = HostReport::new("gone", Vec::new(), Some("Connection refused".into()), true);
        gone.duration_ms = 3000;
        let broken = HostReport::new("broken", Vec::new(), Some("no python3".into()), false);
        let mut reporter = JunitReporter::new(Command::Push, None);
        let reports = vec![good, bad, gone, broken];
        reporter.event(&Event::RunStarted {
            command: Command::Push,
            hosts: reports.iter().map(|r| r.host.clone()).collect(),
            check: false,
            inventory: None,
            tasks: Vec::new(),
        });
        for r in &reports {
            reporter.event(&Event::HostDone(r.clone()));
        }
        let mut junit = Report::new("csdeploy push");
        junit.add_test_suites(reporter.collected.in_order().iter().map(suite));
        without_suites_skipped(&junit.to_string().unwrap())
    }

    #[test]
    fn the_document_parses_and_keeps_the_schema_points() {
        let xml = document();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "testsuites");
        assert_eq!(root.attribute("skipped"), None, "junit-10.xsd: {xml}");
        assert_eq!(root.attribute("errors"), Some("2"), "{xml}");
        let cases: Vec<_> = root
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(cases.len(), 7, "{xml}");
        for case in &cases {
            assert!(
                case.attribute("time").is_some(),
                "time on every testcase: {xml}"
            );
        }
        let time = |name: &str, host: &str| {
            cases
                .iter()
                .find(|c| {
                    c.attribute("name") == Some(name) && c.attribute("classname") == Some(host)
                })
                .and_then(|c| c.attribute("time"))
                .unwrap()
                .to_string()
        };
        // 1500 ms remote, 500 of them the checks': 500 each for two tasks.
        assert_eq!(time("install", "good"), "0.500", "{xml}");
        assert_eq!(time("isolation", "good"), "0.250", "{xml}");
        assert_eq!(time("connect", "gone"), "3.000", "{xml}");
        let child = |host: &str, name: &str| {
            cases
                .iter()
                .find(|c| {
                    c.attribute("classname") == Some(host) && c.attribute("name") == Some(name)
                })
                .and_then(|c| c.children().find(|n| n.is_element()))
                .map(|n| n.tag_name().name().to_string())
        };
        assert_eq!(
            child("gone", "connect").as_deref(),
            Some("error"),
            "unreachable: {xml}"
        );
        assert_eq!(child("broken", "host").as_deref(), Some("error"), "{xml}");
        assert_eq!(child("bad", "install").as_deref(), Some("failure"), "{xml}");
        assert_eq!(
            child("good", "cleanup").as_deref(),
            Some("skipped"),
            "{xml}"
        );
        let suites: Vec<_> = root
            .children()
            .filter(|n| n.has_tag_name("testsuite"))
            .collect();
        assert!(
            suites.iter().all(|s| s.attribute("skipped").is_some()),
            "{xml}"
        );
    }

    #[test]
    fn only_the_testsuites_tag_loses_skipped() {
        let xml = r#"<testsuites name="x" tests="1" skipped="0" failures="0"><testsuite name="h" skipped="1">"#;
        assert_eq!(
            without_suites_skipped(xml),
            r#"<testsuites name="x" tests="1" failures="0"><testsuite name="h" skipped="1">"#
        );
    }
}
