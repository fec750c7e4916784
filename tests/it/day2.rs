//! End-to-end tests of the day-two commands (`sessions`, `cleanup`,
//! `doctor`, `remove`) against real sshd hosts and the local connection.
//!
//! Sessions are started through the deployed launcher, as a user starts them,
//! with a stub client (`CLAUDE_BIN`): a shell script that writes a history
//! line as Claude Code does and, for a live session, waits until the test
//! lets it go. What the deployed tools themselves say (run here directly)
//! is the oracle for what csdeploy must report.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// The keys of a `claude-session-list --json` object: its contract.
const SESSION_KEYS: [&str; 13] = [
    "id",
    "name",
    "host",
    "state",
    "started",
    "ended",
    "last_activity",
    "pid",
    "exit_code",
    "first_prompt",
    "size_bytes",
    "dir",
    "cwd",
];

/// Every item `doctor` reports on a host with python3, in report order.
const DOCTOR_IDS: [&str; 10] = [
    "python3",
    "bash",
    "coreutils",
    "flock",
    "claude",
    "memory",
    "disk",
    "local_bin_on_path",
    "sshd_max_sessions",
    "clock_skew",
];

const STUB_CLIENT: &str = r#"#!/bin/sh
# A stand-in for Claude Code: a history line as it writes one, then, for a
# live session, a wait until the test creates $STUB_STOP.
if [ -n "$STUB_PROMPT" ]; then
  printf '{"display":"%s","sessionId":"stub"}\n' "$STUB_PROMPT" >> "$CLAUDE_CONFIG_DIR/history.jsonl"
fi
while [ -n "$STUB_STOP" ] && [ ! -e "$STUB_STOP" ]; do sleep 0.1; done
"#;

fn write_script(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn stub_client(lab: &Lab) -> PathBuf {
    let path = lab.root.join("stub-claude");
    if !path.exists() {
        write_script(&path, STUB_CLIENT);
    }
    path
}

/// The deployed launcher of `name`, run as that host's user runs it.
fn launcher(lab: &Lab, name: &str, session: &str, prompt: &str) -> Command {
    let mut cmd = Command::new(lab.claude_home(name).join("bin/claude-session"));
    cmd.args(["--name", session, "--"])
        .env("HOME", lab.home(name))
        .env("CLAUDE_BIN", stub_client(lab))
        .env("STUB_PROMPT", prompt)
        .env_remove("STUB_STOP")
        .env_remove("CLAUDE_CONFIG_DIR")
        .env_remove("CLAUDE_SESSION_CONF")
        .current_dir(lab.home(name))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// A session whose client runs until the guard is dropped.
struct Live {
    child: Child,
    stop: PathBuf,
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop, "");
        let _ = self.child.wait();
    }
}

/// The deployed list tool of `name`, run here: the oracle.
fn list_tool(lab: &Lab, name: &str) -> Vec<Value> {
    let out = Command::new(lab.claude_home(name).join("bin/claude-session-list"))
        .arg("--json")
        .env("HOME", lab.home(name))
        .env_remove("CLAUDE_SESSION_CONF")
        .current_dir(lab.home(name))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn start_live(lab: &Lab, name: &str, session: &str) -> Live {
    let stop = lab.root.join(format!("stop-{name}-{session}"));
    let child = launcher(lab, name, session, "still working")
        .env("STUB_STOP", &stop)
        .spawn()
        .unwrap();
    let live = Live { child, stop };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !list_tool(lab, name)
        .iter()
        .any(|s| s["name"] == session && s["state"] == "active" && !s["first_prompt"].is_null())
    {
        assert!(
            Instant::now() < deadline,
            "session {session} never came up on {name}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    live
}

fn run_ended(lab: &Lab, name: &str, session: &str, prompt: &str) {
    let status = launcher(lab, name, session, prompt).status().unwrap();
    assert!(status.success(), "{session} on {name}: {status}");
}

/// An unregistered session directory (left by an older launcher, say).
fn orphan(lab: &Lab, name: &str, id: &str, history: bool) -> PathBuf {
    let dir = lab.claude_home(name).join("sessions").join(id);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    if history {
        std::fs::write(dir.join("history.jsonl"), "{\"display\":\"old work\"}\n").unwrap();
    }
    dir
}

const ORPHAN_EMPTY: &str = "0e000000-0000-4000-8000-000000000001";
const ORPHAN_WORK: &str = "0e000000-0000-4000-8000-000000000002";

/// On every host of the lab: a live session, an ended one with history, an
/// ended empty one, an empty orphan and an orphan that holds history.
fn populate(lab: &Lab, names: &[&str]) -> Vec<Live> {
    let mut live = Vec::new();
    for name in names {
        live.push(start_live(lab, name, "live"));
        run_ended(lab, name, "worked", "fix the bug");
        run_ended(lab, name, "idle", "");
        orphan(lab, name, ORPHAN_EMPTY, false);
        orphan(lab, name, ORPHAN_WORK, true);
    }
    live
}

fn by_name(sessions: &[Value]) -> BTreeMap<String, String> {
    sessions
        .iter()
        .map(|s| {
            let key = s["name"]
                .as_str()
                .map_or_else(|| s["id"].as_str().unwrap().to_string(), str::to_string);
            (key, s["state"].as_str().unwrap().to_string())
        })
        .collect()
}

#[track_caller]
fn assert_one_command(report: &Value, names: &[&str]) {
    for name in names {
        assert_eq!(
            num(host(report, name), "remote_commands"),
            1,
            "{name}: {report:#}"
        );
    }
}

#[test]
fn sessions_lists_every_session_with_its_state_on_ssh_and_local_hosts() {
    let lab = Lab::new().hosts(2).local(true).build();
    let names = ["host1", "host2", "local"];
    lab.csdeploy(&["push"]).assert_exit(0);
    let _live = populate(&lab, &names);

    let out = lab.csdeploy(&["sessions", "--format", "json"]);
    out.assert_exit(0);
    let report = out.json();
    assert_eq!(report["command"], "sessions");
    assert_one_command(&report, &names);
    for name in names {
        let entry = host(&report, name);
        assert_eq!(entry["status"], "ok", "{entry:#}");
        let sessions = entry["sessions"].as_array().unwrap();
        let states = by_name(sessions);
        let expected: BTreeMap<String, String> = [
            ("live", "active"),
            ("worked", "ended"),
            ("idle", "ended"),
            (ORPHAN_EMPTY, "orphaned"),
            (ORPHAN_WORK, "orphaned"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(states, expected, "{name}");
        // The list tool's objects, unchanged: the same keys, the same values.
        let oracle = list_tool(&lab, name);
        for s in sessions {
            let keys: BTreeSet<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, SESSION_KEYS.into_iter().collect(), "{s:#}");
            let same = oracle.iter().find(|o| o["id"] == s["id"]).unwrap();
            assert_eq!(s, same, "{name}");
        }
        let worked = sessions.iter().find(|s| s["name"] == "worked").unwrap();
        assert_eq!(worked["first_prompt"], "fix the bug");
        assert_eq!(worked["host"], name);
    }

    let out = lab.csdeploy(&["sessions", "--active", "--format", "json"]);
    out.assert_exit(0);
    let report = out.json();
    for name in names {
        let sessions = host(&report, name)["sessions"].as_array().unwrap().clone();
        assert_eq!(
            by_name(&sessions).into_iter().collect::<Vec<_>>(),
            [("live".into(), "active".into())]
        );
    }

    // Text: one table, the host in the first column, every session a row.
    let out = lab.csdeploy(&["sessions", "--limit", "host2:local"]);
    out.assert_exit(0);
    assert!(out.stdout.contains("HOST"), "{out}");
    let rows: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| (l.starts_with("host2 ") || l.starts_with("local ")) && !l.contains(" : ok="))
        .collect();
    assert_eq!(rows.len(), 10, "{out}");
    assert!(
        !out.stdout.lines().any(|l| l.starts_with("host1 ")),
        "{out}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("local") && r.contains("active") && r.contains("still working")),
        "{out}"
    );
    assert!(out.stdout.contains("ok: [host2] sessions"), "{out}");
    assert!(
        out.stdout
            .contains("5 sessions: 1 active, 2 ended, 2 orphaned"),
        "{out}"
    );
}

#[test]
fn cleanup_dry_run_and_cleanup_remove_exactly_what_the_cleaner_decides() {
    let lab = Lab::new().hosts(2).local(true).build();
    let names = ["host1", "host2", "local"];
    lab.csdeploy(&["push"]).assert_exit(0);
    let live = populate(&lab, &names);
    let sessions_dir = |name: &str| lab.claude_home(name).join("sessions");
    let entries = |name: &str| -> BTreeSet<String> {
        std::fs::read_dir(sessions_dir(name))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.') && n != "active")
            .collect()
    };
    let before: BTreeMap<&str, BTreeSet<String>> = names.iter().map(|n| (*n, entries(n))).collect();
    let id_of = |name: &str, session: &str| -> String {
        list_tool(&lab, name)
            .iter()
            .find(|s| s["name"] == session)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let decided = |entry: &Value, key: &str| -> BTreeMap<String, String> {
        entry[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["id"].as_str().unwrap().to_string(),
                    i["reason"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };

    let out = lab.csdeploy(&["cleanup", "--dry-run", "--format", "json"]);
    out.assert_exit(0);
    let report = out.json();
    assert_eq!(report["command"], "cleanup");
    assert_one_command(&report, &names);
    for name in names {
        let entry = host(&report, name);
        assert_eq!(
            entry["status"], "ok",
            "a dry run changes nothing: {entry:#}"
        );
        assert_eq!(entry["dry_run"], true);
        assert_eq!(entry["cleaner_exit_code"], 0);
        let removed = decided(entry, "removed");
        let expected: BTreeMap<String, String> = [
            (id_of(name, "idle"), "empty".to_string()),
            (ORPHAN_EMPTY.to_string(), "orphaned".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(removed, expected, "{name}");
        let kept = decided(entry, "kept");
        assert_eq!(
            kept.get(&id_of(name, "worked")).map(String::as_str),
            Some("has-history")
        );
        assert_eq!(
            kept.get(ORPHAN_WORK).map(String::as_str),
            Some("orphaned-has-history")
        );
        assert_eq!(
            kept.get(&id_of(name, "live")).map(String::as_str),
            Some("live"),
            "{kept:?}"
        );
        assert_eq!(
            entries(name),
            before[name],
            "--dry-run removed something on {name}"
        );
    }
    let text = lab.csdeploy(&["cleanup", "--dry-run", "--host", "local"]);
    text.assert_exit(0);
    assert!(
        text.stdout
            .contains(&format!("would remove {ORPHAN_EMPTY} (orphaned)")),
        "{text}"
    );
    assert!(
        text.stdout
            .contains(&format!("kept {ORPHAN_WORK} (orphaned-has-history)")),
        "{text}"
    );

    // The cleaner's own --dry-run, run on the host, is the oracle.
    let oracle = Command::new(lab.claude_home("host2").join("bin/cleanup-sessions.py"))
        .args(["--json", "--dry-run"])
        .env("HOME", lab.home("host2"))
        .output()
        .unwrap();
    let oracle: Value = serde_json::from_slice(&oracle.stdout).unwrap();

    let out = lab.csdeploy(&["cleanup", "--format", "json"]);
    out.assert_exit(0);
    let report = out.json();
    assert_one_command(&report, &names);
    for name in names {
        let entry = host(&report, name);
        assert_eq!(entry["status"], "changed", "{entry:#}");
        assert_eq!(entry["dry_run"], false);
        let removed: BTreeSet<String> = decided(entry, "removed").into_keys().collect();
        let left = entries(name);
        let gone: BTreeSet<String> = before[name].difference(&left).cloned().collect();
        assert_eq!(gone, removed, "{name}: removed exactly what it reports");
        if name == "host2" {
            assert_eq!(entry["removed"], oracle["removed"]);
            assert_eq!(entry["kept"], oracle["kept"]);
        }
    }

    // --session naming a live session: the cleaner refuses (its exit 1), the host fails.
    let live_id = id_of("local", "live");
    let out = lab.csdeploy(&[
        "cleanup",
        "--host",
        "local",
        "--session",
        &live_id,
        "--format",
        "json",
    ]);
    out.assert_exit(1);
    let entry = host(&out.json(), "local").clone();
    assert_eq!(entry["status"], "failed");
    assert_eq!(entry["cleaner_exit_code"], 1);
    assert!(
        entry["error"].as_str().unwrap().contains("is live"),
        "{entry:#}"
    );
    assert!(sessions_dir("local").join(&live_id).is_dir());
    drop(live);
}

/// The lab's inventory with extra `environment` entries and variables for one host.
fn inventory_with(lab: &Lab, target: &str, env: &[(&str, &str)], vars: &[(&str, &str)]) -> String {
    let mut s = String::from("all:\n  hosts:\n");
    for h in &lab.hosts {
        for line in lab.host_entry_yaml(h, 4).lines() {
            s.push_str(line);
            s.push('\n');
            if h.name == target && line.trim() == "environment:" {
                for (k, v) in env {
                    s.push_str(&format!("        {k}: {}\n", yq(v)));
                }
            }
        }
        if h.name == target {
            for (k, v) in vars {
                s.push_str(&format!("      {k}: {}\n", yq(v)));
            }
        }
    }
    s
}

#[test]
fn doctor_reports_each_host_and_fails_the_one_without_python3() {
    let lab = Lab::new().hosts(2).local(true).build();
    lab.csdeploy(&["push", "--host", "host1"]).assert_exit(0);
    // Claude Code where the launcher's search finds it: ~/.local/bin.
    for name in ["host1", "local"] {
        write_script(
            &lab.home(name).join(".local/bin/claude"),
            "#!/bin/sh\necho '9.9.9 (Claude Code)'\n",
        );
    }
    // local's login shell puts ~/.local/bin on PATH; host1's does not.
    std::fs::write(
        lab.home("local").join(".profile"),
        "PATH=\"$HOME/.local/bin:$PATH\"\n",
    )
    .unwrap();
    // host2 has no python3: its configured interpreter is not there, and
    // its PATH holds every command of the machine but python.
    let farm = lab.path_without("python", |name| name.starts_with("python"));
    lab.write_inventory(&inventory_with(
        &lab,
        "host2",
        &[("PATH", &farm.display().to_string())],
        &[("ansible_python_interpreter", "/nonexistent/bin/python3")],
    ));

    let out = lab.csdeploy(&["doctor", "--format", "json"]);
    out.assert_exit(1);
    let report = out.json();
    assert_eq!(report["command"], "doctor");
    assert_one_command(&report, &["host1", "host2", "local"]);
    let ids = |entry: &Value| -> Vec<String> {
        entry["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    let check = |entry: &Value, id: &str| -> Value {
        entry["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {entry:#}"))
            .clone()
    };
    for name in ["host1", "local"] {
        let entry = host(&report, name);
        assert_eq!(ids(entry), DOCTOR_IDS, "{name}");
        for id in ["python3", "bash", "claude", "clock_skew"] {
            assert_eq!(check(entry, id)["status"], "pass", "{name} {id}: {entry:#}");
        }
        assert!(
            check(entry, "claude")["actual"]
                .as_str()
                .unwrap()
                .contains("9.9.9 (Claude Code)"),
            "{entry:#}"
        );
        let memory = check(entry, "memory");
        assert!(
            memory["actual"].as_str().unwrap().contains("sessions fit"),
            "{memory:#}"
        );
        assert!(
            memory["expected"]
                .as_str()
                .unwrap()
                .contains("max_sessions=4"),
            "{memory:#}"
        );
        assert!(
            check(entry, "disk")["actual"]
                .as_str()
                .unwrap()
                .contains("free under"),
            "{entry:#}"
        );
        assert!(
            ["pass", "warn"].contains(
                &check(entry, "sshd_max_sessions")["status"]
                    .as_str()
                    .unwrap()
            ),
            "{entry:#}"
        );
        // Nothing fails but what the machine lacks.
        assert_eq!(entry["status"], "pass", "{entry:#}");
    }
    assert_eq!(
        check(host(&report, "local"), "local_bin_on_path")["status"],
        "pass"
    );
    let on_path = check(host(&report, "host1"), "local_bin_on_path");
    assert_eq!(on_path["status"], "warn", "{on_path:#}");
    assert!(on_path["detail"].as_str().unwrap().contains("~/.profile"));
    // The deployed launcher answered where Claude Code is on host1; the search did on local.
    assert!(
        check(host(&report, "host1"), "claude")["actual"]
            .as_str()
            .unwrap()
            .contains("claude-session --which-client"),
        "{report:#}"
    );
    let broken = host(&report, "host2");
    assert_eq!(broken["status"], "fail", "{broken:#}");
    let python = check(broken, "python3");
    assert_eq!(python["status"], "fail");
    assert!(
        python["actual"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/bin/python3"),
        "{python:#}"
    );
    assert!(
        python["detail"].as_str().unwrap().contains("no python3"),
        "{python:#}"
    );
    assert_eq!(
        check(broken, "bash")["status"],
        "pass",
        "the shell still judges: {broken:#}"
    );

    let out = lab.csdeploy(&["doctor"]);
    out.assert_exit(1);
    assert!(out.stdout.contains("host2: ❌ FAIL"), "{out}");
    assert!(out.stdout.contains("local: ✅ PASS"), "{out}");
    assert!(
        out.stdout
            .contains("doctor: 3 hosts: 2 pass, 1 fail, 0 unreachable"),
        "{out}"
    );

    let out = lab.csdeploy(&["doctor", "--format", "junit"]);
    out.assert_exit(1);
    assert!(out.stdout.contains(r#"<testsuite name="host2""#), "{out}");
    assert!(
        out.stdout.contains(
            r#"<failure message="expected &gt;= 3.8; actual not found (tried: /nonexistent/bin/python3)">"#
        ),
        "{out}"
    );
}

#[test]
fn remove_keeps_sessions_and_what_it_did_not_install_and_purge_removes_sessions() {
    let lab = Lab::new().hosts(1).local(true).build();
    let names = ["host1", "local"];
    lab.csdeploy(&["push"]).assert_exit(0);
    for name in names {
        run_ended(&lab, name, "worked", "keep me");
    }
    let bin = |name: &str| lab.claude_home(name).join("bin");
    let link = |name: &str| lab.home(name).join(".local/bin/claude-session");
    // host1: a script of the user's own beside ours, and the PATH link
    // pointing at another launcher: neither is csdeploy's to remove.
    std::fs::write(bin("host1").join("my-tool"), "mine\n").unwrap();
    std::fs::remove_file(link("host1")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/true", link("host1")).unwrap();
    let session_dirs = |name: &str| -> usize { list_tool(&lab, name).len() };
    assert_eq!(session_dirs("local"), 1);

    let out = lab.csdeploy(&["remove", "--check", "--format", "json"]);
    out.assert_exit(0);
    let report = out.json();
    assert_eq!(report["summary"]["check"], true);
    assert_one_command(&report, &names);
    let local = host(&report, "local");
    assert_eq!(local["check"], true);
    assert_eq!(local["removed"].as_array().unwrap().len(), 7, "{local:#}");
    assert!(
        bin("local").join("claude-session").is_file(),
        "--check removed something"
    );
    assert!(link("local").is_symlink());

    let out = lab.csdeploy(&["remove", "--format", "json"]);
    out.assert_exit(0);
    let report = out.json();
    assert_one_command(&report, &names);
    let paths = |entry: &Value, key: &str| -> BTreeMap<String, String> {
        entry[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let what = i.get("reason").or_else(|| i.get("kind")).unwrap();
                (
                    i["path"].as_str().unwrap().to_string(),
                    what.as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let files = [
        "session_registry.py",
        "claude-session",
        "claude-session-list",
        "cleanup-sessions.py",
        "session.conf",
    ];
    for name in names {
        let entry = host(&report, name);
        assert_eq!(entry["status"], "changed", "{entry:#}");
        let removed = paths(entry, "removed");
        for file in files {
            let path = bin(name).join(file);
            assert!(!path.exists(), "{}", path.display());
            assert_eq!(
                removed.get(&path.display().to_string()).map(String::as_str),
                Some("file")
            );
        }
        let kept = paths(entry, "kept");
        let sessions = lab.claude_home(name).join("sessions");
        assert!(
            kept.contains_key(&sessions.display().to_string()),
            "{kept:?}"
        );
        assert!(
            sessions.join(".registry").is_file(),
            "{name}: the registry stays"
        );
    }
    // local: everything of ours went, link and empty bin directory too.
    assert!(!link("local").exists() && !link("local").is_symlink());
    assert!(!bin("local").exists());
    // host1: the user's file, the bin directory holding it and the foreign link stay.
    let host1 = host(&report, "host1");
    let kept = paths(host1, "kept");
    assert!(bin("host1").join("my-tool").is_file());
    assert_eq!(
        kept[&bin("host1").display().to_string()],
        "not-empty: my-tool"
    );
    assert_eq!(kept[&link("host1").display().to_string()], "link-not-ours");
    assert_eq!(
        std::fs::read_link(link("host1")).unwrap(),
        Path::new("/usr/bin/true")
    );

    // The sessions are intact: a new push lists them again.
    let out = lab.csdeploy(&["sessions", "--format", "json"]);
    out.assert_exit(1);
    let entry = host(&out.json(), "local").clone();
    assert!(
        entry["error"]
            .as_str()
            .unwrap()
            .contains("run `csdeploy push --host local`"),
        "{entry:#}"
    );
    lab.csdeploy(&["push", "--host", "local"]).assert_exit(0);
    assert_eq!(session_dirs("local"), 1);
    let session_dir = PathBuf::from(list_tool(&lab, "local")[0]["dir"].as_str().unwrap());
    assert!(session_dir.is_dir());

    // --purge refuses while a session is live, then takes the sessions too.
    let live = start_live(&lab, "local", "busy");
    let out = lab.csdeploy(&["remove", "--purge", "--host", "local"]);
    out.assert_exit(1);
    assert!(out.stdout.contains("are live"), "{out}");
    assert!(
        bin("local").join("claude-session").is_file(),
        "a refused purge removed something"
    );
    drop(live);
    let out = lab.csdeploy(&["remove", "--purge", "--host", "local", "--format", "json"]);
    out.assert_exit(0);
    assert_eq!(host(&out.json(), "local")["purged"], true);
    assert!(!lab.claude_home("local").join("sessions").exists());
    assert!(!session_dir.exists());
}

#[test]
fn a_host_without_the_tooling_and_an_unreachable_host_beside_a_good_one() {
    let lab = Lab::new().hosts(2).unreachable("dead").build();
    lab.csdeploy(&["push", "--host", "host1"]).assert_exit(0);
    run_ended(&lab, "host1", "worked", "hello");
    write_script(
        &lab.home("host1").join(".local/bin/claude"),
        "#!/bin/sh\necho '9.9.9 (Claude Code)'\n",
    );

    for command in ["sessions", "cleanup"] {
        let out = lab.csdeploy(&[command, "--format", "json"]);
        out.assert_exit(1);
        let report = out.json();
        assert_eq!(host(&report, "host1")["status"], "ok", "{report:#}");
        let missing = host(&report, "host2");
        assert_eq!(missing["status"], "failed");
        let error = missing["error"].as_str().unwrap();
        assert!(error.starts_with("not deployed: "), "{error}");
        assert!(
            error.ends_with("run `csdeploy push --host host2`"),
            "{error}"
        );
        assert_eq!(host(&report, "dead")["status"], "unreachable");
        assert_one_command(&report, &["host1", "host2"]);
        assert_eq!(num(host(&report, "dead"), "remote_commands"), 0);
    }
    let out = lab.csdeploy(&["sessions", "--format", "json"]);
    assert_eq!(
        host(&out.json(), "host1")["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(host(&out.json(), "host2")["sessions"], Value::Null);

    // Unreachable alone beside a good host: exit 3, in every day-two command.
    for command in [&["sessions"][..], &["doctor"], &["remove", "--check"]] {
        let mut args = command.to_vec();
        args.extend(["--limit", "host1:dead"]);
        let out = lab.csdeploy(&args);
        out.assert_exit(3);
        assert!(out.stdout.contains("unreachable: [dead]"), "{out}");
    }
    let out = lab.csdeploy(&["doctor", "--limit", "host1:dead", "--format", "junit"]);
    out.assert_exit(3);
    let suites = crate::verify::parse_junit(&out.stdout);
    let dead = suites
        .iter()
        .find(|s| s.attrs["name"] == "dead")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(dead.cases.len(), 1, "{out}");
    assert_eq!(dead.cases[0].attrs["name"], "connect", "{out}");
    assert!(dead.cases[0].has("error"), "{out}");
}

const BROKEN_LAUNCHER: &str = r##"- hosts: all
  tasks:
    - name: Broken launcher
      copy: {dest: "{{ claude_home }}/bin/claude-session", mode: "0755", content: "#!/bin/bash\nexit 70\n"}
"##;

fn backups(lab: &Lab, name: &str) -> usize {
    std::fs::read_dir(lab.claude_home(name).join("bin"))
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("claude-session.") && n.ends_with(".bak")
        })
        .count()
}

#[test]
fn rollback_after_a_push_that_broke_the_launcher_brings_verify_back() {
    let lab = Lab::new().hosts(1).local(true).build();
    let names = ["host1", "local"];
    let broken = lab.write_file("broken.yml", BROKEN_LAUNCHER);
    let broken = broken.to_str().unwrap();
    lab.csdeploy(&["push"]).assert_exit(0);
    let out = lab.csdeploy(&["rollback", "--host", "local"]);
    out.assert_exit(1);
    assert!(out.stdout.contains("nothing to roll back"), "{out}");

    lab.csdeploy(&["push", "--backup", "--playbook", broken])
        .assert_exit(0);
    lab.csdeploy(&["verify", "--wait", "2"]).assert_exit(1);
    let launcher = |name: &str| lab.claude_home(name).join("bin/claude-session");
    let shipped =
        std::fs::read_to_string(repo_root().join("playbooks/files/claude-session")).unwrap();

    let out = lab.csdeploy(&["rollback", "--check", "--diff"]);
    out.assert_exit(0);
    assert!(out.stdout.contains("would restore 1 file\n"), "{out}");
    assert!(out.stdout.contains("-exit 70"), "{out}");
    assert!(
        out.stdout
            .contains("+# claude-session: run one Claude Code session"),
        "{out}"
    );
    for name in names {
        assert!(
            std::fs::read_to_string(launcher(name))
                .unwrap()
                .contains("exit 70")
        );
    }

    let out = lab.csdeploy(&["rollback", "--format", "json"]);
    out.assert_exit(0);
    let report = out.json();
    assert_one_command(&report, &names);
    for name in names {
        let entry = host(&report, name);
        assert_eq!(entry["status"], "changed", "{entry:#}");
        let restored = entry["restored"].as_array().unwrap();
        assert_eq!(restored.len(), 1, "{entry:#}");
        assert_eq!(restored[0]["path"], launcher(name).display().to_string());
        assert_eq!(std::fs::read_to_string(launcher(name)).unwrap(), shipped);
        assert_eq!(mode_of(&launcher(name)) & 0o777, 0o755);
    }
    lab.csdeploy(&["verify", "--wait", "2"]).assert_exit(0);
    let out = lab.csdeploy(&["rollback"]);
    out.assert_exit(1);
    assert!(
        out.stdout.contains("nothing to roll back"),
        "a rollback is undone once: {out}"
    );

    // A launcher edited since the push is not overwritten, unless --force.
    lab.csdeploy(&["push", "--backup", "--playbook", broken])
        .assert_exit(0);
    std::fs::write(
        launcher("host1"),
        "#!/bin/bash\n# edited by hand\nexit 70\n",
    )
    .unwrap();
    let out = lab.csdeploy(&["rollback", "--format", "json"]);
    out.assert_exit(1);
    let report = out.json();
    let refused = host(&report, "host1");
    assert_eq!(refused["status"], "failed");
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("changed since the push") && error.contains("--force"),
        "{error}"
    );
    assert!(
        std::fs::read_to_string(launcher("host1"))
            .unwrap()
            .contains("edited by hand")
    );
    assert_eq!(host(&report, "local")["status"], "changed");
    lab.csdeploy(&["rollback", "--force", "--host", "host1"])
        .assert_exit(0);
    assert_eq!(std::fs::read_to_string(launcher("host1")).unwrap(), shipped);
    lab.csdeploy(&["verify", "--wait", "2"]).assert_exit(0);

    // Each file keeps its three newest backups.
    for _ in 0..3 {
        lab.csdeploy(&["push", "--backup", "--playbook", broken, "--host", "local"])
            .assert_exit(0);
        lab.csdeploy(&["push", "--backup", "--host", "local"])
            .assert_exit(0);
    }
    assert_eq!(backups(&lab, "local"), 3);
    lab.csdeploy(&["verify", "--wait", "2", "--host", "local"])
        .assert_exit(0);
}

#[test]
fn a_max_sessions_that_is_not_a_number_is_refused_before_any_host_runs() {
    let lab = Lab::new()
        .hosts(1)
        .host_var("host1", "max_sessions", "lots")
        .build();
    // In the inventory (with its file:line) or given with -e.
    for (extra, says) in [
        (
            None,
            "inventory.yml:9:7: all.hosts.host1.max_sessions: expected a whole number",
        ),
        (
            Some("max_sessions=many"),
            "(command line): max_sessions: expected a whole number",
        ),
    ] {
        for command in ["doctor", "verify"] {
            let mut args = vec![command];
            args.extend(extra.map(|e| ["-e", e]).iter().flatten());
            let out = lab.csdeploy(&args);
            out.assert_exit(2);
            assert!(out.stderr.contains(says), "{command}: {out}");
            assert!(
                !out.stdout.contains("RECAP"),
                "{command}: nothing runs: {out}"
            );
        }
    }
}
