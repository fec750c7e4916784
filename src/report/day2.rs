//! The reports of the day-two commands that return data rather than checks:
//! `sessions`, `cleanup` and `remove` (`doctor` reports checks, as `verify`
//! does). Their JSON documents are a contract (README, "Day two"): add keys,
//! never rename them.
//!
//! `{"command", "hosts": [{"host", "status": "ok|changed|failed|unreachable",
//! "error", "remote_commands", "duration_ms", ...what the host's step found}],
//! "summary"}`, where what was found is, for `sessions`, `"sessions": [...]`
//! (the objects of `claude-session-list --json`, unchanged; null where the
//! host could not list them); for `cleanup`, the cleaner's `--json` document
//! (`removed`, `kept`, `dry_run`, `credentials_rescued`) with
//! `cleaner_exit_code` and `cleaner_stderr`; for `remove`, `removed`
//! (`[{"path", "kind"}]`), `kept` (`[{"path", "reason"}]`), `check`, `purged`.

use serde_json::{Map, Value, json};

use crate::events::{Command, HostReport, Summary, TaskStatus};

/// The commands whose JSON document this module writes.
pub fn reports(command: Command) -> bool {
    matches!(
        command,
        Command::Sessions | Command::Cleanup | Command::Remove | Command::Rollback
    )
}

/// A host's error: its own, or its failed task's message.
fn error(report: &HostReport) -> Option<String> {
    report.error.clone().or_else(|| {
        report
            .tasks
            .iter()
            .find(|t| t.status == TaskStatus::Failed)
            .and_then(|t| t.msg.clone())
    })
}

pub fn document(command: Command, reports: &[HostReport], summary: &Summary) -> Value {
    let hosts: Vec<Value> = reports
        .iter()
        .map(|r| {
            let mut host = Map::new();
            host.insert("host".into(), json!(r.host));
            host.insert("status".into(), json!(r.status));
            if command == Command::Sessions {
                host.insert("sessions".into(), Value::Null);
            }
            if let Some(Value::Object(data)) = r.tasks.iter().find_map(|t| t.data.as_ref()) {
                host.extend(data.clone());
            }
            host.insert("error".into(), json!(error(r)));
            host.insert("remote_commands".into(), json!(r.remote_commands));
            host.insert("duration_ms".into(), json!(r.duration_ms));
            Value::Object(host)
        })
        .collect();
    json!({"command": command.name(), "hosts": hosts, "summary": summary})
}

/// `sessions` as text: one table, a row per session, the host first; None
/// when no host could list its sessions.
pub fn sessions_table(reports: &[HostReport]) -> Option<String> {
    const HEADER: [&str; 8] = [
        "HOST",
        "ID",
        "NAME",
        "STATE",
        "STARTED",
        "LAST ACTIVITY",
        "SIZE",
        "FIRST PROMPT",
    ];
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut rows: Vec<[String; 8]> = Vec::new();
    for r in reports {
        for task in &r.tasks {
            for s in crate::modules::sessions::listed(task) {
                let prompt = text(&s["first_prompt"]);
                let prompt: String = prompt
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(60)
                    .collect();
                rows.push([
                    r.host.clone(),
                    text(&s["id"]),
                    text(&s["name"]),
                    text(&s["state"]),
                    text(&s["started"]),
                    text(&s["last_activity"]),
                    s["size_bytes"].as_u64().map_or("-".into(), human_size),
                    prompt,
                ]);
            }
        }
    }
    let listed = reports
        .iter()
        .any(|r| r.tasks.iter().any(|t| t.data.is_some()));
    if rows.is_empty() {
        return listed.then(|| "no sessions".into());
    }
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(&HEADER.map(String::from));
    for row in &rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    Some(out)
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_ls_h() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(2048), "2.0 KiB");
        assert_eq!(human_size(3 * 1024 * 1024), "3.0 MiB");
    }
}
