//! `--format json`: one document on stdout when the run ends. Its key names
//! are a contract for CI users: add keys, never rename them.

use std::io::Write;

use serde_json::json;

use super::Reporter;
use crate::events::{Event, HostReport};

pub struct JsonReporter {
    command: String,
    hosts: Vec<String>,
    reports: Vec<HostReport>,
}

impl JsonReporter {
    pub fn new(command: &str) -> JsonReporter {
        JsonReporter {
            command: command.to_string(),
            hosts: Vec::new(),
            reports: Vec::new(),
        }
    }
}

impl Reporter for JsonReporter {
    fn event(&mut self, event: &Event) {
        match event {
            Event::RunStarted { hosts, .. } => self.hosts = hosts.clone(),
            Event::HostDone(report) => self.reports.push(report.clone()),
            Event::RunDone(summary) => {
                // Inventory order, whatever order the hosts finished in.
                let order = |r: &HostReport| self.hosts.iter().position(|h| *h == r.host);
                self.reports.sort_by_key(order);
                let document = json!({
                    "command": self.command,
                    "hosts": self.reports,
                    "summary": summary,
                });
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&document).unwrap_or_default()
                );
                let _ = out.flush();
            }
            _ => {}
        }
    }
}
