//! End-to-end tests of `csdeploy verify` (and `push --verify`) against real
//! sshd servers from the lab harness.
//!
//! Every test deploys with `csdeploy push` first, then judges the verifier by
//! the stable check ids it reports. The broken-launcher tests overwrite the
//! deployed `claude-session` of one host with an edited copy of what push
//! installed (the exact bytes this csdeploy ships, i.e.
//! `playbooks/files/claude-session` at build time) and assert the exact set of
//! failing checks, while the untouched host keeps passing everything.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// Every check the verifier reports, in report order.
const CHECK_IDS: [&str; 15] = [
    "launcher-integrity",
    "capacity",
    "client",
    "parallel-launch",
    "onboarding",
    "history-isolation",
    "directory-isolation",
    "no-shared-state",
    "inherit-policy",
    "credential-store",
    "default-untouched",
    "resume",
    "registry-tracking",
    "active-links",
    "cleanup",
];

/// The checks that need test sessions (skipped when no client can run).
const SESSION_CHECK_IDS: [&str; 12] = [
    "parallel-launch",
    "onboarding",
    "history-isolation",
    "directory-isolation",
    "no-shared-state",
    "inherit-policy",
    "credential-store",
    "default-untouched",
    "resume",
    "registry-tracking",
    "active-links",
    "cleanup",
];

// ---------------------------------------------------------------- helpers

/// `(id, status)` of a host's checks in a `verify --format json` document.
#[track_caller]
fn checks_of(json: &Value, name: &str, out: &Out) -> Vec<(String, String)> {
    let h = host(json, name);
    let Some(checks) = h["checks"].as_array() else {
        panic!("{name}: no checks array\n{out}")
    };
    checks
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_string(),
                c["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A host's check statuses by id; asserts every id appears exactly once and in order.
#[track_caller]
fn status_by_id(json: &Value, name: &str, out: &Out) -> BTreeMap<String, String> {
    let checks = checks_of(json, name, out);
    let ids: Vec<&str> = checks.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, CHECK_IDS, "{name}: check ids\n{out}");
    checks.into_iter().collect()
}

/// The full JSON entry of one check.
#[track_caller]
fn check<'a>(json: &'a Value, name: &str, id: &str) -> &'a Value {
    let h = host(json, name);
    match h["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
    {
        Some(c) => c,
        None => panic!("{name}: no check {id}:\n{h:#}"),
    }
}

/// Every check of the host passed and the host status is `pass`.
#[track_caller]
fn assert_all_pass(json: &Value, name: &str, out: &Out) {
    let statuses = status_by_id(json, name, out);
    let bad: Vec<_> = statuses.iter().filter(|(_, s)| *s != "pass").collect();
    assert!(bad.is_empty(), "{name}: checks not passing: {bad:?}\n{out}");
    assert_eq!(host(json, name)["status"], "pass", "{name}\n{out}");
}

/// Exactly `failing` fail on the host, every other check passes, host status `fail`.
#[track_caller]
fn assert_exact_failures(json: &Value, name: &str, failing: &[&str], out: &Out) {
    let statuses = status_by_id(json, name, out);
    let got: BTreeSet<&str> = statuses
        .iter()
        .filter(|(_, s)| *s == "fail")
        .map(|(id, _)| id.as_str())
        .collect();
    let want: BTreeSet<&str> = failing.iter().copied().collect();
    assert_eq!(got, want, "{name}: set of failing checks\n{out}");
    let other: Vec<_> = statuses
        .iter()
        .filter(|(id, s)| !want.contains(id.as_str()) && *s != "pass")
        .collect();
    assert!(
        other.is_empty(),
        "{name}: checks neither failing nor passing: {other:?}\n{out}"
    );
    assert_eq!(host(json, name)["status"], "fail", "{name}\n{out}");
}

/// `actual` of a check (for failure-reason assertions).
fn actual_of(json: &Value, name: &str, id: &str) -> String {
    check(json, name, id)["actual"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A lowercase UUID as the launcher names session directories.
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

fn sessions_dir(lab: &Lab, name: &str) -> PathBuf {
    lab.claude_home(name).join("sessions")
}

/// UUID-named entries directly in `<claude_home>/sessions`.
fn uuid_dirs(lab: &Lab, name: &str) -> BTreeSet<String> {
    let dir = sessions_dir(lab, name);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| is_uuid(n))
        .collect()
}

/// Entries of `<claude_home>/sessions/.registry` by id (empty if there is none).
fn registry(lab: &Lab, name: &str) -> BTreeMap<String, Value> {
    let path = sessions_dir(lab, name).join(".registry");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return BTreeMap::new();
    };
    let doc: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
    assert_eq!(doc["version"], 1, "{}: {text}", path.display());
    doc["sessions"]
        .as_object()
        .unwrap_or_else(|| panic!("{}: no sessions object\n{text}", path.display()))
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Names in `<claude_home>/sessions/active`.
fn active_entries(lab: &Lab, name: &str) -> BTreeSet<String> {
    let dir = sessions_dir(lab, name).join("active");
    match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// No test session is left behind: the session dirs, registry entries and
/// active links are exactly the pre-existing ones.
#[track_caller]
fn assert_no_test_sessions(lab: &Lab, name: &str, preexisting: &BTreeSet<String>) {
    assert_eq!(
        &uuid_dirs(lab, name),
        preexisting,
        "{name}: UUID dirs in sessions/ after verify"
    );
    let reg: BTreeSet<String> = registry(lab, name).into_keys().collect();
    assert_eq!(&reg, preexisting, "{name}: registry entries after verify");
    let links = active_entries(lab, name);
    assert!(
        links.is_subset(preexisting),
        "{name}: active links left after verify: {links:?}"
    );
}

fn launcher(lab: &Lab, name: &str) -> PathBuf {
    lab.claude_home(name).join("bin/claude-session")
}

/// Replace the deployed launcher of `name` with a copy of what push installed,
/// edited: each `(from, to)` replaces `from`, which must occur exactly once,
/// or, when `from` is `^PREFIX`, the one whole line starting with PREFIX.
#[track_caller]
fn break_launcher(lab: &Lab, name: &str, edits: &[(&str, &str)]) {
    let path = launcher(lab, name);
    // What push installed: the bytes this csdeploy ships (the build's
    // playbooks/files/claude-session), so launcher-integrity fails only
    // because of the edit.
    let original = std::fs::read_to_string(&path).unwrap();
    let mut text = original.clone();
    for (from, to) in edits {
        if *from == EXEC_CLIENT {
            let line = exec_line_of(&text);
            text = text.replacen(&format!("{line}\n"), to, 1);
            continue;
        }
        if let Some(prefix) = from.strip_prefix('^') {
            // The whole line that starts with `prefix` (and its newline).
            let starts: Vec<usize> = std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .filter(|i| text[*i..].starts_with(prefix))
                .collect();
            assert_eq!(
                starts.len(),
                1,
                "exactly one line of {} must start with {prefix:?}",
                path.display()
            );
            let start = starts[0];
            let end = text[start..]
                .find('\n')
                .map_or(text.len(), |i| start + i + 1);
            text.replace_range(start..end, to);
            continue;
        }
        assert_eq!(
            text.matches(from).count(),
            1,
            "launcher edit anchor {from:?} must occur exactly once in {}",
            path.display()
        );
        text = text.replacen(from, to, 1);
    }
    assert_ne!(text, original);
    std::fs::write(&path, text).unwrap();
    assert_eq!(mode_of(&path), 0o755);
}

/// The check table of `host` in the text report: `(mark, id)` per row.
fn text_table(stdout: &str, name: &str) -> Option<(String, Vec<(String, String)>)> {
    const MARKS: [&str; 4] = ["✅ PASS", "❌ FAIL", "⚠️ WARN", "   SKIP"];
    let mut lines = stdout.lines();
    let verdict = lines.find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))?;
    let mut rows = Vec::new();
    for line in lines {
        let Some(rest) = line.strip_prefix("  ") else {
            break;
        };
        if let Some(mark) = MARKS.iter().find(|m| rest.starts_with(*m)) {
            let id = rest[mark.len()..].split_whitespace().next().unwrap_or("");
            rows.push((mark.trim().to_string(), id.to_string()));
        }
    }
    Some((verdict, rows))
}

#[track_caller]
fn assert_text_all_pass(out: &Out, name: &str) {
    let Some((verdict, rows)) = text_table(&out.stdout, name) else {
        panic!("no check table for {name} in the text report\n{out}")
    };
    assert_eq!(verdict, "✅ PASS", "{name}: table verdict\n{out}");
    let ids: Vec<&str> = rows.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, CHECK_IDS, "{name}: table rows\n{out}");
    for (mark, id) in &rows {
        assert_eq!(mark, "✅ PASS", "{name}: {id}\n{out}");
    }
}

// ------------------------------------------------------------ JUnit reading

#[derive(Debug, Default)]
pub(crate) struct Suite {
    pub(crate) attrs: BTreeMap<String, String>,
    pub(crate) cases: Vec<Case>,
}

#[derive(Debug, Default)]
pub(crate) struct Case {
    pub(crate) attrs: BTreeMap<String, String>,
    /// `failure`, `error` or `skipped` children with their attributes and body.
    pub(crate) outcomes: Vec<(String, BTreeMap<String, String>, String)>,
}

impl Case {
    pub(crate) fn has(&self, kind: &str) -> bool {
        self.outcomes.iter().any(|(k, _, _)| k == kind)
    }
}

fn attrs(node: roxmltree::Node) -> BTreeMap<String, String> {
    node.attributes()
        .map(|a| (a.name().to_string(), a.value().to_string()))
        .collect()
}

/// A JUnit report as a real XML parser reads it (a malformed document
/// fails the test): testsuite > testcase > failure|error|skipped.
pub(crate) fn parse_junit(xml: &str) -> Vec<Suite> {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("bad XML: {e}\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites", "{xml}");
    assert_eq!(
        root.attribute("skipped"),
        None,
        "junit-10.xsd has no skipped on <testsuites>\n{xml}"
    );
    root.children()
        .filter(|n| n.has_tag_name("testsuite"))
        .map(|suite| Suite {
            attrs: attrs(suite),
            cases: suite
                .children()
                .filter(|n| n.has_tag_name("testcase"))
                .map(|case| {
                    assert!(
                        case.attribute("time").is_some(),
                        "a testcase without time\n{xml}"
                    );
                    Case {
                        attrs: attrs(case),
                        outcomes: case
                            .children()
                            .filter(|n| {
                                n.has_tag_name("failure")
                                    || n.has_tag_name("error")
                                    || n.has_tag_name("skipped")
                            })
                            .map(|n| {
                                let body = n.text().unwrap_or_default().to_string();
                                (n.tag_name().name().to_string(), attrs(n), body)
                            })
                            .collect(),
                    }
                })
                .collect(),
        })
        .collect()
}

#[track_caller]
fn suite<'a>(suites: &'a [Suite], name: &str, xml: &str) -> &'a Suite {
    let found: Vec<&Suite> = suites
        .iter()
        .filter(|s| s.attrs.get("name").map(String::as_str) == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "testsuites named {name}\n{xml}");
    found[0]
}

/// One testcase per check id, classname = host, no failure/error/skipped child,
/// and the suite's counters say zero failures and errors.
#[track_caller]
fn assert_junit_suite_passes(suites: &[Suite], name: &str, xml: &str) {
    let s = suite(suites, name, xml);
    let ids: Vec<&str> = s
        .cases
        .iter()
        .map(|c| c.attrs.get("name").map(String::as_str).unwrap_or(""))
        .collect();
    assert_eq!(ids, CHECK_IDS, "{name}: testcases\n{xml}");
    for c in &s.cases {
        assert_eq!(
            c.attrs.get("classname").map(String::as_str),
            Some(name),
            "{xml}"
        );
        assert!(c.outcomes.is_empty(), "{name}: {:?}\n{xml}", c);
    }
    assert_eq!(
        s.attrs.get("failures").map(String::as_str),
        Some("0"),
        "{xml}"
    );
    assert_eq!(
        s.attrs.get("errors").map(String::as_str),
        Some("0"),
        "{xml}"
    );
}

// ---------------------------------------------------------------- lab setup

/// Push to every host of the lab, asserting success, and make each host's
/// user one who has run Claude Code: onboarded `~/.claude.json` and a dummy
/// login in the default store (what a session must carry over).
#[track_caller]
fn push(lab: &Lab) {
    lab.csdeploy(&["push"]).assert_exit(0);
    for h in &lab.hosts {
        seed_user_state(&h.home);
    }
}

/// An onboarded `~/.claude.json` and dummy credentials (never a real
/// account; they expire in 2100, so no client tries a refresh).
fn seed_user_state(home: &Path) {
    std::fs::write(
        home.join(".claude.json"),
        "{\"hasCompletedOnboarding\":true,\"theme\":\"dark\",\"numStartups\":3}\n",
    )
    .unwrap();
    let store = home.join(".claude");
    std::fs::create_dir_all(&store).unwrap();
    let creds = store.join(".credentials.json");
    std::fs::write(
        &creds,
        "{\"claudeAiOauth\":{\"accessToken\":\"sk-ant-oat01-csdeploy-test-dummy\",\
         \"refreshToken\":\"sk-ant-ort01-csdeploy-test-dummy\",\"expiresAt\":4102444800000,\
         \"scopes\":[\"user:inference\",\"user:profile\"],\"subscriptionType\":\"pro\"}}\n",
    )
    .unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Inventory like the default one, plus `environment` entries:
/// `(host, VAR, value)`.
fn inventory_with_env(lab: &Lab, extra: &[(&str, &str, &str)]) -> String {
    let mut s = String::from("all:\n  hosts:\n");
    for h in &lab.hosts {
        for line in lab.host_entry_yaml(h, 4).lines() {
            s.push_str(line);
            s.push('\n');
            if line.trim_start().starts_with("HOME: ") {
                for (_, k, v) in extra.iter().filter(|(host, _, _)| *host == h.name) {
                    s.push_str(&format!("        {k}: {}\n", yq(v)));
                }
            }
        }
    }
    s
}

/// Write an executable script.
fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The deployed launcher of `name`, run as that host's user would run it:
/// HOME is the host's HOME and CLAUDE_BIN the given client.
fn launcher_command(lab: &Lab, name: &str, client: &Path, session_name: &str) -> Command {
    let mut cmd = Command::new(launcher(lab, name));
    cmd.args(["--name", session_name, "--"])
        .env("HOME", lab.home(name))
        .env("CLAUDE_BIN", client)
        .env_remove("CLAUDE_CONFIG_DIR")
        .env_remove("CLAUDE_SESSION_CONF")
        .current_dir(lab.home(name))
        .stdin(Stdio::null());
    cmd
}

/// Id of the registry entry named `session_name`, if any.
fn registry_id_named(lab: &Lab, name: &str, session_name: &str) -> Option<(String, Value)> {
    registry(lab, name)
        .into_iter()
        .find(|(_, e)| e["name"] == session_name)
}

// ---------------------------------------------------------------- tests

#[test]
fn correct_deployment_passes_every_check_in_text_json_and_junit() {
    let lab = Lab::new().hosts(2).servers(2).local(true).build();
    push(&lab);
    let names = ["host1", "host2", "local"];
    let none = BTreeSet::new();

    let out = lab.csdeploy(&["verify"]);
    out.assert_exit(0);
    for name in names {
        assert_text_all_pass(&out, name);
    }
    assert!(
        out.stdout.contains(
            "verify: 3 hosts: 3 pass, 0 fail, 0 unreachable; checks: 45 pass, 0 fail, 0 warn, 0 skip"
        ),
        "{out}"
    );

    let out = lab.csdeploy(&["verify", "--format", "json"]);
    out.assert_exit(0);
    let json = out.json();
    assert_eq!(json["command"], "verify", "{out}");
    assert_eq!(json["hosts"].as_array().unwrap().len(), 3, "{out}");
    for name in names {
        assert_all_pass(&json, name, &out);
        for c in host(&json, name)["checks"].as_array().unwrap() {
            for key in ["expected", "actual", "detail", "duration_ms"] {
                assert!(c.get(key).is_some(), "{name}: check lacks {key}: {c}");
            }
        }
    }
    let summary = &json["summary"];
    assert_eq!(summary["hosts"], 3, "{out}");
    assert_eq!(summary["pass"], 3, "{out}");
    assert_eq!(summary["fail"], 0, "{out}");
    assert_eq!(summary["unreachable"], 0, "{out}");
    assert_eq!(summary["checks"]["pass"], 45, "{out}");
    for k in ["fail", "warn", "skip"] {
        assert_eq!(summary["checks"][k], 0, "{out}");
    }
    assert_eq!(summary["exit_code"], 0, "{out}");

    let out = lab.csdeploy(&["verify", "--format", "junit"]);
    out.assert_exit(0);
    let suites = parse_junit(&out.stdout);
    assert_eq!(suites.len(), 3, "one testsuite per host\n{out}");
    for name in names {
        assert_junit_suite_passes(&suites, name, &out.stdout);
    }

    for name in names {
        assert_no_test_sessions(&lab, name, &none);
    }
}

#[test]
fn pre_existing_sessions_survive_verify() {
    let lab = Lab::new().hosts(1).build();
    push(&lab);
    let name = "host1";
    let bin = lab.root.join("stub-clients");
    std::fs::create_dir_all(&bin).unwrap();

    // An ended session: its client wrote one history line and exited.
    let ended_client = bin.join("ended-client");
    write_script(
        &ended_client,
        "#!/bin/sh\nprintf '%s\\n' '{\"display\":\"before verify\",\"pastedContents\":{},\"timestamp\":1,\"project\":\"/\",\"sessionId\":\"pre-ended\"}' >> \"$CLAUDE_CONFIG_DIR/history.jsonl\"\n",
    );
    let st = launcher_command(&lab, name, &ended_client, "pre-ended")
        .status()
        .unwrap();
    assert!(st.success(), "stub session exited {st}");

    // A live session: its client is still running while verify runs.
    let release = lab.root.join("release-live-client");
    let live_client = bin.join("live-client");
    write_script(
        &live_client,
        &format!(
            "#!/bin/sh\nprintf '%s\\n' '{{\"display\":\"still running\",\"sessionId\":\"pre-live\"}}' >> \"$CLAUDE_CONFIG_DIR/history.jsonl\"\nwhile [ ! -e {} ]; do sleep 0.05; done\n",
            shlex_quote(&release.display().to_string())
        ),
    );
    let mut live = launcher_command(&lab, name, &live_client, "pre-live")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let live_id = loop {
        if let Some((id, e)) = registry_id_named(&lab, name, "pre-live") {
            let hist = sessions_dir(&lab, name).join(&id).join("history.jsonl");
            let written = std::fs::read_to_string(&hist).is_ok_and(|h| h.ends_with('\n'));
            if e["status"] == "active" && written {
                break id;
            }
        }
        assert!(
            Instant::now() < deadline,
            "live stub session never showed up"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let (ended_id, ended_entry) = registry_id_named(&lab, name, "pre-ended").unwrap();
    assert_eq!(ended_entry["status"], "ended");
    let before: BTreeSet<String> = [ended_id.clone(), live_id.clone()].into();
    assert_eq!(uuid_dirs(&lab, name), before);
    let history_of = |id: &str| {
        std::fs::read_to_string(sessions_dir(&lab, name).join(id).join("history.jsonl"))
            .unwrap_or_else(|e| panic!("history of {id}: {e}"))
    };
    let ended_history = history_of(&ended_id);
    let live_history = history_of(&live_id);

    let out = lab.csdeploy(&["verify", "--format", "json"]);
    // Let the live session finish whatever happened.
    std::fs::write(&release, "").unwrap();
    let st = live.wait().unwrap();
    out.assert_exit(0);
    let json = out.json();
    assert_all_pass(&json, name, &out);
    assert_eq!(
        actual_of(&json, name, "cleanup"),
        "2 test sessions removed, 2 pre-existing kept",
        "{out}"
    );
    assert!(st.success(), "live stub session exited {st}");

    // Both sessions, their histories and registry entries are still there;
    // nothing of the test sessions is.
    assert_no_test_sessions(&lab, name, &before);
    assert_eq!(history_of(&ended_id), ended_history);
    assert_eq!(history_of(&live_id), live_history);
    let reg = registry(&lab, name);
    assert_eq!(reg[&ended_id]["name"], "pre-ended");
    assert_eq!(reg[&live_id]["name"], "pre-live");
    assert_eq!(reg[&live_id]["status"], "ended", "{:#}", reg[&live_id]);
}

/// Single-quote for sh.
fn shlex_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Push, break host1's launcher with `edits`, verify with `extra` flags, and
/// assert that exactly `failing` fail on host1. With `companion`, host2 is
/// deployed and verified in the same run and must pass everything (a broken
/// host does not drag its neighbours down). Returns the JSON report.
#[track_caller]
fn verify_broken(
    edits: &[(&str, &str)],
    extra: &[&str],
    failing: &[&str],
    companion: bool,
) -> (Lab, Value, Out) {
    let lab = Lab::new().hosts(if companion { 2 } else { 1 }).build();
    push(&lab);
    break_launcher(&lab, "host1", edits);
    let mut args = vec!["verify", "--format", "json"];
    args.extend_from_slice(extra);
    let out = lab.csdeploy(&args);
    out.assert_exit(1);
    let json = out.json();
    assert_exact_failures(&json, "host1", failing, &out);
    if companion {
        assert_all_pass(&json, "host2", &out);
        assert_no_test_sessions(&lab, "host2", &BTreeSet::new());
    }
    assert_eq!(json["summary"]["exit_code"], 1, "{out}");
    (lab, json, out)
}

const EXPORT_CONFIG_DIR: &str = "export CLAUDE_CONFIG_DIR=\"$sdir\"\n";

#[test]
fn broken_launcher_exporting_claude_session_dir() {
    let (lab, json, out) = verify_broken(
        &[(EXPORT_CONFIG_DIR, "export CLAUDE_SESSION_DIR=\"$sdir\"\n")],
        &[],
        &[
            "launcher-integrity",
            "history-isolation",
            "default-untouched",
            "resume",
        ],
        true,
    );
    assert!(
        actual_of(&json, "host1", "history-isolation").contains("CLAUDE_CONFIG_DIR was not set"),
        "{out}"
    );
    // The probe wrote where Claude Code would: the default history, which
    // did not exist before. default-untouched says so; then, holding only
    // this run's probe lines, the file is removed again.
    let default_history = lab.claude_home("host1").join("history.jsonl");
    assert!(
        actual_of(&json, "host1", "default-untouched").contains("history.jsonl changed"),
        "{out}"
    );
    assert!(!default_history.exists(), "{out}");
    let detail = check(&json, "host1", "cleanup")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        detail.contains("held only this run's probe lines, removed"),
        "{out}"
    );
    assert_no_test_sessions(&lab, "host1", &BTreeSet::new());
}

#[test]
fn broken_launcher_sharing_one_fixed_directory() {
    // Every session gets <sessions>/shared (mkdir -p: mode from the umask).
    // directory-isolation fails (not a UUID dir, shared, not 0700) and
    // history-isolation fails (one history, no line). The shared dir has no
    // seeded .claude.json, so the client shows the onboarding, and there is
    // no conversation to resume. There is only one directory to compare, so
    // no-shared-state has nothing to report; the registry, links and
    // cleanup of the UUID dirs the launcher still registers all work.
    let (lab, json, out) = verify_broken(
        &[(
            EXPORT_CONFIG_DIR,
            "shared=\"$(dirname \"$sdir\")/shared\"\nmkdir -p \"$shared\"\nexport CLAUDE_CONFIG_DIR=\"$shared\"\n",
        )],
        &[],
        &[
            "launcher-integrity",
            "onboarding",
            "history-isolation",
            "directory-isolation",
            "resume",
        ],
        false,
    );
    let dirs = actual_of(&json, "host1", "directory-isolation");
    assert!(dirs.contains("is not a UUID directory"), "{out}");
    assert!(dirs.contains("session 1 and session 2 share"), "{out}");
    assert!(
        actual_of(&json, "host1", "onboarding").contains("showed the onboarding"),
        "{out}"
    );
    assert_no_test_sessions(&lab, "host1", &BTreeSet::new());
}

#[test]
fn broken_launcher_symlinking_history_to_a_shared_file() {
    // The shared file lives in $HOME, outside claude_home, so the default
    // config dir is untouched; the histories are shared (history-isolation)
    // through a symlink out of the session dir (no-shared-state).
    let (lab, json, out) = verify_broken(
        &[(
            EXPORT_CONFIG_DIR,
            "export CLAUDE_CONFIG_DIR=\"$sdir\"\ntouch \"$HOME/shared-history.jsonl\"\nln -s \"$HOME/shared-history.jsonl\" \"$sdir/history.jsonl\"\n",
        )],
        &[],
        &[
            "launcher-integrity",
            "history-isolation",
            "no-shared-state",
            "inherit-policy",
        ],
        false,
    );
    assert!(
        actual_of(&json, "host1", "no-shared-state").contains("is a symlink to"),
        "{out}"
    );
    let shared = std::fs::read_to_string(lab.home("host1").join("shared-history.jsonl")).unwrap();
    assert_eq!(
        shared.lines().count(),
        4,
        "both sessions and their resumptions wrote there: {shared}"
    );
    assert_no_test_sessions(&lab, "host1", &BTreeSet::new());
}

/// The launcher's two registry steps, replaced: `register_session` makes the
/// session directory itself (0700, UUID name, an onboarded .claude.json)
/// and sets what the helper would tell the launcher, but never touches the
/// registry; `end_session` only exits. `links` adds the active link and its
/// removal. With no registry entry there is nothing to resume.
fn without_registry(links: bool) -> String {
    let (link, unlink) = if links {
        (
            " && ln -s \"$sdir\" \"$sessions/active/$sid\"",
            "    rm -f \"$sessions/active/$sid\"\n",
        )
    } else {
        ("", "")
    };
    format!(
        "\nregister_session() {{\n    claude_home=\"$(dirname \"$bindir\")\"\n    \
         sessions=\"$claude_home/sessions\"\n    \
         [ -n \"$sid\" ] || read -r sid </proc/sys/kernel/random/uuid\n    \
         sdir=\"$sessions/$sid\" start_in=\"$PWD\" client=\"${{CLAUDE_BIN:-claude}}\"\n    \
         mkdir -m 0700 \"$sdir\"{link}\n    \
         printf '{{\"hasCompletedOnboarding\":true}}\\n' > \"$sdir/.claude.json\"\n}}\n\
         end_session() {{\n{unlink}    exit \"$1\"\n}}\nregister_session\n"
    )
}
const REGISTER_CALL: &str = "\nregister_session\n";

#[test]
fn broken_launcher_without_registry_but_with_active_links() {
    // The launcher still creates sessions/active/<uuid> while the session
    // runs and removes it afterwards: only the registry is missing.
    verify_broken(
        &[(REGISTER_CALL, &without_registry(true))],
        &["--wait", "2"],
        &["launcher-integrity", "resume", "registry-tracking"],
        false,
    );
}

#[test]
fn broken_launcher_without_registry_or_active_links() {
    // Without the registry helper nothing creates the active link either
    // (the helper does both), so active-links fails legitimately here.
    // Without registry entries the verifier never sees the sessions active
    // and releases the probes only at its deadline: --wait 2 keeps it short.
    let (lab, json, out) = verify_broken(
        &[(REGISTER_CALL, &without_registry(false))],
        &["--wait", "2"],
        &[
            "launcher-integrity",
            "resume",
            "registry-tracking",
            "active-links",
        ],
        false,
    );
    assert!(
        actual_of(&json, "host1", "registry-tracking").contains("missing or unreadable"),
        "{out}"
    );
    assert!(
        actual_of(&json, "host1", "active-links").contains("no active link while it ran"),
        "{out}"
    );
    assert!(
        !sessions_dir(&lab, "host1").join(".registry").exists(),
        "the broken launcher wrote a registry"
    );
    assert_no_test_sessions(&lab, "host1", &BTreeSet::new());
}

#[test]
fn broken_launcher_serialized_by_a_global_lock() {
    let (lab, json, out) = verify_broken(
        &[(
            "\nset -u\n",
            "\nset -u\nexec 9>\"$HOME/.global-lock\"\nflock 9\n",
        )],
        &["--wait", "2"],
        &["launcher-integrity", "parallel-launch"],
        false,
    );
    assert!(
        actual_of(&json, "host1", "parallel-launch").contains("not running at once"),
        "{out}"
    );
    assert_no_test_sessions(&lab, "host1", &BTreeSet::new());
}

#[test]
fn correct_launcher_passes_twenty_runs_in_a_row() {
    let lab = Lab::new().hosts(2).servers(2).build();
    push(&lab);
    let start = Instant::now();
    for run in 1..=20 {
        let out = lab.csdeploy(&["verify", "--format", "json"]);
        assert_eq!(out.code, 0, "run {run} of 20 failed\n{out}");
        let json = out.json();
        for name in ["host1", "host2"] {
            assert_all_pass(&json, name, &out);
        }
    }
    eprintln!("20 verify runs on 2 hosts took {:?}", start.elapsed());
    for name in ["host1", "host2"] {
        assert_no_test_sessions(&lab, name, &BTreeSet::new());
    }
}

#[test]
fn concurrent_verifies_on_one_host_do_not_fail_each_other() {
    let lab = Lab::new().hosts(1).build();
    push(&lab);
    let lab = std::sync::Arc::new(lab);
    // The second starts while the first one's sessions exist (and ends
    // after the first has removed them): staggered by a few delays.
    for (round, stagger_ms) in [300, 600, 1000, 1500].into_iter().enumerate() {
        let runs: Vec<_> = (0..2)
            .map(|i| {
                let lab = lab.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(i * stagger_ms));
                    lab.csdeploy(&["verify", "--format", "json"])
                })
            })
            .collect();
        for run in runs {
            let out = run.join().unwrap();
            assert_eq!(
                out.code, 0,
                "round {round}: a verify failed beside another\n{out}"
            );
            assert_all_pass(&out.json(), "host1", &out);
        }
    }
    assert_no_test_sessions(&lab, "host1", &BTreeSet::new());
}

#[test]
fn unreachable_host_next_to_a_good_one() {
    let lab = Lab::new().hosts(1).unreachable("dead").build();
    lab.csdeploy(&["push", "--host", "host1"]).assert_exit(0);

    let out = lab.csdeploy(&["verify", "--format", "json"]);
    out.assert_exit(3);
    let json = out.json();
    assert_eq!(host(&json, "dead")["status"], "unreachable", "{out}");
    assert!(
        host(&json, "dead")["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{out}"
    );
    assert_all_pass(&json, "host1", &out);
    assert_eq!(json["summary"]["unreachable"], 1, "{out}");
    assert_eq!(json["summary"]["pass"], 1, "{out}");
    assert_eq!(json["summary"]["exit_code"], 3, "{out}");

    let out = lab.csdeploy(&["verify", "--format", "junit"]);
    out.assert_exit(3);
    let suites = parse_junit(&out.stdout);
    assert_eq!(suites.len(), 2, "{out}");
    assert_junit_suite_passes(&suites, "host1", &out.stdout);
    let dead = suite(&suites, "dead", &out.stdout);
    assert_eq!(dead.cases.len(), 1, "{out}");
    assert!(dead.cases[0].has("error"), "{out}");
    assert_eq!(
        dead.cases[0].attrs.get("classname").map(String::as_str),
        Some("dead")
    );
    assert!(out.stdout.contains("<error"), "{out}");

    // A failed check wins over the unreachable host: exit 1. A launcher that
    // only differs by a comment fails launcher-integrity and nothing else.
    break_launcher(
        &lab,
        "host1",
        &[("\nset -u\n", "\n# edited by hand\nset -u\n")],
    );
    let out = lab.csdeploy(&["verify", "--format", "json"]);
    out.assert_exit(1);
    let json = out.json();
    assert_exact_failures(&json, "host1", &["launcher-integrity"], &out);
    assert_eq!(host(&json, "dead")["status"], "unreachable", "{out}");
}

#[test]
fn strict_fails_on_the_unlimited_capacity_warning() {
    let lab = Lab::new()
        .hosts(1)
        .host_var("host1", "max_sessions", "0")
        .build();
    push(&lab);
    let out = lab.csdeploy(&["verify", "--format", "json"]);
    out.assert_exit(0);
    let json = out.json();
    let statuses = status_by_id(&json, "host1", &out);
    assert_eq!(statuses["capacity"], "warn", "{out}");
    assert!(
        actual_of(&json, "host1", "capacity").contains("unlimited"),
        "{out}"
    );
    for id in CHECK_IDS.iter().filter(|id| **id != "capacity") {
        assert_eq!(statuses[*id], "pass", "{id}\n{out}");
    }
    assert_eq!(host(&json, "host1")["status"], "pass", "{out}");
    assert_eq!(json["summary"]["checks"]["warn"], 1, "{out}");

    let out = lab.csdeploy(&["verify", "--strict", "--format", "json"]);
    out.assert_exit(1);
    let json = out.json();
    assert_eq!(host(&json, "host1")["status"], "fail", "{out}");
    assert_eq!(
        status_by_id(&json, "host1", &out)["capacity"],
        "warn",
        "{out}"
    );
    assert_eq!(json["summary"]["exit_code"], 1, "{out}");
}

#[test]
fn invalid_input_exits_2() {
    let lab = Lab::new().local(true).build();
    lab.csdeploy(&["verify", "--sessions", "0"]).assert_exit(2);
    lab.csdeploy(&["verify", "--client", "nonsense"])
        .assert_exit(2);
    lab.csdeploy(&["verify", "--host", "no-such-host"])
        .assert_exit(2);
}

#[test]
fn push_verify_costs_one_remote_command_and_verify_alone_one() {
    let lab = Lab::new().hosts(2).servers(2).local(true).build();
    let names = ["host1", "host2", "local"];
    let out = lab.csdeploy(&["push", "--verify", "--format", "json"]);
    out.assert_exit(0);
    let json = out.json();
    for name in names {
        let h = host(&json, name);
        assert_eq!(num(h, "remote_commands"), 1, "{name}\n{out}");
        let checks: Vec<&Value> = tasks(h)
            .iter()
            .filter_map(|t| t["checks"].as_array())
            .flatten()
            .collect();
        let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, CHECK_IDS, "{name}\n{out}");
        for c in checks {
            assert_eq!(c["status"], "pass", "{name}: {c}\n{out}");
        }
    }
    // The verification really ran against what was just pushed.
    for name in names {
        assert!(launcher(&lab, name).is_file());
        assert_no_test_sessions(&lab, name, &BTreeSet::new());
    }

    let out = lab.csdeploy(&["verify", "--format", "json"]);
    out.assert_exit(0);
    let json = out.json();
    for name in names {
        assert_eq!(
            num(host(&json, name), "remote_commands"),
            1,
            "{name}\n{out}"
        );
        assert_all_pass(&json, name, &out);
    }
}

/// One host whose PATH has no `claude`, pushed.
fn pushed_lab_without_claude() -> Lab {
    let lab = Lab::new().hosts(1).build();
    let farm = lab.path_without("claude", |name| name == "claude");
    lab.write_inventory(&inventory_with_env(
        &lab,
        &[("host1", "PATH", &farm.display().to_string())],
    ));
    push(&lab);
    lab
}

/// `--client claude` where the launcher finds no claude: the `client` check
/// fails (a real-client verification that cannot run is no pass), the
/// session checks are skipped with the reason, nothing is left behind.
#[test]
fn client_claude_without_claude_fails_the_client_check() {
    let lab = pushed_lab_without_claude();

    let out = lab.csdeploy(&["verify", "--client", "claude", "--format", "json"]);
    out.assert_exit(1);
    let json = out.json();
    let statuses = status_by_id(&json, "host1", &out);
    assert_eq!(statuses["launcher-integrity"], "pass", "{out}");
    assert_eq!(statuses["client"], "fail", "{out}");
    assert!(
        actual_of(&json, "host1", "client").contains("no claude"),
        "{out}"
    );
    for id in SESSION_CHECK_IDS {
        assert_eq!(statuses[id], "skip", "{id}\n{out}");
    }
    assert_eq!(host(&json, "host1")["status"], "fail", "{out}");
    assert_no_test_sessions(&lab, "host1", &BTreeSet::new());
}

/// The real Claude Code binary for the `--client claude` tests:
/// `$CSDEPLOY_IT_CLAUDE`, else `claude` on the test's PATH; None (with the
/// reason) when there is none or it does not run.
fn real_claude() -> Result<PathBuf, String> {
    let candidate = match std::env::var_os("CSDEPLOY_IT_CLAUDE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("claude"))
                    .find(|p| p.is_file())
            })
            .ok_or_else(|| {
                "no Claude Code binary: set CSDEPLOY_IT_CLAUDE to the `claude` executable \
                 (npm install --prefix DIR @anthropic-ai/claude-code-linux-x64, then \
                 DIR/node_modules/@anthropic-ai/claude-code-linux-x64/claude) or put `claude` on PATH"
                    .to_string()
            })?,
    };
    let out = Command::new(&candidate)
        .arg("--version")
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", candidate.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !version.contains("Claude Code") {
        return Err(format!(
            "{} --version did not answer like Claude Code: {version}",
            candidate.display()
        ));
    }
    eprintln!("using {} ({})", candidate.display(), version.trim());
    Ok(candidate)
}

/// Which client a broken-setup test runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    Probe,
    Claude,
}

impl Client {
    fn arg(self) -> &'static str {
        match self {
            Client::Probe => "probe",
            Client::Claude => "claude",
        }
    }
}

/// One pushed host whose user has run Claude Code (see `push`); with
/// `claude`, the real binary is first on its PATH as `claude`.
fn client_lab(claude: Option<&Path>) -> Lab {
    let lab = Lab::new().hosts(1).build();
    let bin = lab.root.join("claude-bin");
    std::fs::create_dir_all(&bin).unwrap();
    if let Some(claude) = claude {
        std::os::unix::fs::symlink(claude, bin.join("claude")).unwrap();
    }
    let farm = lab
        .path_without("claude", |name| name == "claude")
        .display()
        .to_string();
    let path = format!("{}:{farm}", bin.display());
    lab.write_inventory(&inventory_with_env(&lab, &[("host1", "PATH", &path)]));
    push(&lab);
    lab
}

/// What a verification must leave as it found it: every path under the
/// default dir but sessions/ (with size and mtime), and ~/.claude.json's bytes.
fn default_state(lab: &Lab, name: &str) -> BTreeMap<String, String> {
    let root = lab.claude_home(name);
    let mut found = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            let rel = path.strip_prefix(&root).unwrap().display().to_string();
            if rel == "sessions" {
                continue;
            }
            let md = std::fs::symlink_metadata(&path).unwrap();
            let mtime = md
                .modified()
                .ok()
                .map(|t| format!("{t:?}"))
                .unwrap_or_default();
            found.insert(rel, format!("{} {mtime}", md.len()));
            if md.is_dir() {
                stack.push(path);
            }
        }
    }
    let user = lab.home(name).join(".claude.json");
    found.insert(
        "~/.claude.json".into(),
        std::fs::read_to_string(&user).unwrap_or_else(|_| "absent".into()),
    );
    found
}

/// Verify host1 with `client`; the checks in `failing` must fail (others
/// may too: a broken setup breaks what follows from it), and the default
/// dir and ~/.claude.json are exactly as before.
#[track_caller]
fn verify_fails_by(lab: &Lab, client: Client, failing: &[&str]) -> (Value, Out) {
    let before = default_state(lab, "host1");
    let out = lab.csdeploy(&["verify", "--client", client.arg(), "--format", "json"]);
    out.assert_exit(1);
    let json = out.json();
    let statuses = status_by_id(&json, "host1", &out);
    for id in failing {
        assert_eq!(statuses[*id], "fail", "{client:?}: {id}\n{out}");
    }
    assert_eq!(
        default_state(lab, "host1"),
        before,
        "{client:?}: the default dir or ~/.claude.json changed\n{out}"
    );
    assert_no_test_sessions(lab, "host1", &BTreeSet::new());
    (json, out)
}

/// The real binary, or None after saying why the test is skipped.
fn real_claude_or_skip(test: &str) -> Option<PathBuf> {
    match real_claude() {
        Ok(c) => Some(c),
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// The labs for both clients: the probe's always, the real client's when
/// the binary exists.
fn labs_for_both(test: &str) -> Vec<(Client, Lab)> {
    let mut labs = vec![(Client::Probe, client_lab(None))];
    if let Some(claude) = real_claude_or_skip(test) {
        labs.push((Client::Claude, client_lab(Some(&claude))));
    }
    labs
}

/// The deployed launcher's line that starts the client: the last line that
/// execs a quoted command with "$@".
fn client_exec_line(lab: &Lab) -> String {
    exec_line_of(&std::fs::read_to_string(launcher(lab, "host1")).unwrap())
}

fn exec_line_of(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| {
            let t = l.trim_start();
            t.starts_with("exec \"") && t.ends_with("\"$@\"")
        })
        .unwrap_or_else(|| panic!("no client exec line in the deployed launcher"))
        .to_string()
}

/// Replaces the launcher's client exec line by `before` + that line edited by `edit`.
fn edit_client_exec(lab: &Lab, before: &str, edit: impl Fn(&str) -> String) {
    let line = client_exec_line(lab);
    let indent = &line[..line.len() - line.trim_start().len()];
    let mut new = String::new();
    for l in before.lines() {
        new.push_str(&format!("{indent}{l}\n"));
    }
    new.push_str(&format!("{indent}{}\n", edit(&line).trim_start()));
    break_launcher(lab, "host1", &[(&format!("{line}\n"), &new)]);
}

/// A correct deployment, an onboarded and logged-in (dummy) user: the real
/// client reaches the prompt in both sessions, keeps them apart, resumes
/// them, and the reports name it (path and --version) in text, JSON and JUnit.
#[test]
fn client_claude_real_binary_passes_and_is_named_in_every_format() {
    let Some(claude) =
        real_claude_or_skip("client_claude_real_binary_passes_and_is_named_in_every_format")
    else {
        return;
    };
    let lab = client_lab(Some(&claude));
    let before = default_state(&lab, "host1");
    let start = Instant::now();
    let out = lab.csdeploy(&["verify", "--client", "claude", "--format", "json"]);
    eprintln!("real-client verify took {:?}", start.elapsed());
    out.assert_exit(0);
    let json = out.json();
    assert_all_pass(&json, "host1", &out);
    let client = &host(&json, "host1")["client"];
    assert_eq!(client["kind"], "claude", "{out}");
    let path = client["path"].as_str().unwrap_or_default().to_string();
    assert!(path.ends_with("/claude-bin/claude"), "{out}");
    let version = client["version"].as_str().unwrap_or_default().to_string();
    assert!(version.contains("Claude Code"), "{out}");
    // Each session's prompt reached the verifier's loopback API: the proof
    // that it sees the login does not rest on what its screen shows.
    assert!(
        actual_of(&json, "host1", "onboarding")
            .contains("the verifier's loopback API took each request"),
        "{out}"
    );
    assert_eq!(default_state(&lab, "host1"), before, "{out}");
    assert_no_test_sessions(&lab, "host1", &BTreeSet::new());

    // Text on stdout and JUnit in a file, from one more run.
    let file = lab.root.join("verify.xml");
    let file_arg = file.display().to_string();
    let out = lab.csdeploy(&[
        "verify", "--client", "claude", "--format", "junit", "--output", &file_arg,
    ]);
    out.assert_exit(0);
    assert!(
        out.stdout
            .contains(&format!("  client: claude {path} ({version})")),
        "{out}"
    );
    let xml = std::fs::read_to_string(&file).unwrap();
    for property in [
        format!("name=\"client.path\" value=\"{path}\""),
        format!("name=\"client.version\" value=\"{version}\""),
    ] {
        assert!(xml.contains(&property), "{property}\n{xml}");
    }
    assert_junit_suite_passes(&parse_junit(&xml), "host1", &xml);
}

/// The probe's report names the probe and what the launcher would run.
#[test]
fn probe_run_names_the_probe_and_the_launchers_client() {
    let lab = client_lab(None);
    let out = lab.csdeploy(&["verify", "--format", "json"]);
    let json = out.json();
    let client = &host(&json, "host1")["client"];
    assert_eq!(client["kind"], "probe", "{out}");
    assert!(
        client["version"]
            .as_str()
            .is_some_and(|v| v.contains("probe")),
        "{out}"
    );
}

/// With the probe, the launcher is asked for its client while the test
/// sessions start, not before them: here it answers only once a session has
/// started (after 5 s it gives up), so asking first, and waiting, would get
/// no answer.
#[test]
fn the_launcher_is_asked_for_its_client_while_the_sessions_start() {
    let lab = client_lab(None);
    let go = lab.home("host1").join(".which-client-go");
    let go = go.display();
    break_launcher(
        &lab,
        "host1",
        &[
            (
                "^        exec \"${registry[@]}\" which-client",
                &format!(
                    "        for _ in $(seq 100); do [ -e '{go}' ] && echo /opt/claude-found && exit 0; \
                     sleep 0.05; done; exit 127\n"
                ),
            ),
            ("^name=\"\"", &format!("name=\"\"\n: > '{go}'\n")),
        ],
    );
    let out = lab.csdeploy(&["verify", "--format", "json"]);
    let json = out.json();
    let client = &host(&json, "host1")["client"];
    assert_eq!(client["launcher_client"], "/opt/claude-found", "{out}");
    assert_eq!(
        check(&json, "host1", "parallel-launch")["status"],
        "pass",
        "{out}"
    );
}

/// A launcher that starts the client with `env -i` (HOME, PATH and TERM
/// kept): the client gets neither CLAUDE_CONFIG_DIR nor
/// CLAUDE_SECURESTORAGE_CONFIG_DIR; its history goes to the default dir,
/// which verify puts back.
#[test]
fn broken_launcher_losing_the_variables_fails_with_both_clients() {
    for (client, lab) in
        labs_for_both("broken_launcher_losing_the_variables_fails_with_both_clients")
    {
        edit_client_exec(&lab, "", |line| {
            line.replacen(
                "exec \"",
                "exec env -i HOME=\"$HOME\" PATH=\"$PATH\" TERM=\"${TERM-dumb}\" \"",
                1,
            )
        });
        let (json, out) =
            verify_fails_by(&lab, client, &["history-isolation", "default-untouched"]);
        assert!(
            actual_of(&json, "host1", "history-isolation")
                .contains("CLAUDE_CONFIG_DIR was not set"),
            "{client:?}\n{out}"
        );
    }
}

/// A launcher that gives only the first session its own directory: the
/// others run in the first one's.
#[test]
fn broken_launcher_giving_only_the_first_session_its_dir_fails_with_both_clients() {
    for (client, lab) in labs_for_both(
        "broken_launcher_giving_only_the_first_session_its_dir_fails_with_both_clients",
    ) {
        edit_client_exec(
            &lab,
            "if mkdir \"$HOME/.csdeploy-first\" 2>/dev/null; then\n    printf %s \"$CLAUDE_CONFIG_DIR\" > \"$HOME/.csdeploy-first/dir\"\nelse\n    sleep 0.3\n    export CLAUDE_CONFIG_DIR=\"$(cat \"$HOME/.csdeploy-first/dir\")\"\nfi",
            str::to_string,
        );
        let (json, out) =
            verify_fails_by(&lab, client, &["history-isolation", "directory-isolation"]);
        assert!(
            actual_of(&json, "host1", "directory-isolation")
                .contains("session 1 and session 2 share"),
            "{client:?}\n{out}"
        );
    }
}

/// A launcher that points the credential store at the session's own dir
/// (where no login is): the client does not see the user's login. The
/// probe shows its login screen; the real client answers the typed prompt
/// with "Not logged in". Both fail onboarding and credential-store.
#[test]
fn sessions_that_lose_the_login_fail_with_both_clients() {
    for (client, lab) in labs_for_both("sessions_that_lose_the_login_fail_with_both_clients") {
        edit_client_exec(
            &lab,
            "export CLAUDE_SECURESTORAGE_CONFIG_DIR=\"$CLAUDE_CONFIG_DIR\"",
            str::to_string,
        );
        let (json, out) = verify_fails_by(&lab, client, &["onboarding", "credential-store"]);
        let onboarding = actual_of(&json, "host1", "onboarding");
        assert!(
            onboarding.contains("login screen") || onboarding.contains("Not logged in"),
            "{client:?}\n{out}"
        );
    }
}

/// session.conf edited by hand to share projects/ or history.jsonl: the
/// inherit-policy check fails, naming the file.
#[test]
fn inherit_policy_sharing_per_session_state_fails_with_both_clients() {
    for (client, lab) in
        labs_for_both("inherit_policy_sharing_per_session_state_fails_with_both_clients")
    {
        for shared in ["projects", "history.jsonl"] {
            let conf = lab.claude_home("host1").join("bin/session.conf");
            let text = std::fs::read_to_string(&conf).unwrap();
            let edited: String = text
                .lines()
                .map(|l| match l.strip_prefix("inherit_link=") {
                    Some(names) => format!("inherit_link={names} {shared}\n"),
                    None => format!("{l}\n"),
                })
                .collect();
            assert_ne!(edited, text);
            std::fs::write(&conf, &edited).unwrap();
            let (json, out) = verify_fails_by(&lab, client, &["inherit-policy"]);
            assert!(
                actual_of(&json, "host1", "inherit-policy")
                    .contains(&format!("inherit_link shares {shared}")),
                "{client:?} {shared}\n{out}"
            );
            std::fs::write(&conf, &text).unwrap();
        }
    }
}

/// A settings.json whose `env` moves CLAUDE_CONFIG_DIR (here back to the
/// default dir): history and transcripts leave the session; what reached the
/// default dir is taken out again.
#[test]
fn settings_env_moving_the_config_dir_fails_with_both_clients() {
    for (client, lab) in labs_for_both("settings_env_moving_the_config_dir_fails_with_both_clients")
    {
        let home = lab.claude_home("host1");
        std::fs::write(
            home.join("settings.json"),
            format!(
                "{{\n  \"env\": {{\n    \"CLAUDE_CONFIG_DIR\": {}\n  }}\n}}\n",
                yq(&home.display().to_string())
            ),
        )
        .unwrap();
        let (json, out) =
            verify_fails_by(&lab, client, &["history-isolation", "default-untouched"]);
        assert!(
            actual_of(&json, "host1", "history-isolation").contains("has no line of its prompt")
                || actual_of(&json, "host1", "history-isolation").contains("No such file"),
            "{client:?}\n{out}"
        );
    }
}

/// A user's own `claude` wrapper, first on PATH, that sets its own
/// CLAUDE_CONFIG_DIR. The probe never runs it (verify gives the launcher
/// CLAUDE_BIN), so the `client` check reads what `claude-session
/// --which-client` resolves: a shell script that sets the variable fails it.
/// With the real client the sessions' state really goes there as well.
#[test]
fn user_wrapper_setting_its_own_config_dir_fails_with_both_clients() {
    for (client, lab) in
        labs_for_both("user_wrapper_setting_its_own_config_dir_fails_with_both_clients")
    {
        let wrappers = lab.root.join("user-bin");
        std::fs::create_dir_all(&wrappers).unwrap();
        let real = lab.root.join("claude-bin/claude");
        let target = if real.exists() {
            real.display().to_string()
        } else {
            "/bin/true".into()
        };
        write_script(
            &wrappers.join("claude"),
            &format!(
                "#!/bin/sh\nexport CLAUDE_CONFIG_DIR=\"$HOME/.claude-mine\"\nexec {} \"$@\"\n",
                shlex_quote(&target)
            ),
        );
        let inventory = std::fs::read_to_string(&lab.inventory).unwrap();
        let bin = lab.root.join("claude-bin").display().to_string();
        let edited = inventory.replacen(&bin, &format!("{}:{bin}", wrappers.display()), 1);
        assert_ne!(edited, inventory);
        lab.write_inventory(&edited);
        let (json, out) = verify_fails_by(&lab, client, &["client"]);
        assert!(
            actual_of(&json, "host1", "client").contains("sets CLAUDE_CONFIG_DIR itself"),
            "{client:?}\n{out}"
        );
        if client == Client::Claude {
            let statuses = status_by_id(&json, "host1", &out);
            assert_eq!(statuses["history-isolation"], "fail", "{out}");
        }
    }
}

#[test]
fn junit_output_file_and_text_on_stdout() {
    let lab = Lab::new().hosts(1).local(true).build();
    push(&lab);
    let file = lab.root.join("reports/verify.xml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let file_arg = file.display().to_string();
    let out = lab.csdeploy(&["verify", "--format", "junit", "--output", &file_arg]);
    out.assert_exit(0);
    for name in ["host1", "local"] {
        assert_text_all_pass(&out, name);
    }
    assert!(!out.stdout.contains("<testsuite"), "XML on stdout\n{out}");
    let xml =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}\n{out}", file.display()));
    let suites = parse_junit(&xml);
    assert_eq!(suites.len(), 2, "{xml}");
    for name in ["host1", "local"] {
        assert_junit_suite_passes(&suites, name, &xml);
    }
}

#[test]
fn junit_failure_carries_message_and_details() {
    let lab = Lab::new().hosts(1).build();
    push(&lab);
    break_launcher(
        &lab,
        "host1",
        &[(EXPORT_CONFIG_DIR, "export CLAUDE_SESSION_DIR=\"$sdir\"\n")],
    );
    let out = lab.csdeploy(&["verify", "--format", "junit"]);
    out.assert_exit(1);
    let suites = parse_junit(&out.stdout);
    let s = suite(&suites, "host1", &out.stdout);
    let failed: BTreeSet<&str> = s
        .cases
        .iter()
        .filter(|c| c.has("failure"))
        .map(|c| c.attrs["name"].as_str())
        .collect();
    assert_eq!(
        failed,
        [
            "launcher-integrity",
            "history-isolation",
            "default-untouched",
            "resume"
        ]
        .into(),
        "{out}"
    );
    assert_eq!(
        s.attrs.get("failures").map(String::as_str),
        Some("4"),
        "{out}"
    );
    for c in s.cases.iter().filter(|c| c.has("failure")) {
        let (_, attrs, body) = c.outcomes.iter().find(|(k, _, _)| k == "failure").unwrap();
        let message = attrs.get("message").cloned().unwrap_or_default();
        assert!(
            message.contains("expected") && message.contains("actual"),
            "{message}\n{out}"
        );
        assert!(
            body.contains("expected: ") && body.contains("actual: "),
            "{body:?}\n{out}"
        );
    }
    let hist = s
        .cases
        .iter()
        .find(|c| c.attrs["name"] == "history-isolation")
        .unwrap();
    assert!(
        hist.outcomes[0].2.contains("CLAUDE_CONFIG_DIR was not set"),
        "{out}"
    );
}

/// The verifier is compiled in the apply step at each run: it leaves no
/// bytecode (nor anything else) in the host user's ~/.cache/csdeploy, and a
/// stale entry an older csdeploy left there is not read.
#[test]
fn verifier_writes_no_bytecode_cache() {
    let lab = Lab::new().hosts(1).build();
    push(&lab);
    let cache = lab.home("host1").join(".cache/csdeploy");
    let out = lab.csdeploy(&["verify", "--format", "json"]);
    out.assert_exit(0);
    assert!(!cache.exists(), "{cache:?}");

    std::fs::create_dir_all(&cache).unwrap();
    let stale = cache.join("verify-0123456789abcdef0123456789abcdef.bin");
    std::fs::write(&stale, b"not bytecode").unwrap();
    let out = lab.csdeploy(&["verify", "--format", "json"]);
    out.assert_exit(0);
    assert_all_pass(&out.json(), "host1", &out);
    assert_eq!(std::fs::read(&stale).unwrap(), b"not bytecode");
}

/// A launcher nobody can run (mode 0644 here; a home mounted noexec looks the
/// same to access(2)) is a broken installation: verify fails, it does not
/// skip its way to a pass. launcher-integrity names the mode, parallel-launch
/// fails, the checks that needed sessions are skipped with the reason. The
/// real-client variant fails too: only a missing `claude` is a skip.
#[test]
fn launcher_that_cannot_be_run_fails_verify() {
    let lab = pushed_lab_without_claude();
    let path = launcher(&lab, "host1");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    for client in ["probe", "claude"] {
        let out = lab.csdeploy(&["verify", "--client", client, "--format", "json"]);
        out.assert_exit(1);
        let json = out.json();
        let statuses = status_by_id(&json, "host1", &out);
        assert_eq!(statuses["launcher-integrity"], "fail", "{client}\n{out}");
        assert_eq!(statuses["capacity"], "pass", "{client}\n{out}");
        assert_eq!(statuses["client"], "fail", "{client}\n{out}");
        assert_eq!(statuses["parallel-launch"], "fail", "{client}\n{out}");
        for id in &SESSION_CHECK_IDS[1..] {
            assert_eq!(statuses[*id], "skip", "{client} {id}\n{out}");
        }
        assert!(
            actual_of(&json, "host1", "launcher-integrity")
                .contains("claude-session: not executable (mode 0644)"),
            "{out}"
        );
        assert!(
            actual_of(&json, "host1", "parallel-launch").contains("cannot be run"),
            "{out}"
        );
        assert_eq!(host(&json, "host1")["status"], "fail", "{out}");
    }
    assert_no_test_sessions(&lab, "host1", &BTreeSet::new());

    // The cleaner not executable: sessions still run (verify runs it through
    // Python), only launcher-integrity fails.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cleaner = lab.claude_home("host1").join("bin/cleanup-sessions.py");
    std::fs::set_permissions(&cleaner, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = lab.csdeploy(&["verify", "--format", "json"]);
    out.assert_exit(1);
    let json = out.json();
    assert_exact_failures(&json, "host1", &["launcher-integrity"], &out);
    assert!(
        actual_of(&json, "host1", "launcher-integrity")
            .contains("cleanup-sessions.py: not executable (mode 0600)"),
        "{out}"
    );
}

/// The launcher's start of the client, to break it: in `break_launcher`,
/// this stands for the line `client_exec_line` finds, whatever its text.
const EXEC_CLIENT: &str = "<the client exec line>";

/// What fails when the launcher registers both sessions but no client ever
/// starts (the edit to the launcher fails its integrity too).
const NO_CLIENT_STARTED: &[&str] = &[
    "launcher-integrity",
    "parallel-launch",
    "onboarding",
    "history-isolation",
    "directory-isolation",
    "credential-store",
    "resume",
    "registry-tracking",
    "active-links",
];

/// The run's cleanup found both test sessions by name and left nothing of them.
fn assert_run_cleaned_up(lab: &Lab, json: &Value, out: &Out) {
    assert_eq!(
        actual_of(json, "host1", "cleanup"),
        "2 test sessions removed, 0 pre-existing kept",
        "{out}"
    );
    assert_no_test_sessions(lab, "host1", &BTreeSet::new());
}

/// A launcher that registers its session but runs a client that is not
/// installed: no probe ever starts, so the verifier never sees the sessions
/// running. Its cleanup still finds them in the registry by this run's name
/// pattern and removes them; nothing of the run is left.
#[test]
fn sessions_whose_client_never_started_are_cleaned_up() {
    let (lab, json, out) = verify_broken(
        &[(EXEC_CLIENT, "    exec /nonexistent/claude-client \"$@\"\n")],
        &["--wait", "2"],
        NO_CLIENT_STARTED,
        false,
    );
    assert_run_cleaned_up(&lab, &json, &out);
}

/// Pid of the verifier on a lab host: the parent of a test session's launcher.
fn verifier_pid(lab: &Lab, name: &str) -> Option<(u32, Vec<String>)> {
    let entries: Vec<(String, Value)> = registry(lab, name)
        .into_iter()
        .filter(|(_, e)| {
            e["status"] == "active"
                && e["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("csdeploy-verify-"))
        })
        .collect();
    if entries.len() < 2 {
        return None;
    }
    let pid = entries[0].1["pid"].as_u64()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ppid: u32 = stat
        .rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let cmdline = std::fs::read_to_string(format!("/proc/{ppid}/cmdline")).ok()?;
    cmdline
        .contains("python")
        .then(|| (ppid, entries.into_iter().map(|(id, _)| id).collect()))
}

/// A verifier stopped by SIGTERM (a CI job cancelled) while its sessions
/// hang still removes them (launchers stopped, directories, registry
/// entries, active links) before it dies.
#[test]
fn verifier_terminated_mid_run_leaves_no_test_sessions() {
    let lab = Lab::new().hosts(1).build();
    push(&lab);
    break_launcher(&lab, "host1", &[(EXEC_CLIENT, "    exec sleep 60\n")]);
    let (out, ids) = std::thread::scope(|scope| {
        let run = scope.spawn(|| lab.csdeploy(&["verify", "--format", "json", "--wait", "30"]));
        let deadline = Instant::now() + Duration::from_secs(30);
        let (pid, ids) = loop {
            if let Some(found) = verifier_pid(&lab, "host1") {
                break found;
            }
            assert!(
                Instant::now() < deadline,
                "the test sessions never showed up"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let st = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        (run.join().unwrap(), ids)
    });
    assert_ne!(out.code, 0, "{out}");
    assert!(out.elapsed < Duration::from_secs(25), "{out}");
    for id in &ids {
        assert!(
            !sessions_dir(&lab, "host1").join(id).exists(),
            "{id} left\n{out}"
        );
    }
    assert_no_test_sessions(&lab, "host1", &BTreeSet::new());
}

/// Replace `from` (exactly once) by `to` in the deployed `bin/<file>` of `name`.
#[track_caller]
fn edit_deployed(lab: &Lab, name: &str, file: &str, from: &str, to: &str) {
    let path = lab.claude_home(name).join("bin").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} in {}",
        path.display()
    );
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    // Python trusts its cached bytecode while the source keeps its size and
    // its mtime's second: an edit of the same length within the second of
    // the last launch would not be seen.
    let _ = std::fs::remove_dir_all(lab.home(name).join(".cache/claude-session"));
}

/// A cleaner that removes all of sessions/ (the registry and active/ with
/// it) removes the test sessions too, and with no pre-existing session there
/// was nothing else to compare: cleanup now fails because the layout is gone.
#[test]
fn destructive_cleaner_fails_cleanup() {
    let lab = Lab::new().hosts(1).build();
    push(&lab);
    let anchor = "    sessions_dir = opts[\"--sessions-dir\"] or sr.load_config().sessions_dir\n";
    edit_deployed(
        &lab,
        "host1",
        "cleanup-sessions.py",
        anchor,
        &format!("{anchor}    import shutil\n    shutil.rmtree(sessions_dir)\n    return 0\n"),
    );
    let out = lab.csdeploy(&["verify", "--format", "json"]);
    out.assert_exit(1);
    let json = out.json();
    assert_exact_failures(&json, "host1", &["launcher-integrity", "cleanup"], &out);
    let actual = actual_of(&json, "host1", "cleanup");
    assert!(actual.contains("gone after the cleaner ran"), "{out}");
    for part in ["sessions", "sessions/active", "sessions/.registry"] {
        assert!(actual.contains(part), "{part}\n{out}");
    }
}

/// sessions/ and sessions/active made world-writable, then a registry
/// helper writing the registry world-readable: directory-isolation names
/// each (the README promises a private layout).
#[test]
fn permission_drift_of_the_sessions_layout_fails_directory_isolation() {
    let lab = Lab::new().hosts(1).build();
    push(&lab);
    let sessions = sessions_dir(&lab, "host1");
    for dir in [sessions.clone(), sessions.join("active")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let out = lab.csdeploy(&["verify", "--format", "json"]);
    out.assert_exit(1);
    let json = out.json();
    assert_exact_failures(&json, "host1", &["directory-isolation"], &out);
    let actual = actual_of(&json, "host1", "directory-isolation");
    for dir in [sessions.clone(), sessions.join("active")] {
        assert!(
            actual.contains(&format!("{}: mode 0777, expected 0700", dir.display())),
            "{}\n{out}",
            dir.display()
        );
    }
    assert_no_test_sessions(&lab, "host1", &BTreeSet::new());

    for dir in [sessions.clone(), sessions.join("active")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    edit_deployed(
        &lab,
        "host1",
        "session_registry.py",
        "            f.write(text)\n            f.flush()\n            os.fchmod(f.fileno(), 0o600)",
        "            f.write(text)\n            f.flush()\n            os.fchmod(f.fileno(), 0o644)",
    );
    let out = lab.csdeploy(&["verify", "--format", "json"]);
    out.assert_exit(1);
    let json = out.json();
    assert_exact_failures(
        &json,
        "host1",
        &["launcher-integrity", "directory-isolation"],
        &out,
    );
    assert!(
        actual_of(&json, "host1", "directory-isolation")
            .contains(".registry: mode 0644, expected 0600"),
        "{out}"
    );
}

/// A memory cgroup of 1 GB for this test's processes, under the test's own
/// memory cgroup (v1 `memory` hierarchy or v2 with the memory controller);
/// None with the reason where it cannot be made (not root, no such cgroup).
fn memory_cgroup(tag: &str) -> Result<(PathBuf, PathBuf), String> {
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    for line in own.lines() {
        let parts: Vec<&str> = line.splitn(3, ':').collect();
        let [id, controllers, path] = parts[..] else {
            continue;
        };
        let (mount, limit_file) = if id == "0" && controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else {
            continue;
        };
        let parent = Path::new(mount).join(path.trim_start_matches('/'));
        if !parent.join(limit_file).exists() && !parent.join("cgroup.subtree_control").exists() {
            continue;
        }
        let dir = parent.join(unique(tag));
        if std::fs::create_dir(&dir).is_err() {
            continue;
        }
        if std::fs::write(dir.join(limit_file), "1073741824").is_ok() {
            return Ok((dir.clone(), dir.join("cgroup.procs")));
        }
        let _ = std::fs::remove_dir(&dir);
    }
    Err(
        "no writable memory cgroup (needs root and a v1 memory hierarchy or v2 memory controller)"
            .into(),
    )
}

/// Inside a 1 GB memory cgroup the host has 1 GB, whatever MemTotal says:
/// max_sessions 4 x 500 MB no longer fits and capacity warns, naming the
/// cgroup limit. (tests/scripts/test_verify_capacity.py covers v1, v2 and
/// the no-limit cases on fake trees.)
#[test]
fn capacity_counts_the_cgroup_memory_limit() {
    let (dir, procs) = match memory_cgroup("csdeploy-it-capacity") {
        Ok(found) => found,
        Err(why) => {
            eprintln!("SKIPPED capacity_counts_the_cgroup_memory_limit: {why}");
            return;
        }
    };
    let lab = Lab::new().local(true).build();
    lab.csdeploy(&["push"]).assert_exit(0);
    let script = format!(
        "echo $$ > {} && exec \"$@\"",
        shlex_quote(&procs.display().to_string())
    );
    let inventory = lab.inventory.display().to_string();
    let out = lab.csdeploy_via(
        &["sh", "-c", &script, "sh"],
        &["verify", "--format", "json", "-i", &inventory],
    );
    let _ = std::fs::remove_dir(&dir);
    out.assert_exit(0);
    let json = out.json();
    let statuses = status_by_id(&json, "local", &out);
    assert_eq!(statuses["capacity"], "warn", "{out}");
    let actual = actual_of(&json, "local", "capacity");
    assert!(
        actual.starts_with("4 x 500 MB = 2000 MB, host has 1024 MB (cgroup v"),
        "{out}"
    );
    for id in CHECK_IDS.iter().filter(|id| **id != "capacity") {
        assert_eq!(statuses[*id], "pass", "{id}\n{out}");
    }
}

/// A launcher exporting CLAUDE_CONFIG_DIR relative to HOME works only when
/// the client runs from HOME. Verify starts its sessions elsewhere (a fresh
/// directory) and fails a relative config dir outright.
#[test]
fn broken_launcher_exporting_a_relative_config_dir() {
    let (lab, json, out) = verify_broken(
        &[(
            EXPORT_CONFIG_DIR,
            "export CLAUDE_CONFIG_DIR=\"${sdir#\"$HOME\"/}\"\n",
        )],
        &[],
        &[
            "launcher-integrity",
            "onboarding",
            "history-isolation",
            "directory-isolation",
            "resume",
        ],
        false,
    );
    for id in ["history-isolation", "directory-isolation"] {
        assert!(
            actual_of(&json, "host1", id).contains("is not an absolute path"),
            "{id}\n{out}"
        );
    }
    assert_no_test_sessions(&lab, "host1", &BTreeSet::new());
}

/// Launchers that hang before their client starts are killed at the hard
/// deadline with their registry entries still "active" and their links in
/// place; cleanup finds them by this run's name and removes them all.
#[test]
fn hanging_launchers_killed_at_the_deadline_are_cleaned_up() {
    let (lab, json, out) = verify_broken(
        &[(EXEC_CLIENT, "    exec sleep 60\n")],
        &["--wait", "1"],
        NO_CLIENT_STARTED,
        false,
    );
    assert_run_cleaned_up(&lab, &json, &out);
}

/// With a launcher that lets the probes write into the default history, an
/// existing history gets exactly its old bytes (and mtime) back: the lines
/// appended were this run's probe lines and nothing else. A line someone
/// else appended meanwhile would have left the file alone (see
/// tests/scripts/test_verify_undo.py).
#[test]
fn probe_lines_are_taken_out_of_a_history_they_should_not_reach() {
    let lab = Lab::new().hosts(1).build();
    push(&lab);
    let name = "host1";
    let default_history = lab.claude_home(name).join("history.jsonl");
    let old = "{\"display\":\"mine\",\"pastedContents\":{},\"timestamp\":1,\"project\":\"/\"}\n";
    std::fs::write(&default_history, old).unwrap();
    let mtime = std::fs::metadata(&default_history)
        .unwrap()
        .modified()
        .unwrap();

    // A pre-existing ended session, and a launcher that puts every new
    // session into that session's directory instead of a new one.
    let bin = lab.root.join("stub-clients");
    std::fs::create_dir_all(&bin).unwrap();
    let client = bin.join("ended-client");
    write_script(
        &client,
        "#!/bin/sh\nprintf '%s\\n' '{\"display\":\"before\",\"sessionId\":\"pre\"}' >> \"$CLAUDE_CONFIG_DIR/history.jsonl\"\n",
    );
    let st = launcher_command(&lab, name, &client, "pre")
        .status()
        .unwrap();
    assert!(st.success());
    let (pre_id, _) = registry_id_named(&lab, name, "pre").unwrap();
    let pre_history = sessions_dir(&lab, name).join(&pre_id).join("history.jsonl");
    let pre_text = std::fs::read_to_string(&pre_history).unwrap();
    let pre_dir = sessions_dir(&lab, name).join(&pre_id);
    let before: BTreeSet<String> = [pre_id.clone()].into();

    // Half of the sessions write to the default history, half to the old session.
    break_launcher(
        &lab,
        name,
        &[(
            EXPORT_CONFIG_DIR,
            &format!(
                "case $name in *-0) unset CLAUDE_CONFIG_DIR ;; *) export CLAUDE_CONFIG_DIR={} ;; esac\n",
                shlex_quote(&pre_dir.display().to_string())
            ),
        )],
    );
    let out = lab.csdeploy(&["verify", "--format", "json"]);
    out.assert_exit(1);
    let json = out.json();
    let statuses = status_by_id(&json, name, &out);
    assert_eq!(statuses["default-untouched"], "fail", "{out}");
    assert_eq!(
        std::fs::read_to_string(&default_history).unwrap(),
        old,
        "{out}"
    );
    assert_eq!(
        std::fs::metadata(&default_history)
            .unwrap()
            .modified()
            .unwrap(),
        mtime,
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&pre_history).unwrap(),
        pre_text,
        "{out}"
    );
    let detail = check(&json, name, "cleanup")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        detail.contains("1 probe lines of this run taken out"),
        "{out}"
    );
    assert!(uuid_dirs(&lab, name).is_superset(&before), "{out}");
}

#[test]
fn verify_before_push_says_not_deployed_and_how_to_push() {
    let lab = Lab::new().hosts(1).build();
    let out = lab.csdeploy(&["verify", "--wait", "2"]);
    out.assert_exit(1);
    assert!(
        out.stdout
            .contains("host1: ❌ FAIL not deployed: run `csdeploy push --host host1`"),
        "{out}"
    );
    assert!(
        !out.stdout.contains("No such file") && !out.stdout.contains("SKIP"),
        "{out}"
    );
    assert!(
        out.stdout.contains("(inventory: "),
        "the header names the inventory\n{out}"
    );
}
