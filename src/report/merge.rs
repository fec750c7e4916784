//! `csdeploy report merge`: the JSON reports of N shards (`--shard K/N`, one
//! CI job each) as one report with one exit code, as if one run had done it.

use serde_json::{Map, Value};

use crate::error::ExitCode;
use crate::events::Command;

/// The exit codes in the order they win when several apply (README's table):
/// nothing ran, then stopped, then failed, then unreachable.
const PRECEDENCE: [i64; 5] = [
    ExitCode::InvalidInput as i64,
    ExitCode::Interrupted as i64,
    ExitCode::Failed as i64,
    ExitCode::Unreachable as i64,
    ExitCode::Success as i64,
];

/// Summary keys that are not counts to add up.
const NOT_ADDED: [&str; 4] = ["run_id", "exit_code", "duration_ms", "check"];

/// One document from `reports` (name, parsed JSON): the same command's hosts,
/// each once, and a summary whose counts are the sums, whose duration is the
/// longest shard's, and whose exit code is the one that wins.
pub fn merge(reports: &[(String, Value)]) -> Result<Value, String> {
    let mut command: Option<Command> = None;
    let mut hosts: Vec<Value> = Vec::new();
    let mut seen = std::collections::BTreeMap::<String, &str>::new();
    let mut summary = Map::new();
    let (mut exit_rank, mut duration, mut check) = (PRECEDENCE.len() - 1, 0, false);
    let mut run_ids = Vec::new();
    for (name, report) in reports {
        let shape = || format!("{name}: not a csdeploy JSON report (`--format json`)");
        let this = report["command"]
            .as_str()
            .and_then(Command::named)
            .ok_or_else(shape)?;
        match command {
            Some(first) if first != this => {
                return Err(format!(
                    "{name} is a `{this}` report, the others are `{first}`: merge one command's shards"
                ));
            }
            _ => command = Some(this),
        }
        for host in report["hosts"].as_array().ok_or_else(shape)? {
            let host_name = host["host"].as_str().ok_or_else(shape)?.to_string();
            if let Some(other) = seen.insert(host_name.clone(), name) {
                return Err(format!(
                    "host {host_name} is in both {other} and {name}: shards must not overlap \
                     (the same --shard K/N twice?)"
                ));
            }
            hosts.push(host.clone());
        }
        let part = report["summary"].as_object().ok_or_else(shape)?;
        add_counts(&mut summary, part);
        let code = part
            .get("exit_code")
            .and_then(Value::as_i64)
            .ok_or_else(shape)?;
        let rank = PRECEDENCE
            .iter()
            .position(|&c| c == code)
            .ok_or_else(|| format!("{name}: unknown exit_code {code}"))?;
        exit_rank = exit_rank.min(rank);
        duration = duration.max(part.get("duration_ms").and_then(Value::as_u64).unwrap_or(0));
        check |= part.get("check").and_then(Value::as_bool).unwrap_or(false);
        if let Some(id) = part.get("run_id").and_then(Value::as_str) {
            run_ids.push(Value::from(id));
        }
    }
    let command = command.ok_or("no report to merge")?;
    summary.insert("run_ids".into(), Value::from(run_ids));
    summary.insert("duration_ms".into(), Value::from(duration));
    // verify's and doctor's summaries have no `check`.
    if !command.reports_checks() {
        summary.insert("check".into(), Value::from(check));
    }
    summary.insert("exit_code".into(), Value::from(PRECEDENCE[exit_rank]));
    Ok(serde_json::json!({"command": command.name(), "hosts": hosts, "summary": summary}))
}

/// Adds every number of `part` (at any depth) into `total`.
fn add_counts(total: &mut Map<String, Value>, part: &Map<String, Value>) {
    for (key, value) in part {
        if NOT_ADDED.contains(&key.as_str()) {
            continue;
        }
        match value {
            Value::Number(n) => {
                let sum =
                    total.get(key).and_then(Value::as_u64).unwrap_or(0) + n.as_u64().unwrap_or(0);
                total.insert(key.clone(), Value::from(sum));
            }
            Value::Object(inner) => {
                let slot = total
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(slot) = slot {
                    add_counts(slot, inner);
                }
            }
            _ => {}
        }
    }
}

/// The exit code a merged report carries.
pub fn exit_code(merged: &Value) -> i32 {
    merged["summary"]["exit_code"].as_i64().unwrap_or(1) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push(hosts: &[(&str, &str)], exit_code: i32) -> Value {
        let changed = hosts.iter().filter(|(_, s)| *s == "changed").count();
        let failed = hosts.iter().filter(|(_, s)| *s == "failed").count();
        json!({
            "command": "push",
            "hosts": hosts.iter().map(|(h, s)| json!({"host": h, "status": s})).collect::<Vec<_>>(),
            "summary": {"run_id": format!("id-{}", hosts[0].0), "hosts": hosts.len(), "changed": changed,
                        "failed": failed, "remote_commands": 2 * hosts.len(), "duration_ms": 100 * hosts.len(),
                        "check": false, "exit_code": exit_code},
        })
    }

    #[test]
    fn shards_merge_into_one_report_with_the_winning_exit_code() {
        let merged = merge(&[
            (
                "a.json".into(),
                push(&[("web1", "changed"), ("web2", "changed")], 0),
            ),
            ("b.json".into(), push(&[("web3", "failed")], 1)),
        ])
        .unwrap();
        assert_eq!(merged["hosts"].as_array().unwrap().len(), 3);
        assert_eq!(merged["summary"]["hosts"], 3);
        assert_eq!(merged["summary"]["changed"], 2);
        assert_eq!(merged["summary"]["remote_commands"], 6);
        assert_eq!(merged["summary"]["duration_ms"], 200);
        assert_eq!(merged["summary"]["run_ids"], json!(["id-web1", "id-web3"]));
        assert_eq!(exit_code(&merged), 1);
        for (codes, wins) in [
            ([0, 3], 3),
            ([3, 1], 1),
            ([1, 130], 130),
            ([130, 0], 130),
            ([0, 0], 0),
        ] {
            let merged = merge(&[
                ("a".into(), push(&[("x", "ok")], codes[0])),
                ("b".into(), push(&[("y", "ok")], codes[1])),
            ])
            .unwrap();
            assert_eq!(exit_code(&merged), wins, "{codes:?}");
        }
    }

    #[test]
    fn overlapping_or_mixed_or_foreign_reports_are_refused() {
        let overlap = merge(&[
            ("a.json".into(), push(&[("web1", "ok")], 0)),
            ("b.json".into(), push(&[("web1", "ok")], 0)),
        ]);
        assert!(
            overlap
                .unwrap_err()
                .contains("web1 is in both a.json and b.json")
        );
        let mut verify = push(&[("web2", "ok")], 0);
        verify["command"] = json!("verify");
        let mixed = merge(&[
            ("a.json".into(), push(&[("web1", "ok")], 0)),
            ("v.json".into(), verify),
        ]);
        assert!(mixed.unwrap_err().contains("`verify` report"));
        let foreign = merge(&[("x.json".into(), json!({"tests": 3}))]);
        assert!(foreign.unwrap_err().contains("not a csdeploy JSON report"));
        assert!(merge(&[]).is_err());
    }
}
