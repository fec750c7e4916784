//! Text output for people: a line per task result in Ansible's words
//! (`ok`, `changed`, `failed`, `unreachable`), diffs, a table per host for
//! verification checks, and a recap. On a terminal an overall bar and the
//! hosts still running sit on stderr while the lines scroll above them.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use console::Style;

use super::{Collected, Display, Reporter, plural};
use crate::events::{
    CheckResult, CheckStatus, Command, Event, HostReport, HostStatus, TaskResult, TaskStatus,
};
use crate::modules::ModuleKind;
use crate::modules::verify::{DRIFT_HINT, Integrity, integrity};
use crate::playbook::VERIFICATION;

pub struct HumanReporter {
    bars: Option<Bars>,
    diff: bool,
    check: bool,
    /// None until the run starts.
    command: Option<Command>,
    collected: Collected,
    /// ANSI colours and ✓/✗ marks (never in a file).
    color: bool,
    /// Each host's planned task names, from the run's start.
    planned: HashMap<String, Vec<String>>,
    /// Where the text goes: stdout, or kept for a file or a test.
    sink: Sink,
    /// False once the transcript could not be written.
    written: bool,
}

enum Sink {
    Stdout,
    /// `--format text --output FILE`: written once the run is done.
    File(PathBuf, String),
    /// Kept in memory, for tests.
    #[cfg_attr(not(test), allow(dead_code))]
    Memory(String),
}

struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    hosts: HashMap<String, ProgressBar>,
    /// Tasks reported per host so far, so that a host that ends early
    /// advances the overall bar by the tasks it never got to.
    done: HashMap<String, u64>,
}

/// The colours, in Ansible's sense: ok green, changed yellow, failed and
/// unreachable red, skipped cyan.
fn style_of(word: &str) -> Style {
    match word {
        "ok" | "pass" => Style::new().green(),
        "changed" | "would change" | "warn" => Style::new().yellow(),
        "failed" | "unreachable" | "fail" => Style::new().red(),
        "skipped" | "skip" => Style::new().cyan(),
        _ => Style::new().bold(),
    }
}

/// The mark before a task's word in colour: ✓ it went well, ✗ it did not.
fn mark(word: &str) -> &'static str {
    match word {
        "failed" | "unreachable" => "✗",
        "skipped" => "-",
        _ => "✓",
    }
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
            // With the real client, Claude Code's own exit status (1 when
            // its offline onboarding gives up) is not what the check judges.
            CheckStatus::Pass
                if c.id == "parallel-launch"
                    && c.expected
                        .as_deref()
                        .is_some_and(|e| e.contains("none refused")) =>
            {
                format!(
                    "{}: none refused or failed by the launcher (Claude Code's own exit codes are not judged)",
                    c.actual.clone().unwrap_or_default()
                )
            }
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
        if c.id == "launcher-integrity" && integrity(checks) == Integrity::Drift {
            text.push_str(&format!("\n{}{DRIFT_HINT}", " ".repeat(11)));
        }
    }
    text
}

/// What a host without the tooling gets instead of a table of missing
/// files and skipped checks.
fn not_deployed(host: &str) -> String {
    format!("not deployed: run `csdeploy push --host {host}`")
}

impl HumanReporter {
    pub fn new(display: Display, diff: bool, transcript: Option<PathBuf>) -> HumanReporter {
        let bars = (display == Display::Progress && transcript.is_none()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(0));
            overall.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} tasks  {elapsed}")
                    .expect("valid template"),
            );
            Bars {
                multi,
                overall,
                hosts: HashMap::new(),
                done: HashMap::new(),
            }
        });
        HumanReporter {
            bars,
            diff,
            check: false,
            command: None,
            collected: Collected::default(),
            color: false,
            planned: HashMap::new(),
            sink: match transcript {
                Some(path) => Sink::File(path, String::new()),
                None => Sink::Stdout,
            },
            written: true,
        }
    }

    /// Colours on stdout, as the CLI decided; a file never gets them.
    pub fn colored(mut self, color: bool) -> HumanReporter {
        self.color = color && matches!(self.sink, Sink::Stdout);
        self
    }

    /// A reporter whose text is kept in memory ([`Self::text`]), for tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn in_memory(diff: bool, color: bool) -> HumanReporter {
        let mut reporter = HumanReporter::new(Display::Plain, diff, None);
        reporter.sink = Sink::Memory(String::new());
        reporter.color = color;
        reporter
    }

    /// What an in-memory reporter printed.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn text(&self) -> &str {
        match &self.sink {
            Sink::Memory(text) | Sink::File(_, text) => text,
            Sink::Stdout => "",
        }
    }

    /// Prints `text`: made printable first, then, in colour, painted by
    /// what its lines say, so that nothing a host sends becomes an escape.
    fn line(&mut self, text: &str) {
        let text = printable(text);
        let text = &if self.color {
            colorize(&text).into()
        } else {
            text
        };
        if let Sink::File(_, buffer) | Sink::Memory(buffer) = &mut self.sink {
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
            task.status != TaskStatus::Ok
                || task.module == ModuleKind::Command
                || task.data.is_some()
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
        let mut text = String::from("\nPLAY RECAP");
        if self.check {
            text.push_str(" (check mode: nothing was changed)");
        }
        for r in &reports {
            let unreachable = usize::from(r.status == HostStatus::Unreachable);
            // As Ansible's recap: `ok` counts every task that succeeded,
            // changed or not.
            text.push_str(&format!(
                "\n{:width$} : ok={:<3} changed={:<3} unreachable={:<2} failed={:<3} skipped={:<3} ({}, {:.2}s)",
                r.host,
                r.ok + r.changed,
                r.changed,
                unreachable,
                r.failed,
                r.skipped,
                plural(r.remote_commands, "remote command"),
                r.duration_ms as f64 / 1000.0,
            ));
        }
        // Why each host failed, once more, so that nobody has to scroll back.
        for r in &reports {
            if let Some(reason) = self.reason(r) {
                let word = if r.status == HostStatus::Unreachable {
                    "unreachable"
                } else {
                    "failed"
                };
                text.push_str(&format!("\n{:width$} : {word}: {reason}", r.host));
            }
        }
        let checks: Vec<&CheckResult> = reports
            .iter()
            .flat_map(|r| r.tasks.iter().flat_map(|t| t.checks.iter()))
            .collect();
        if let Some(table) = (self.command == Some(Command::Sessions))
            .then(|| super::day2::sessions_table(&reports))
            .flatten()
        {
            text.insert_str(0, &format!("\n{table}\n"));
        }
        let command = self.command.unwrap_or(Command::Push);
        if !checks.is_empty() || command.reports_checks() {
            let hosts = |s: &str| {
                reports
                    .iter()
                    .filter(|r| super::json::verify_status(r) == s)
                    .count()
            };
            let count = |s: CheckStatus| checks.iter().filter(|c| c.status == s).count();
            text.push_str(&format!(
                "\n{}: {}: {} pass, {} fail, {} unreachable; checks: {} pass, {} fail, {} warn, {} skip",
                if command == Command::Doctor { "doctor" } else { "verify" },
                plural(reports.len(), "host"),
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

    /// Why a failed or unreachable host failed, on one line: its error, or
    /// its failed task and that task's message or failed checks.
    fn reason(&self, r: &HostReport) -> Option<String> {
        let first_line = |s: &str| s.lines().next().unwrap_or_default().trim().to_string();
        let why = if let Some(error) = &r.error {
            first_line(error)
        } else {
            let task = r.tasks.iter().find(|t| t.status == TaskStatus::Failed)?;
            let failed: Vec<&str> = task
                .checks
                .iter()
                .filter(|c| c.status == CheckStatus::Fail)
                .map(|c| c.id.as_str())
                .collect();
            let what = match (failed.is_empty(), &task.msg) {
                _ if integrity(&task.checks) == Integrity::NotDeployed => {
                    return Some(not_deployed(&r.host));
                }
                (false, _) if integrity(&task.checks) == Integrity::Drift => {
                    format!("checks failed: {} ({DRIFT_HINT})", failed.join(", "))
                }
                (false, _) => format!("checks failed: {}", failed.join(", ")),
                (true, Some(msg)) => first_line(msg),
                (true, None) => "failed".into(),
            };
            format!("{}: {what}", task.name)
        };
        Some(match self.skipped_verification(r) {
            Some(skipped) => format!("{why} ({skipped})"),
            None => why,
        })
    }

    /// `push --verify` on a host whose push failed: the verification never
    /// ran, which the report must say rather than leave out.
    fn skipped_verification(&self, r: &HostReport) -> Option<&'static str> {
        let planned = self.planned.get(&r.host)?;
        let asked = planned.iter().any(|t| t == VERIFICATION);
        let ran = r.tasks.iter().any(|t| t.name == VERIFICATION);
        (self.command == Some(Command::Push) && asked && !ran).then_some(match r.status {
            HostStatus::Unreachable => "verification skipped: the host was unreachable",
            _ => "verification skipped: the push failed",
        })
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
                inventory,
                tasks,
            } => {
                self.check = *check;
                self.command = Some(*command);
                self.planned = hosts.iter().cloned().zip(tasks.iter().cloned()).collect();
                if let Some(bars) = &self.bars {
                    bars.overall
                        .set_length(tasks.iter().map(|t| t.len() as u64).sum());
                }
                let mode = if *check { " (check mode)" } else { "" };
                let header = format!(
                    "csdeploy {command} on {}{mode} (inventory: {})",
                    plural(hosts.len(), "host"),
                    inventory.as_deref().unwrap_or("built-in")
                );
                self.line(&header);
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
                        bar.set_message(format!("{host}: connected"));
                    }
                }
                None => self.line(&format!("connected: [{host}]")),
            },
            Event::TaskStarted { host, task } => {
                // Only the running host's line says what it works on; a
                // log gets the results, not every step.
                if let Some(bar) = self.bars.as_ref().and_then(|b| b.hosts.get(host)) {
                    bar.set_message(format!("{host}: {task}"));
                }
            }
            Event::TaskDone { host, task } => {
                if let Some(bars) = &mut self.bars {
                    *bars.done.entry(host.clone()).or_default() += 1;
                    bars.overall.inc(1);
                }
                if task.checks.is_empty() {
                    let line = self.task_line(host, task);
                    self.line(&line);
                } else {
                    let verdict = if task.status == TaskStatus::Failed {
                        "❌ FAIL"
                    } else {
                        "✅ PASS"
                    };
                    if integrity(&task.checks) == Integrity::NotDeployed {
                        self.line(&format!("{host}: {verdict} {}", not_deployed(host)));
                    } else {
                        self.line(&check_table(host, verdict, &task.checks));
                    }
                }
                if let Some(diff) = task.diff.as_ref().filter(|_| self.diff) {
                    self.line(diff.trim_end());
                }
            }
            Event::HostDone(report) => {
                let planned = self.planned.get(&report.host).map_or(0, Vec::len) as u64;
                if let Some(bars) = &mut self.bars {
                    if let Some(bar) = bars.hosts.remove(&report.host) {
                        bar.finish_and_clear();
                        bars.multi.remove(&bar);
                    }
                    let done = bars.done.remove(&report.host).unwrap_or(0);
                    bars.overall.inc(planned.saturating_sub(done));
                }
                if let Some(error) = &report.error {
                    let word = if report.status == HostStatus::Unreachable {
                        "unreachable"
                    } else {
                        "failed"
                    };
                    let line = format!("{word}: [{}] {}", report.host, error.replace('\n', "\n  "));
                    self.line(&line);
                }
                if let Some(why) = self.skipped_verification(report) {
                    let line = format!("skipped: [{}] {VERIFICATION}: {why}", report.host);
                    self.line(&line);
                }
            }
            Event::RunDone(_) => {
                if let Some(bars) = &self.bars {
                    bars.overall.finish_and_clear();
                }
                self.recap();
                if let Sink::File(path, text) = &self.sink {
                    self.written = super::write_document(Some(path), text);
                }
            }
        }
    }
}

fn paint(word: &str, text: &str) -> String {
    style_of(word)
        .force_styling(true)
        .apply_to(text)
        .to_string()
}

/// The words a result line starts with (`changed: [host] task`).
const WORDS: [&str; 6] = [
    "ok",
    "changed",
    "would change",
    "failed",
    "unreachable",
    "skipped",
];

/// The check marks of a verification table, and their colours.
const MARKS: [(&str, &str); 4] = [
    ("✅ PASS", "pass"),
    ("❌ FAIL", "fail"),
    ("⚠️ WARN", "warn"),
    ("   SKIP", "skip"),
];

/// The plain text, painted by what each line says: a result's word gets
/// its colour and ✓/✗, a recap row its host and non-zero counts, a
/// verification table its marks. Works on text already made printable.
fn colorize(text: &str) -> String {
    text.split('\n')
        .map(colorize_line)
        .collect::<Vec<_>>()
        .join("\n")
}

fn colorize_line(line: &str) -> String {
    if line.starts_with("csdeploy ") || line.starts_with("PLAY RECAP") {
        return paint("", line);
    }
    for word in WORDS {
        if let Some(rest) = line.strip_prefix(word).and_then(|r| r.strip_prefix(": [")) {
            return format!(
                "{} [{rest}",
                paint(word, &format!("{} {word}:", mark(word)))
            );
        }
    }
    if let Some((host, rest)) = line.split_once(" : ") {
        if rest.starts_with("ok=") {
            return recap_row(host, rest);
        }
        for word in ["failed", "unreachable"] {
            if let Some(why) = rest.strip_prefix(word).and_then(|r| r.strip_prefix(": ")) {
                return format!("{host} : {} {why}", paint(word, &format!("{word}:")));
            }
        }
    }
    if let Some((at, m, word)) = MARKS
        .iter()
        .find_map(|(m, word)| line.find(m).map(|at| (at, *m, *word)))
    {
        return format!("{}{}{}", &line[..at], paint(word, m), &line[at + m.len()..]);
    }
    line.to_string()
}

/// A recap row, `host : ok=1 changed=0 ...`: the host in its overall
/// colour, every count that is not 0 in its own.
fn recap_row(host: &str, counts: &str) -> String {
    let count = |name: &str| {
        counts
            .split_whitespace()
            .find_map(|c| {
                c.strip_prefix(name)?
                    .strip_prefix('=')?
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or(0)
    };
    let overall = if count("failed") > 0 || count("unreachable") > 0 {
        "failed"
    } else if count("changed") > 0 {
        "changed"
    } else {
        "ok"
    };
    let name = host.trim_end();
    let mut out = format!("{}{} : ", paint(overall, name), &host[name.len()..]);
    let mut rest = counts;
    // Each `name=N` cell with its padding, up to the remote commands.
    while rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
        let cell_end = rest.find(' ').unwrap_or(rest.len());
        let pad_end = rest[cell_end..]
            .find(|c: char| c != ' ')
            .map_or(rest.len(), |p| cell_end + p);
        let (cell, pad) = rest[..pad_end].split_at(cell_end);
        match cell.split_once('=') {
            Some((word, n)) if n != "0" => out.push_str(&paint(word, cell)),
            _ => out.push_str(cell),
        }
        out.push_str(pad);
        rest = &rest[pad_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Phases, Summary};

    fn task(name: &str, status: TaskStatus, msg: Option<&str>) -> TaskResult {
        TaskResult {
            name: name.into(),
            play: "push".into(),
            module: ModuleKind::Copy,
            status,
            path: Some(format!("/home/u/.local/bin/{}", name.replace(' ', "-"))),
            backup: None,
            diff: None,
            msg: msg.map(String::from),
            rc: None,
            stdout: None,
            stderr: None,
            checks: Vec::new(),
            data: None,
        }
    }

    fn check(id: &str, status: CheckStatus, actual: &str) -> CheckResult {
        CheckResult {
            id: id.into(),
            status,
            expected: Some("2 distinct session dirs".into()),
            actual: Some(actual.into()),
            detail: None,
            duration_ms: 12,
            client: None,
        }
    }

    fn host(name: &str, tasks: Vec<TaskResult>, error: Option<&str>, lost: bool) -> HostReport {
        let mut report = HostReport::new(name, tasks, error.map(String::from), lost);
        report.remote_commands = usize::from(!lost) + usize::from(report.changed > 0);
        report.duration_ms = 1234;
        report.phases = Phases::default();
        report
    }

    /// What the human reporter prints for `events`, with the filters the
    /// snapshots need (durations, paths, UUIDs, ports) and ESC made visible.
    fn screen(command: Command, events: &[Event], color: bool) -> String {
        let hosts: Vec<HostReport> = events
            .iter()
            .filter_map(|e| match e {
                Event::HostDone(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        let mut reporter = HumanReporter::in_memory(false, color);
        let tasks: Vec<Vec<String>> = hosts
            .iter()
            .map(|h| {
                let mut names: Vec<String> = PUSH_TASKS.iter().map(|t| t.to_string()).collect();
                if command != Command::Verify {
                    names.push(VERIFICATION.into());
                } else {
                    names = vec![VERIFICATION.into()];
                }
                let _ = h;
                names
            })
            .collect();
        reporter.event(&Event::RunStarted {
            command,
            hosts: hosts.iter().map(|h| h.host.clone()).collect(),
            check: false,
            inventory: Some("/tmp/lab.x1y2/inventory.yml".into()),
            tasks,
        });
        for event in events {
            reporter.event(event);
        }
        reporter.event(&Event::RunDone(Summary::of(
            "0e9a4f7c-1111-4222-8333-444455556666",
            &hosts,
            2345,
            false,
            false,
        )));
        filter(reporter.text())
    }

    fn filter(text: &str) -> String {
        let rules = [
            (r"\d+\.\d+s\b", "[DURATION]"),
            (r"/tmp/[^\s:)]+", "[TMP]"),
            (
                r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                "[UUID]",
            ),
            (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
        ];
        let mut text = text.replace('\u{1b}', "␛");
        for (pattern, to) in rules {
            text = regex::Regex::new(pattern)
                .unwrap()
                .replace_all(&text, to)
                .into_owned();
        }
        text
    }

    const PUSH_TASKS: [&str; 3] = ["install launcher", "install cleaner", "session dirs"];

    /// A push with --verify on three hosts: one changed and verified, one
    /// whose push failed, one unreachable.
    fn push_events() -> Vec<Event> {
        let mut verified = task(VERIFICATION, TaskStatus::Ok, None);
        verified.checks = vec![
            check("isolation", CheckStatus::Pass, "2 distinct session dirs"),
            check("cleanup", CheckStatus::Skip, ""),
        ];
        let good = vec![
            task("install launcher", TaskStatus::Changed, None),
            task("install cleaner", TaskStatus::Changed, None),
            task("session dirs", TaskStatus::Ok, None),
            verified,
        ];
        let bad = vec![
            task("install launcher", TaskStatus::Ok, None),
            task(
                "install cleaner",
                TaskStatus::Failed,
                Some("Permission denied: '/home/u/.local/bin'\nmore"),
            ),
        ];
        let mut events = vec![Event::HostConnected {
            host: "web1".into(),
        }];
        for t in &good {
            events.push(Event::TaskDone {
                host: "web1".into(),
                task: t.clone(),
            });
        }
        events.push(Event::HostDone(host("web1", good, None, false)));
        events.push(Event::HostConnected { host: "db".into() });
        for t in &bad {
            events.push(Event::TaskDone {
                host: "db".into(),
                task: t.clone(),
            });
        }
        events.push(Event::HostDone(host("db", bad, None, false)));
        events.push(Event::HostDone(host(
            "lxc122",
            Vec::new(),
            Some("ssh: connect to host 127.0.0.1:2222: Connection refused"),
            true,
        )));
        events
    }

    #[test]
    fn push_screen_plain() {
        let text = screen(Command::Push, &push_events(), false);
        insta::assert_snapshot!(text);
        assert!(
            text.contains("csdeploy push on 3 hosts (inventory: "),
            "{text}"
        );
        assert!(text.contains("(1 remote command, "), "{text}");
        assert!(
            text.contains("web1   : ok=4   changed=2"),
            "ok counts changed: {text}"
        );
        assert!(
            text.contains("db     : failed: install cleaner: Permission denied")
                && text.contains("(verification skipped: the push failed)"),
            "{text}"
        );
        assert!(
            text.contains("lxc122 : unreachable: ssh: connect"),
            "{text}"
        );
        assert!(!text.contains('␛'), "no colour in plain mode");
    }

    #[test]
    fn push_screen_in_colour() {
        let text = screen(Command::Push, &push_events(), true);
        insta::assert_snapshot!(text);
        assert!(text.contains("␛[32m✓ ok:␛[0m [web1]"), "{text}");
        assert!(text.contains("␛[33m✓ changed:␛[0m [web1]"), "{text}");
        assert!(text.contains("␛[31m✗ failed:␛[0m [db]"), "{text}");
    }

    fn verify_events() -> Vec<Event> {
        let mut pass = task(VERIFICATION, TaskStatus::Ok, None);
        pass.checks = vec![
            check("isolation", CheckStatus::Pass, "2 distinct session dirs"),
            check("registry", CheckStatus::Warn, "lock held 2 s"),
        ];
        let mut fail = task(VERIFICATION, TaskStatus::Failed, None);
        fail.checks = vec![
            check("isolation", CheckStatus::Fail, "1 session dir"),
            check("cleanup", CheckStatus::Skip, ""),
        ];
        let mut events = Vec::new();
        for (name, t) in [("local", pass), ("host2", fail)] {
            events.push(Event::TaskDone {
                host: name.into(),
                task: t.clone(),
            });
            events.push(Event::HostDone(host(name, vec![t], None, false)));
        }
        events
    }

    #[test]
    fn verify_screen_plain() {
        let text = screen(Command::Verify, &verify_events(), false);
        insta::assert_snapshot!(text);
        assert!(
            text.contains("verify: 2 hosts: 1 pass, 1 fail, 0 unreachable"),
            "{text}"
        );
        assert!(
            text.contains(
                "host2 : failed: Verify parallel-session isolation: checks failed: isolation"
            ),
            "{text}"
        );
    }

    #[test]
    fn verify_screen_in_colour() {
        let text = screen(Command::Verify, &verify_events(), true);
        insta::assert_snapshot!(text);
        assert!(text.contains("␛[32m✅ PASS␛[0m"), "{text}");
        assert!(text.contains("␛[31m❌ FAIL␛[0m"), "{text}");
    }

    #[test]
    fn in_colour_what_a_host_sends_still_cannot_escape() {
        let mut bad = task("evil", TaskStatus::Failed, Some("\u{1b}[2Jgone"));
        bad.module = ModuleKind::Command;
        let events = vec![
            Event::TaskDone {
                host: "h".into(),
                task: bad.clone(),
            },
            Event::HostDone(host("h", vec![bad], None, false)),
        ];
        let text = screen(Command::Push, &events, true);
        assert!(text.contains("\\u{1b}[2Jgone"), "{text}");
        assert!(!text.contains("␛[2J"), "{text}");
    }

    fn verify_of(host_name: &str, checks: Vec<CheckResult>) -> Vec<Event> {
        let mut t = task(VERIFICATION, TaskStatus::Failed, None);
        t.checks = checks;
        vec![
            Event::TaskDone {
                host: host_name.into(),
                task: t.clone(),
            },
            Event::HostDone(host(host_name, vec![t], None, false)),
        ]
    }

    #[test]
    fn verify_before_push_says_not_deployed_and_how_to_deploy() {
        let mut integrity = check("launcher-integrity", CheckStatus::Fail, "");
        integrity.actual = Some(
            "claude-session: No such file or directory; claude-session-list: No such file or directory"
                .into(),
        );
        let mut skipped = check("history-isolation", CheckStatus::Skip, "");
        skipped.detail = Some("no sessions ran".into());
        let text = screen(
            Command::Verify,
            &verify_of("web1", vec![integrity, skipped]),
            false,
        );
        insta::assert_snapshot!(text);
        assert!(
            text.contains("web1: ❌ FAIL not deployed: run `csdeploy push --host web1`"),
            "{text}"
        );
        assert!(
            text.contains("web1 : failed: not deployed: run `csdeploy push --host web1`"),
            "{text}"
        );
        assert!(
            !text.contains("No such file") && !text.contains("SKIP"),
            "{text}"
        );
    }

    #[test]
    fn drift_says_a_push_restores_it() {
        let mut integrity = check("launcher-integrity", CheckStatus::Fail, "");
        integrity.actual =
            Some("claude-session: sha256 a4a4a4a4a4a4, csdeploy ships 196119611961".into());
        let text = screen(Command::Verify, &verify_of("web1", vec![integrity]), false);
        insta::assert_snapshot!(text);
        assert!(
            text.contains("           drift: `csdeploy push` restores it"),
            "{text}"
        );
        assert!(
            text.contains("checks failed: launcher-integrity (drift: `csdeploy push` restores it)"),
            "{text}"
        );
    }

    #[test]
    fn with_the_real_client_a_pass_explains_its_exit_codes() {
        let mut parallel = check(
            "parallel-launch",
            CheckStatus::Pass,
            "2 sessions overlapped, exit codes [1, 1]",
        );
        parallel.expected =
            Some("2 sessions running at once, none refused or failed by the launcher".into());
        let table = check_table("h", "✅ PASS", &[parallel]);
        assert!(
            table.contains(
                "exit codes [1, 1]: none refused or failed by the launcher (Claude Code's own exit codes are not judged)"
            ),
            "{table}"
        );
        let probe = check(
            "parallel-launch",
            CheckStatus::Pass,
            "2 sessions overlapped, exit codes [0, 0]",
        );
        assert!(!check_table("h", "✅ PASS", &[probe]).contains("not judged"));
    }

    #[test]
    fn one_host_is_one_host() {
        let events = vec![Event::HostDone(host("local", Vec::new(), None, false))];
        let text = screen(Command::Verify, &events, false);
        assert!(text.contains("on 1 host (inventory"), "{text}");
        assert!(text.contains("verify: 1 host: "), "{text}");
    }

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
