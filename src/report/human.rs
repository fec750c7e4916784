//! Text output for people: a line per task result in Ansible's words
//! (`ok`, `changed`, `failed`, `unreachable`), diffs, a table per host for
//! verification checks, and a recap. On a terminal an overall bar and the
//! hosts still running sit on stderr while the lines scroll above them.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Collected, Display, Reporter};
use crate::events::{CheckResult, CheckStatus, Event, HostStatus, TaskResult, TaskStatus};

pub struct HumanReporter {
    bars: Option<Bars>,
    diff: bool,
    check: bool,
    command: String,
    collected: Collected,
    /// Set when the text goes to a file (`--format text --output FILE`).
    transcript: Option<(PathBuf, String)>,
    /// False once the transcript could not be written.
    written: bool,
}

struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    hosts: HashMap<String, ProgressBar>,
}

fn check_mark(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::Pass => "✅ PASS",
        CheckStatus::Fail => "❌ FAIL",
        CheckStatus::Warn => "⚠️ WARN",
        CheckStatus::Skip => "   SKIP",
    }
}

/// Which client a verification ran: `claude PATH (VERSION)`, or for the
/// probe what it is and what the launcher would run in its place.
fn client_line(client: &serde_json::Value) -> String {
    let field = |key: &str| client[key].as_str();
    match (field("kind"), field("path")) {
        (Some("probe"), _) => format!(
            "probe ({}); the launcher runs {}",
            field("version").unwrap_or("-"),
            field("launcher_client").unwrap_or("no claude")
        ),
        (kind, path) => format!(
            "{} {} ({})",
            kind.unwrap_or("-"),
            path.unwrap_or("-"),
            field("version").unwrap_or("-")
        ),
    }
}

/// The table of one host's checks, like the LXC 122 report's.
pub fn check_table(host: &str, verdict: &str, checks: &[CheckResult]) -> String {
    let width = checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    let mut text = format!("{host}: {verdict}");
    if let Some(client) = checks.iter().find_map(|c| c.client.as_ref()) {
        text.push_str(&format!("\n  client: {}", client_line(client)));
    }
    for c in checks {
        let summary = match c.status {
            CheckStatus::Fail => String::new(),
            CheckStatus::Skip => c.detail.clone().unwrap_or_default(),
            _ => c.actual.clone().unwrap_or_default(),
        };
        text.push_str(&format!(
            "\n  {}  {:width$}  {summary}",
            check_mark(c.status),
            c.id
        ));
        if c.status == CheckStatus::Fail {
            let pad = " ".repeat(11);
            text.push_str(&format!(
                "\n{pad}expected: {}",
                c.expected.clone().unwrap_or_default()
            ));
            text.push_str(&format!(
                "\n{pad}actual:   {}",
                c.actual.clone().unwrap_or_default()
            ));
        }
        if let Some(detail) = c.detail.as_ref().filter(|_| c.status != CheckStatus::Skip) {
            text.push_str(&format!("\n{}{detail}", " ".repeat(11)));
        }
    }
    text
}

impl HumanReporter {
    pub fn new(display: Display, diff: bool, transcript: Option<PathBuf>) -> HumanReporter {
        let bars = (display == Display::Progress && transcript.is_none()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(0));
            overall.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} hosts  {elapsed}")
                    .expect("valid template"),
            );
            Bars {
                multi,
                overall,
                hosts: HashMap::new(),
            }
        });
        HumanReporter {
            bars,
            diff,
            check: false,
            command: String::new(),
            collected: Collected::default(),
            transcript: transcript.map(|path| (path, String::new())),
            written: true,
        }
    }

    fn line(&mut self, text: &str) {
        let text = &printable(text);
        if let Some((_, buffer)) = &mut self.transcript {
            buffer.push_str(text);
            buffer.push('\n');
            return;
        }
        let print = || {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
        };
        match &self.bars {
            Some(bars) => bars.multi.suspend(print),
            None => print(),
        }
    }

    fn task_line(&self, host: &str, task: &TaskResult) -> String {
        let word = match (task.status, self.check) {
            (TaskStatus::Ok, _) => "ok",
            (TaskStatus::Changed, false) => "changed",
            (TaskStatus::Changed, true) => "would change",
            (TaskStatus::Failed, _) => "failed",
            (TaskStatus::Skipped, _) => "skipped",
        };
        let mut text = format!("{word}: [{host}] {}", task.name);
        if let Some(path) = &task.path {
            text.push_str(&format!(" ({path})"));
        }
        if let Some(msg) = task.msg.as_ref().filter(|_| {
            task.status != TaskStatus::Ok || task.module == "command" || task.data.is_some()
        }) {
            text.push_str(&format!(": {msg}"));
        }
        if let Some(backup) = &task.backup {
            text.push_str(&format!(" [backup: {backup}]"));
        }
        if task.status == TaskStatus::Failed {
            for (label, stream) in [("stdout", &task.stdout), ("stderr", &task.stderr)] {
                if let Some(s) = stream.as_ref().filter(|s| !s.trim().is_empty()) {
                    text.push_str(&format!(
                        "\n  {label}: {}",
                        s.trim_end().replace('\n', "\n  ")
                    ));
                }
            }
        }
        text
    }

    fn recap(&mut self) {
        let reports = self.collected.in_order().to_vec();
        let width = reports.iter().map(|r| r.host.len()).max().unwrap_or(0);
        let mut text = String::from("\nRECAP");
        if self.check {
            text.push_str(" (check mode: nothing was changed)");
        }
        for r in &reports {
            let unreachable = usize::from(r.status == HostStatus::Unreachable);
            text.push_str(&format!(
                "\n{:width$} : ok={:<3} changed={:<3} unreachable={:<2} failed={:<3} skipped={:<3} ({} remote commands, {:.2}s)",
                r.host,
                r.ok,
                r.changed,
                unreachable,
                r.failed,
                r.skipped,
                r.remote_commands,
                r.duration_ms as f64 / 1000.0,
            ));
        }
        let checks: Vec<&CheckResult> = reports
            .iter()
            .flat_map(|r| r.tasks.iter().flat_map(|t| t.checks.iter()))
            .collect();
        if let Some(table) = (self.command == "sessions")
            .then(|| super::day2::sessions_table(&reports))
            .flatten()
        {
            text.insert_str(0, &format!("\n{table}\n"));
        }
        if !checks.is_empty() || self.command == "verify" || self.command == "doctor" {
            let hosts = |s: &str| {
                reports
                    .iter()
                    .filter(|r| super::json::verify_status(r) == s)
                    .count()
            };
            let count = |s: CheckStatus| checks.iter().filter(|c| c.status == s).count();
            text.push_str(&format!(
                "\n{}: {} hosts: {} pass, {} fail, {} unreachable; checks: {} pass, {} fail, {} warn, {} skip",
                if self.command == "doctor" { "doctor" } else { "verify" },
                reports.len(),
                hosts("pass"),
                hosts("fail"),
                hosts("unreachable"),
                count(CheckStatus::Pass),
                count(CheckStatus::Fail),
                count(CheckStatus::Warn),
                count(CheckStatus::Skip),
            ));
        }
        self.line(&text);
    }
}

/// `text` with every control character but newline and tab shown as an
/// escape: what hosts say (errors, command output) must not move the
/// cursor, retitle the terminal or paint a fake result.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let shown = |c: char| c == '\n' || c == '\t' || !c.is_control();
    if text.chars().all(shown) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            c if shown(c) => out.push(c),
            c => out.push_str(&c.escape_unicode().to_string()),
        }
    }
    out.into()
}

impl Reporter for HumanReporter {
    fn wrote_all(&self) -> bool {
        self.written
    }

    fn event(&mut self, event: &Event) {
        self.collected.take(event);
        match event {
            Event::RunStarted {
                command,
                hosts,
                check,
            } => {
                self.check = *check;
                self.command = command.clone();
                if let Some(bars) = &self.bars {
                    bars.overall.set_length(hosts.len() as u64);
                }
                let mode = if *check { " (check mode)" } else { "" };
                self.line(&format!(
                    "csdeploy {command} on {} host(s){mode}",
                    hosts.len()
                ));
            }
            Event::HostStarted { host } => {
                if let Some(bars) = &mut self.bars {
                    let bar = bars.multi.add(ProgressBar::new_spinner());
                    bar.set_message(format!("{host}: connecting"));
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bars.hosts.insert(host.clone(), bar);
                }
            }
            Event::HostConnected { host } => match &self.bars {
                Some(bars) => {
                    if let Some(bar) = bars.hosts.get(host) {
                        bar.set_message(format!("{host}: running"));
                    }
                }
                None => self.line(&format!("connected: [{host}]")),
            },
            Event::TaskDone { host, task } => {
                if task.checks.is_empty() {
                    let line = self.task_line(host, task);
                    self.line(&line);
                } else {
                    let verdict = if task.status == TaskStatus::Failed {
                        "❌ FAIL"
                    } else {
                        "✅ PASS"
                    };
                    self.line(&check_table(host, verdict, &task.checks));
                }
                if let Some(diff) = task.diff.as_ref().filter(|_| self.diff) {
                    self.line(diff.trim_end());
                }
            }
            Event::HostDone(report) => {
                if let Some(bars) = &mut self.bars {
                    if let Some(bar) = bars.hosts.remove(&report.host) {
                        bar.finish_and_clear();
                        bars.multi.remove(&bar);
                    }
                    bars.overall.inc(1);
                }
                if let Some(error) = &report.error {
                    let word = if report.status == HostStatus::Unreachable {
                        "unreachable"
                    } else {
                        "failed"
                    };
                    self.line(&format!(
                        "{word}: [{}] {}",
                        report.host,
                        error.replace('\n', "\n  ")
                    ));
                }
            }
            Event::RunDone(_) => {
                if let Some(bars) = &self.bars {
                    bars.overall.finish_and_clear();
                }
                self.recap();
                if let Some((path, text)) = self.transcript.take() {
                    self.written = super::write_document(Some(&path), &text);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_line_names_path_and_version_or_the_probe() {
        let claude = serde_json::json!({"kind": "claude", "path": "/u/bin/claude",
            "version": "2.1.337 (Claude Code)", "launcher_client": "/u/bin/claude"});
        assert_eq!(
            client_line(&claude),
            "claude /u/bin/claude (2.1.337 (Claude Code))"
        );
        let probe = serde_json::json!({"kind": "probe", "path": null,
            "version": "built-in probe", "launcher_client": null});
        assert_eq!(
            client_line(&probe),
            "probe (built-in probe); the launcher runs no claude"
        );
    }

    #[test]
    fn control_characters_from_hosts_are_shown_not_obeyed() {
        assert_eq!(printable("ok\tdone\nnext"), "ok\tdone\nnext");
        assert_eq!(printable("a\r\nb"), "a\nb");
        assert_eq!(
            printable("\u{1b}]0;owned\u{7}\u{1b}[2Jx"),
            "\\u{1b}]0;owned\\u{7}\\u{1b}[2Jx"
        );
        assert_eq!(printable("caf\u{e9} \u{2705}"), "caf\u{e9} \u{2705}");
    }
}
