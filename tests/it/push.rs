//! End-to-end tests of `csdeploy push` (and `run` for the module behaviour push
//! relies on) against real sshd servers from the lab harness.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

use crate::harness::*;

/// Directories push creates under claude_home, with their modes.
const DIRS: [(&str, u32); 3] = [
    ("bin", 0o755),
    ("sessions", 0o700),
    ("sessions/active", 0o700),
];
/// Files push installs into `<claude_home>/bin`, with their modes.
const FILES: [(&str, u32); 5] = [
    ("claude-session", 0o755),
    ("claude-session-list", 0o755),
    ("cleanup-sessions.py", 0o755),
    ("session_registry.py", 0o755),
    ("session.conf", 0o644),
];

// ---------------------------------------------------------------- helpers

#[track_caller]
fn assert_layout(lab: &Lab, name: &str) {
    let ch = lab.claude_home(name);
    let uid = current_uid();
    for (dir, mode) in DIRS {
        let p = ch.join(dir);
        assert!(p.is_dir(), "{name}: {} is not a directory", p.display());
        assert_eq!(mode_of(&p), mode, "{name}: mode of {}", p.display());
        assert_eq!(
            std::fs::metadata(&p).unwrap().uid(),
            uid,
            "{name}: owner of {}",
            p.display()
        );
    }
    for (file, mode) in FILES {
        let p = ch.join("bin").join(file);
        assert!(p.is_file(), "{name}: {} is not a file", p.display());
        assert_eq!(
            mode_of(&p),
            mode,
            "{name}: mode of {} is {:o}",
            p.display(),
            mode_of(&p)
        );
        assert_eq!(
            std::fs::metadata(&p).unwrap().uid(),
            uid,
            "{name}: owner of {}",
            p.display()
        );
        if file == "session.conf" {
            // Rendered from the inventory (content: in playbooks/push.yml).
            let got = std::fs::read_to_string(&p).unwrap();
            assert!(
                !got.contains("{{"),
                "{name}: session.conf not rendered:\n{got}"
            );
            assert!(
                got.lines().any(|l| l == format!("host={name}")),
                "{name}: session.conf lacks host={name}:\n{got}"
            );
            assert!(
                got.lines().any(|l| l.starts_with("max_sessions=")),
                "{name}: session.conf lacks max_sessions=:\n{got}"
            );
            continue;
        }
        let src = playbook_file(file);
        let want =
            std::fs::read(&src).unwrap_or_else(|e| panic!("reference {}: {e}", src.display()));
        let got = std::fs::read(&p).unwrap();
        assert!(
            got == want,
            "{name}: content of {} differs from {}",
            p.display(),
            src.display()
        );
    }
}

#[track_caller]
fn session_conf(lab: &Lab, name: &str) -> String {
    std::fs::read_to_string(lab.claude_home(name).join("bin/session.conf")).unwrap()
}

/// Everything below `dir`, relative, sorted (to compare "nothing changed").
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[track_caller]
fn assert_empty_dir(dir: &Path) {
    let t = tree(dir);
    assert!(
        t.is_empty(),
        "{} should be untouched but holds {t:?}",
        dir.display()
    );
}

fn mtimes(dir: &Path) -> BTreeMap<String, (SystemTime, u32)> {
    tree(dir)
        .into_iter()
        .map(|rel| {
            let md = std::fs::symlink_metadata(dir.join(&rel)).unwrap();
            (rel, (md.modified().unwrap(), md.mode()))
        })
        .collect()
}

fn statuses(host: &Value) -> Vec<String> {
    tasks(host)
        .iter()
        .map(|t| t["status"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Assert an "invalid input" failure: exit 2 and stderr naming `file:line:col` and `key`.
#[track_caller]
fn assert_invalid_at(out: &Out, file: &Path, line: usize, key: &str) {
    out.assert_exit(2);
    let fname = file.file_name().unwrap().to_str().unwrap();
    let needle = format!("{fname}:{line}:");
    let located = out.stderr.match_indices(&needle).any(|(i, _)| {
        out.stderr[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    });
    assert!(
        located,
        "stderr should name `{fname}:{line}:<column>`\n{out}"
    );
    assert!(
        out.stderr.contains(key),
        "stderr should name the key `{key}`\n{out}"
    );
}

fn write_playbook(lab: &Lab, rel: &str, text: &str) -> PathBuf {
    lab.write_file(rel, text)
}

// ---------------------------------------------------------------- push

#[test]
fn first_push_installs_layout_on_two_ssh_servers_and_local() {
    let lab = Lab::new()
        .hosts(2)
        .servers(2)
        .local(true)
        .host_var("host2", "max_sessions", "7")
        .build();
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    assert_eq!(j["command"], "push", "{j:#}");
    for h in ["host1", "host2", "local"] {
        let hj = host(&j, h);
        assert_eq!(hj["status"], "changed", "{h}: {hj:#}");
        assert!(num(hj, "changed") > 0, "{h}: {hj:#}");
        assert_eq!(num(hj, "failed"), 0, "{h}: {hj:#}");
        assert_layout(&lab, h);
    }
    let conf1 = session_conf(&lab, "host1");
    assert!(
        conf1.lines().any(|l| l == "max_sessions=4"),
        "default max_sessions is 4:\n{conf1}"
    );
    let conf2 = session_conf(&lab, "host2");
    assert!(
        conf2.lines().any(|l| l == "max_sessions=7"),
        "inventory max_sessions 7:\n{conf2}"
    );
    assert_eq!(j["summary"]["exit_code"], 0, "{j:#}");
    assert_eq!(j["summary"]["hosts"], 3, "{j:#}");
    assert_eq!(j["summary"]["unreachable"], 0, "{j:#}");
}

#[test]
fn every_kind_of_push_costs_one_remote_command() {
    let lab = Lab::new().hosts(1).local(true).build();
    // First push, rerun, check mode, diff, both, then a change to diff.
    for args in [
        &["push"][..],
        &["push"],
        &["push", "--check"],
        &["push", "--diff"],
        &["push", "--check", "--diff"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        let out = lab.csdeploy(&args);
        out.assert_exit(0);
        let j = out.json();
        for h in ["host1", "local"] {
            assert_eq!(
                num(host(&j, h), "remote_commands"),
                1,
                "{args:?} {h}\n{j:#}"
            );
        }
    }
    std::fs::write(lab.claude_home("host1").join("bin/session.conf"), "x\n").unwrap();
    for args in [
        ["push", "--check", "--diff"],
        ["push", "--diff", "--backup"],
    ] {
        let out = lab.csdeploy(&[args[0], args[1], args[2], "--format", "json"]);
        out.assert_exit(0);
        let hj = host(&out.json(), "host1").clone();
        assert_eq!(num(&hj, "changed"), 1, "{args:?}\n{hj:#}");
        assert_eq!(num(&hj, "remote_commands"), 1, "{args:?}\n{hj:#}");
        let diff = tasks(&hj)
            .iter()
            .find_map(|t| t["diff"].as_str().map(String::from));
        assert!(diff.is_some_and(|d| d.contains("-x")), "{args:?}\n{hj:#}");
    }
}

#[test]
fn second_push_changes_nothing_and_costs_one_remote_command() {
    let lab = Lab::new().hosts(2).local(true).build();
    lab.csdeploy(&["push", "--format", "json"]).assert_exit(0);
    let before: Vec<_> = ["host1", "host2", "local"]
        .iter()
        .map(|h| mtimes(&lab.claude_home(h)))
        .collect();

    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    for (i, h) in ["host1", "host2", "local"].iter().enumerate() {
        let hj = host(&j, h);
        assert_eq!(hj["status"], "ok", "{h}: {hj:#}");
        assert_eq!(num(hj, "changed"), 0, "{h}: {hj:#}");
        assert!(
            statuses(hj).iter().all(|s| s == "ok"),
            "{h}: every task should be ok: {hj:#}"
        );
        if *h != "local" {
            assert_eq!(
                num(hj, "remote_commands"),
                1,
                "{h}: a no-op push must cost one remote command\n{hj:#}"
            );
        }
        assert_eq!(
            mtimes(&lab.claude_home(h)),
            before[i],
            "{h}: a no-op push rewrote something"
        );
        assert_layout(&lab, h);
    }
    assert_eq!(j["summary"]["exit_code"], 0, "{j:#}");
}

#[test]
fn push_repairs_drift_and_check_mode_only_reports_it() {
    let lab = Lab::new().hosts(1).build();
    lab.csdeploy(&["push"]).assert_exit(0);
    let bin = lab.claude_home("host1").join("bin");
    let conf = bin.join("session.conf");
    std::fs::write(&conf, "tampered\n").unwrap();
    std::fs::set_permissions(
        bin.join("claude-session"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    let out = lab.csdeploy(&["push", "--check", "--format", "json"]);
    out.assert_exit(0);
    let hj = host(&out.json(), "host1").clone();
    assert_eq!(hj["status"], "changed", "{hj:#}");
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "tampered\n",
        "--check must not repair"
    );
    assert_eq!(
        mode_of(&bin.join("claude-session")),
        0o600,
        "--check must not chmod"
    );

    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    let hj = host(&j, "host1");
    assert_eq!(hj["status"], "changed", "{hj:#}");
    assert_eq!(num(hj, "remote_commands"), 1, "{hj:#}");
    let changed: Vec<_> = tasks(hj)
        .iter()
        .filter(|t| t["status"] == "changed")
        .collect();
    assert_eq!(
        changed.len(),
        2,
        "exactly the two drifted files should change, got {changed:#?}"
    );
    assert_layout(&lab, "host1");
}

#[test]
fn check_mode_on_fresh_hosts_changes_nothing_and_reports_changes() {
    let lab = Lab::new().hosts(1).local(true).build();
    let out = lab.csdeploy(&["push", "--check", "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    for h in ["host1", "local"] {
        let hj = host(&j, h);
        assert_eq!(hj["status"], "changed", "{h}: {hj:#}");
        assert!(num(hj, "changed") > 0, "{h}: {hj:#}");
        assert!(statuses(hj).iter().any(|s| s == "changed"), "{h}: {hj:#}");
        assert_empty_dir(&lab.home(h));
    }
}

#[test]
fn json_report_has_the_contract_shape() {
    let lab = Lab::new().hosts(1).build();
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    assert_eq!(j["command"], "push");
    let hosts = j["hosts"].as_array().expect("hosts array");
    assert_eq!(hosts.len(), 1, "{j:#}");
    let h = &hosts[0];
    assert_eq!(h["host"], "host1");
    for k in [
        "ok",
        "changed",
        "failed",
        "skipped",
        "remote_commands",
        "duration_ms",
    ] {
        assert!(
            h[k].is_u64(),
            "host.{k} should be an unsigned integer: {h:#}"
        );
    }
    assert!(
        h.get("error").is_some(),
        "host.error should be present (null when fine): {h:#}"
    );
    assert!(h["error"].is_null(), "{h:#}");
    let ts = tasks(h);
    assert!(!ts.is_empty());
    let n = |s: &str| ts.iter().filter(|t| t["status"] == s).count() as u64;
    assert_eq!(num(h, "ok"), n("ok"), "{h:#}");
    assert_eq!(num(h, "changed"), n("changed"), "{h:#}");
    assert_eq!(num(h, "failed"), n("failed"), "{h:#}");
    assert_eq!(num(h, "skipped"), n("skipped"), "{h:#}");
    for t in ts {
        for k in ["name", "module", "status", "path", "backup", "diff", "msg"] {
            assert!(t.get(k).is_some(), "task lacks `{k}`: {t:#}");
        }
        assert!(
            ["ok", "changed", "failed", "skipped"].contains(&t["status"].as_str().unwrap_or("")),
            "{t:#}"
        );
        assert!(
            t["diff"].is_null(),
            "diff must be null without --diff: {t:#}"
        );
    }
    let modules: Vec<_> = ts
        .iter()
        .map(|t| t["module"].as_str().unwrap_or(""))
        .collect();
    assert!(
        modules.contains(&"file") && modules.contains(&"copy"),
        "{modules:?}"
    );
    let want = lab
        .claude_home("host1")
        .join("bin/claude-session")
        .display()
        .to_string();
    assert!(
        ts.iter().any(|t| t["path"]
            .as_str()
            .is_some_and(|p| p == want || p.ends_with("/.claude/bin/claude-session"))),
        "a task should report path {want}: {h:#}"
    );
    let s = &j["summary"];
    for k in [
        "hosts",
        "ok",
        "changed",
        "failed",
        "unreachable",
        "exit_code",
    ] {
        assert!(
            s[k].is_u64(),
            "summary.{k} should be an unsigned integer: {s:#}"
        );
    }
    assert_eq!(s["hosts"], 1);
    assert_eq!(s["failed"], 0);
    assert_eq!(s["unreachable"], 0);
    assert_eq!(s["exit_code"], 0);
}

// ---------------------------------------------------------------- the launcher on PATH

/// The link push puts on PATH, and what it must point to, on host `name`.
fn path_link(lab: &Lab, name: &str) -> (PathBuf, PathBuf) {
    (
        lab.home(name).join(".local/bin/claude-session"),
        lab.claude_home(name).join("bin/claude-session"),
    )
}

/// The defaults every host without inventory overrides gets in session.conf.
const DEFAULT_INHERIT: [&str; 2] = [
    "inherit_copy=",
    "inherit_link=settings.json CLAUDE.md agents commands skills output-styles keybindings.json",
];

#[test]
fn push_links_the_launcher_onto_path_and_a_rerun_leaves_it_in_one_command() {
    let lab = Lab::new().hosts(1).local(true).build();
    // A user's own ~/.local/bin keeps its mode: the task sets none.
    std::fs::create_dir_all(lab.home("local").join(".local/bin")).unwrap();
    std::fs::set_permissions(
        lab.home("local").join(".local/bin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    for h in ["host1", "local"] {
        let hj = host(&j, h);
        let (link, launcher) = path_link(&lab, h);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            launcher,
            "{h}: the absolute launcher path"
        );
        let t = task(hj, "Launcher on PATH");
        assert_eq!(t["status"], "changed", "{t:#}");
        assert_eq!(t["module"], "file", "{t:#}");
        assert_eq!(
            t["msg"].as_str().unwrap(),
            format!("linked to {}", launcher.display()),
            "{t:#}"
        );
        let conf = session_conf(&lab, h);
        for line in DEFAULT_INHERIT {
            assert!(
                conf.lines().any(|l| l == line),
                "{h}: lacks {line}:\n{conf}"
            );
        }
        // Through the link, the launcher finds its helpers beside its real path.
        let listed = std::process::Command::new(&link)
            .args(["list", "--json"])
            .env("HOME", lab.home(h))
            .env(
                "CLAUDE_SESSION_CONF",
                launcher.with_file_name("session.conf"),
            )
            .output()
            .unwrap();
        assert!(listed.status.success(), "{h}: {listed:?}");
        assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]", "{h}");
    }
    assert_eq!(
        task(host(&j, "host1"), "User bin directory")["status"],
        "changed"
    );
    assert_eq!(
        task(host(&j, "local"), "User bin directory")["status"],
        "ok"
    );
    assert_eq!(mode_of(&lab.home("local").join(".local/bin")), 0o700);

    let again = lab.csdeploy(&["push", "--format", "json"]);
    again.assert_exit(0);
    let j = again.json();
    for h in ["host1", "local"] {
        let hj = host(&j, h);
        assert_eq!(num(hj, "changed"), 0, "{h}: {hj:#}");
        assert_eq!(task(hj, "Launcher on PATH")["status"], "ok", "{hj:#}");
    }
    assert_eq!(num(host(&j, "host1"), "remote_commands"), 1, "{j:#}");
    assert_eq!(mode_of(&lab.home("local").join(".local/bin")), 0o700);
}

#[test]
fn a_users_bin_that_is_a_symlink_to_a_directory_serves_as_it_is() {
    let lab = Lab::new().hosts(1).local(true).build();
    for h in ["host1", "local"] {
        let home = lab.home(h);
        std::fs::create_dir_all(home.join("dotfiles/bin")).unwrap();
        std::fs::create_dir_all(home.join(".local")).unwrap();
        std::os::unix::fs::symlink("../dotfiles/bin", home.join(".local/bin")).unwrap();
    }
    for args in [
        &["push", "--format", "json"][..],
        &["push", "--diff", "--format", "json"],
    ] {
        let out = lab.csdeploy(args);
        out.assert_exit(0);
        let j = out.json();
        for h in ["host1", "local"] {
            let hj = host(&j, h);
            assert_eq!(task(hj, "User bin directory")["status"], "ok", "{hj:#}");
            let (_, launcher) = path_link(&lab, h);
            let home = lab.home(h);
            assert_eq!(
                std::fs::read_link(home.join(".local/bin")).unwrap(),
                Path::new("../dotfiles/bin"),
                "the user's link is kept"
            );
            assert_eq!(
                std::fs::read_link(home.join("dotfiles/bin/claude-session")).unwrap(),
                launcher
            );
        }
    }
    let again = lab.csdeploy(&["push", "--format", "json"]);
    again.assert_exit(0);
    assert_eq!(again.json()["summary"]["changed"], 0, "{again}");
}

#[test]
fn a_file_of_the_users_on_path_is_never_replaced_and_fails_only_the_link() {
    let lab = Lab::new().hosts(2).local(true).build();
    let mine = b"#!/bin/sh\necho my own claude-session\n";
    let (file, _) = path_link(&lab, "host1");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, mine).unwrap();
    let (foreign, _) = path_link(&lab, "host2");
    std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/usr/bin/true", &foreign).unwrap();
    let (dir, _) = path_link(&lab, "local");
    std::fs::create_dir_all(dir.join("keep")).unwrap();

    for args in [
        &["push", "--check", "--format", "json"][..],
        &["push", "--check", "--diff", "--format", "json"],
        &["push", "--format", "json"],
        &["push", "--diff", "--format", "json"],
    ] {
        let out = lab.csdeploy(args);
        out.assert_exit(1);
        let j = out.json();
        for (h, what) in [
            ("host1", "is a regular file"),
            ("host2", "is a symlink to /usr/bin/true"),
            ("local", "is a directory"),
        ] {
            let hj = host(&j, h);
            assert_eq!(hj["status"], "failed", "{args:?} {h}: {hj:#}");
            let t = task(hj, "Launcher on PATH");
            assert_eq!(t["status"], "failed", "{args:?} {h}: {t:#}");
            let (path, launcher) = path_link(&lab, h);
            let msg = t["msg"].as_str().unwrap();
            assert!(
                msg.starts_with(&format!(
                    "{} {what}, not a link to {}",
                    path.display(),
                    launcher.display()
                )) && msg.contains("csdeploy never replaces a file it did not create")
                    && msg.contains("remove it"),
                "{args:?} {h}: {msg}"
            );
            // Every other task ran (or, in check mode, would).
            assert_eq!(num(hj, "failed"), 1, "{args:?} {h}: {hj:#}");
        }
        assert_eq!(std::fs::read(&file).unwrap(), mine, "{args:?}");
        assert_eq!(
            std::fs::read_link(&foreign).unwrap(),
            Path::new("/usr/bin/true"),
            "{args:?}"
        );
        assert_eq!(tree(&dir), ["keep"], "{args:?}");
    }
    // The real push installed the rest; the failed link stopped nothing before it.
    for h in ["host1", "host2", "local"] {
        assert_layout(&lab, h);
    }
}

#[test]
fn check_mode_reports_the_link_it_would_create_without_creating_it() {
    let lab = Lab::new().hosts(1).local(true).build();
    for args in [
        &["push", "--check", "--format", "json"][..],
        &["push", "--check", "--diff", "--format", "json"],
    ] {
        let out = lab.csdeploy(args);
        out.assert_exit(0);
        let j = out.json();
        for h in ["host1", "local"] {
            let hj = host(&j, h);
            let (link, launcher) = path_link(&lab, h);
            let t = task(hj, "Launcher on PATH");
            assert_eq!(t["status"], "changed", "{args:?}: {t:#}");
            assert_eq!(
                t["msg"].as_str().unwrap(),
                format!("linked to {}", launcher.display()),
                "{t:#}"
            );
            if args.contains(&"--diff") {
                let diff = t["diff"].as_str().unwrap_or_default();
                assert!(
                    diff.contains(&format!("+symlink -> {}", launcher.display())),
                    "{t:#}"
                );
            } else {
                assert!(t["diff"].is_null(), "{t:#}");
            }
            assert!(std::fs::symlink_metadata(&link).is_err(), "{h}: {args:?}");
            assert_empty_dir(&lab.home(h));
        }
    }
    let out = lab.csdeploy(&["push", "--check"]);
    out.assert_exit(0);
    assert!(
        out.stdout.contains("linked to ") && out.stdout.contains("Launcher on PATH"),
        "the text report says what would change:\n{out}"
    );
}

#[test]
fn host_and_limit_select_hosts() {
    let lab = Lab::new().hosts(2).local(true).build();
    let out = lab.csdeploy(&["push", "--host", "host2", "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    assert_eq!(j["hosts"].as_array().unwrap().len(), 1, "{j:#}");
    assert_eq!(host(&j, "host2")["status"], "changed");
    assert_layout(&lab, "host2");
    assert_empty_dir(&lab.home("host1"));
    assert_empty_dir(&lab.home("local"));

    let out = lab.csdeploy(&["push", "--limit", "host*:!host2", "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    let names: Vec<_> = j["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["host1"], "{j:#}");
    assert_layout(&lab, "host1");
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn unreachable_host_is_reported_while_the_other_succeeds_exit_3() {
    let lab = Lab::new().hosts(1).unreachable("dead").build();
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(3);
    let j = out.json();
    let dead = host(&j, "dead");
    assert_eq!(dead["status"], "unreachable", "{dead:#}");
    assert!(
        dead["error"].as_str().is_some_and(|e| !e.trim().is_empty()),
        "unreachable host needs an error text: {dead:#}"
    );
    assert_eq!(host(&j, "host1")["status"], "changed", "{j:#}");
    assert_layout(&lab, "host1");
    assert_eq!(j["summary"]["unreachable"], 1, "{j:#}");
    assert_eq!(j["summary"]["exit_code"], 3, "{j:#}");
    let run_id = j["summary"]["run_id"].as_str().unwrap_or_default();
    assert!(
        run_id.len() == 36 && run_id.split('-').map(str::len).eq([8, 4, 4, 4, 12]),
        "summary.run_id should be a UUID: {j:#}"
    );
}

#[test]
fn failed_task_wins_over_unreachable_exit_1() {
    let lab = Lab::new().hosts(1).unreachable("dead").build();
    let pb = write_playbook(
        &lab,
        "fail.yml",
        "- name: failing\n  hosts: all\n  tasks:\n    - name: always fails\n      command:\n        cmd: \"false\"\n",
    );
    let out = lab.csdeploy(&["run", pb.to_str().unwrap(), "--format", "json"]);
    out.assert_exit(1);
    let j = out.json();
    assert_eq!(host(&j, "host1")["status"], "failed", "{j:#}");
    assert_eq!(host(&j, "dead")["status"], "unreachable", "{j:#}");
    assert_eq!(j["summary"]["exit_code"], 1, "{j:#}");
}

#[test]
fn a_program_that_cannot_be_found_fails_its_task_with_the_reason() {
    let lab = Lab::new().hosts(1).local(true).build();
    let pb = write_playbook(
        &lab,
        "missing.yml",
        "- name: missing\n  hosts: all\n  tasks:\n    - name: run it\n      command:\n        argv: [csdeploy-no-such-program, x]\n",
    );
    let out = lab.csdeploy(&["run", pb.to_str().unwrap(), "--format", "json"]);
    out.assert_exit(1);
    let j = out.json();
    for h in ["host1", "local"] {
        let t = task(host(&j, h), "run it");
        assert_eq!(t["status"], "failed", "{t:#}");
        assert!(
            t["msg"]
                .as_str()
                .is_some_and(|m| m.contains("cannot run csdeploy-no-such-program")),
            "{t:#}"
        );
    }
}

#[test]
fn a_missing_key_file_is_named_not_reported_as_a_refused_key() {
    let lab = Lab::new()
        .hosts(2)
        .host_var(
            "host1",
            "ansible_ssh_private_key_file",
            "/nonexistent/id_ed25519",
        )
        .build();
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(3);
    let j = out.json();
    let error = host(&j, "host1")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("/nonexistent/id_ed25519")
            && error.contains("cannot be read on this machine"),
        "{out}"
    );
    assert!(!error.contains("Permission denied (publickey)"), "{out}");
    assert_eq!(host(&j, "host2")["status"], "changed", "{out}");
}

#[test]
fn host_processes_show_a_short_name_not_the_agents_source() {
    let lab = Lab::new().hosts(1).local(true).build();
    let args_log = lab.root.join("python-args");
    let python = lab.write_file(
        "python-recording",
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}\nexec python3 \"$@\"\n",
            args_log.display()
        ),
    );
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut inv = String::from("all:\n  hosts:\n");
    for h in &lab.hosts {
        inv.push_str(&lab.host_entry_yaml(h, 4));
        inv.push_str(&format!(
            "      ansible_python_interpreter: {}\n",
            python.display()
        ));
    }
    lab.write_inventory(&inv);
    lab.csdeploy(&["push", "--diff"]).assert_exit(0);
    let log = std::fs::read_to_string(&args_log).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "both hosts ran python: {log}");
    for line in lines {
        assert!(
            line.len() < 300,
            "a whole source on the command line: {} bytes",
            line.len()
        );
        assert!(line.contains("-c 'csdeploy-agent';"), "{line}");
    }
}

// ---------------------------------------------------------------- host keys

#[test]
fn strict_host_key_checking_rejects_unknown_key_with_a_hint() {
    let lab = Lab::new().hosts(1).known_hosts(false).build();
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(3);
    let j = out.json();
    let hj = host(&j, "host1");
    assert_eq!(hj["status"], "unreachable", "{hj:#}");
    let text = format!("{} {}", hj["error"].as_str().unwrap_or(""), out.stderr);
    assert!(
        text.contains("ssh-keyscan") || text.contains("--host-key-checking accept-new"),
        "the error should say how to add the key (ssh-keyscan / --host-key-checking accept-new)\n{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&lab.known_hosts).unwrap(),
        "",
        "strict mode must not learn keys"
    );
    // The default (text) output must carry the hint as well.
    let out = lab.csdeploy(&["push"]);
    out.assert_exit(3);
    let text = out.all_output();
    assert!(
        text.contains("ssh-keyscan") || text.contains("--host-key-checking accept-new"),
        "the text output should say how to add the key (ssh-keyscan / --host-key-checking accept-new)\n{out}"
    );
    assert_empty_dir(&lab.home("host1"));
}

#[test]
fn accept_new_learns_unknown_key_then_strict_succeeds() {
    let lab = Lab::new().hosts(1).known_hosts(false).build();
    let out = lab.csdeploy(&[
        "push",
        "--host-key-checking",
        "accept-new",
        "--format",
        "json",
    ]);
    out.assert_exit(0);
    assert_eq!(host(&out.json(), "host1")["status"], "changed");
    assert_layout(&lab, "host1");
    let kh = std::fs::read_to_string(&lab.known_hosts).unwrap();
    assert!(
        kh.contains(&format!("[127.0.0.1]:{}", lab.port("host1"))),
        "accept-new should record the key in known_hosts: {kh:?}"
    );
    lab.csdeploy(&["push", "--format", "json"]).assert_exit(0);
}

#[test]
fn accept_new_still_rejects_a_changed_host_key() {
    let lab = Lab::new().hosts(1).build();
    lab.spoof_known_hosts();
    let out = lab.csdeploy(&[
        "push",
        "--host-key-checking",
        "accept-new",
        "--format",
        "json",
    ]);
    out.assert_exit(3);
    let json = out.json();
    assert_eq!(host(&json, "host1")["status"], "unreachable");
    let error = host(&json, "host1")["error"].as_str().unwrap();
    assert!(error.contains("has CHANGED"), "{error}");
    assert!(
        error.contains("ssh-keygen -R") && !error.contains("ssh-keyscan"),
        "a changed key gets no how-to-trust-it hint: {error}"
    );
    assert_empty_dir(&lab.home("host1"));
}

// ---------------------------------------------------------------- modules via `run`

/// One play writing `content` to host var `note` (and, with `fresh`, to
/// `<note>.fresh`, a file that does not exist beforehand).
fn copy_playbook(content: &str, backup: bool, fresh: bool) -> String {
    let mut pb = format!(
        "- name: notes\n  hosts: all\n  tasks:\n    - name: write note\n      copy:\n        content: {c}\n        dest: \"{{{{ note }}}}\"\n        mode: \"0644\"\n        backup: {backup}\n",
        c = yq(content)
    );
    if fresh {
        pb.push_str(&format!(
            "    - name: fresh note\n      copy:\n        content: {c}\n        dest: \"{{{{ note }}}}.fresh\"\n        backup: {backup}\n",
            c = yq(content)
        ));
    }
    pb
}

/// host1 + local, each with host var `note: <HOME>/note.txt` holding `seed`.
fn note_lab(seed: &str) -> Lab {
    let lab = Lab::new().hosts(1).local(true).build();
    let mut inv = String::from("all:\n  hosts:\n");
    for h in &lab.hosts {
        let note = h.home.join("note.txt");
        std::fs::write(&note, seed).unwrap();
        std::fs::set_permissions(&note, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        inv.push_str(&lab.host_entry_yaml(h, 4));
        inv.push_str(&format!(
            "      note: {}\n",
            yq(&note.display().to_string())
        ));
    }
    lab.write_inventory(&inv);
    lab
}

#[test]
fn diff_shows_a_unified_diff_for_changed_content() {
    let lab = note_lab("alpha\nbeta\n");
    let pb = lab.write_file("note.yml", &copy_playbook("alpha\ngamma\n", false, false));
    let out = lab.csdeploy(&["run", pb.to_str().unwrap(), "--diff", "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    for h in ["host1", "local"] {
        let t = task(host(&j, h), "write note");
        assert_eq!(t["status"], "changed", "{t:#}");
        let Some(d) = t["diff"].as_str() else {
            panic!("{h}: diff should be a string: {t:#}")
        };
        for needle in ["---", "+++", "@@", "-beta", "+gamma"] {
            assert!(d.contains(needle), "{h}: diff lacks {needle:?}:\n{d}");
        }
        assert!(
            !d.contains("-alpha"),
            "{h}: unchanged line shown as removed:\n{d}"
        );
        assert_eq!(
            std::fs::read_to_string(lab.home(h).join("note.txt")).unwrap(),
            "alpha\ngamma\n"
        );
    }

    // Text output of a --check --diff run shows the diff too, and changes nothing.
    lab.write_file("note.yml", &copy_playbook("alpha\ndelta\n", false, false));
    let out = lab.csdeploy(&["run", pb.to_str().unwrap(), "--check", "--diff"]);
    out.assert_exit(0);
    for needle in ["---", "+++", "@@", "-gamma", "+delta"] {
        assert!(
            out.stdout.contains(needle),
            "text --diff output lacks {needle:?}\n{out}"
        );
    }
    for h in ["host1", "local"] {
        assert_eq!(
            std::fs::read_to_string(lab.home(h).join("note.txt")).unwrap(),
            "alpha\ngamma\n",
            "{h}: --check changed the file"
        );
    }
}

#[test]
fn backup_keeps_the_replaced_file_and_reports_its_path() {
    let lab = note_lab("old\n");
    let pb = lab.write_file("note.yml", &copy_playbook("new\n", true, true));
    let out = lab.csdeploy(&["run", pb.to_str().unwrap(), "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    for h in ["host1", "local"] {
        let dest = lab.home(h).join("note.txt");
        let t = task(host(&j, h), "write note");
        assert_eq!(t["status"], "changed", "{t:#}");
        let Some(b) = t["backup"].as_str() else {
            panic!("{h}: backup path expected: {t:#}")
        };
        let prefix = format!("{}.", dest.display());
        assert!(
            b.starts_with(&prefix) && b.ends_with(".bak"),
            "{h}: backup {b:?} is not <dest>.<timestamp>.bak"
        );
        let stamp = &b[prefix.len()..b.len() - 4];
        assert!(
            !stamp.is_empty() && stamp.chars().any(|c| c.is_ascii_digit()) && !stamp.contains('/'),
            "{h}: backup {b:?} has no timestamp"
        );
        assert_eq!(
            std::fs::read_to_string(b).unwrap(),
            "old\n",
            "{h}: backup content"
        );
        assert_eq!(
            std::fs::read_to_string(&dest).unwrap(),
            "new\n",
            "{h}: dest content"
        );
        let fresh = task(host(&j, h), "fresh note");
        assert_eq!(fresh["status"], "changed", "{fresh:#}");
        assert!(
            fresh["backup"].is_null(),
            "{h}: nothing replaced, no backup: {fresh:#}"
        );
    }

    // Unchanged content: ok, no second backup.
    let out = lab.csdeploy(&["run", pb.to_str().unwrap(), "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    for h in ["host1", "local"] {
        let t = task(host(&j, h), "write note");
        assert_eq!(t["status"], "ok", "{t:#}");
        assert!(t["backup"].is_null(), "{t:#}");
        let baks: Vec<_> = tree(&lab.home(h))
            .into_iter()
            .filter(|p| p.ends_with(".bak"))
            .collect();
        assert_eq!(baks.len(), 1, "{h}: exactly one backup expected: {baks:?}");
    }
}

#[test]
fn command_with_creates_runs_once_then_is_ok() {
    let lab = Lab::new().hosts(1).local(true).build();
    let mut inv = String::from("all:\n  hosts:\n");
    for h in &lab.hosts {
        inv.push_str(&lab.host_entry_yaml(h, 4));
        inv.push_str(&format!(
            "      dir: {}\n",
            yq(&h.home.display().to_string())
        ));
    }
    lab.write_inventory(&inv);
    let script = r#"echo ran >> "$DIR/count"; touch "$DIR/made""#;
    let pb = lab.write_file(
        "creates.yml",
        &format!(
            "- name: once\n  hosts: all\n  tasks:\n    - name: make it\n      command:\n        cmd: {}\n        env: {{DIR: \"{{{{ dir }}}}\"}}\n        creates: \"{{{{ dir }}}}/made\"\n",
            yq(script)
        ),
    );
    let out = lab.csdeploy(&["run", pb.to_str().unwrap(), "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    for h in ["host1", "local"] {
        assert_eq!(task(host(&j, h), "make it")["status"], "changed", "{j:#}");
        assert_eq!(
            std::fs::read_to_string(lab.home(h).join("count")).unwrap(),
            "ran\n",
            "{h}"
        );
    }
    let out = lab.csdeploy(&["run", pb.to_str().unwrap(), "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    for h in ["host1", "local"] {
        assert_eq!(task(host(&j, h), "make it")["status"], "ok", "{j:#}");
        assert_eq!(
            std::fs::read_to_string(lab.home(h).join("count")).unwrap(),
            "ran\n",
            "{h}: ran twice"
        );
    }
}

#[test]
fn check_mode_command_would_run_but_does_not() {
    let lab = Lab::new().hosts(1).local(true).build();
    let marker = lab.root.join("ran");
    let pb = lab.write_file(
        "cmd.yml",
        &format!(
            "- name: cmd\n  hosts: all\n  tasks:\n    - name: touch it\n      command:\n        cmd: {}\n",
            yq(&format!("touch {}", marker.display()))
        ),
    );
    let out = lab.csdeploy(&["run", pb.to_str().unwrap(), "--check", "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    for h in ["host1", "local"] {
        let t = task(host(&j, h), "touch it");
        assert_eq!(t["status"], "changed", "{t:#}");
        assert!(
            t["msg"].as_str().is_some_and(|m| m.contains("would run")),
            "{t:#}"
        );
    }
    assert!(!marker.exists(), "--check ran the command");
}

#[test]
fn two_ssh_hosts_run_in_parallel() {
    // Each host announces itself, then waits (up to ~5 s) for the other one:
    // run one after the other, the first host times out and fails.
    let lab = Lab::new().hosts(2).servers(2).build();
    let rv = lab.root.join("rendezvous");
    std::fs::create_dir_all(&rv).unwrap();
    let mut inv = String::from("all:\n  hosts:\n");
    for h in &lab.hosts {
        inv.push_str(&lab.host_entry_yaml(h, 4));
        inv.push_str(&format!("      tag: {}\n", h.name));
    }
    lab.write_inventory(&inv);
    let script = r#"touch "$1/started-$2"; i=0; while [ $i -lt 100 ]; do [ -e "$1/started-host1" ] && [ -e "$1/started-host2" ] && exit 0; i=$((i+1)); sleep 0.05; done; exit 1"#;
    let pb = lab.write_file(
        "par.yml",
        &format!(
            "- name: rendezvous\n  hosts: all\n  vars:\n    rv: {}\n  tasks:\n    - name: meet\n      command:\n        argv: [sh, -c, {}, sh, \"{{{{ rv }}}}\", \"{{{{ tag }}}}\"]\n",
            yq(&rv.display().to_string()),
            yq(script)
        ),
    );
    let out = lab.csdeploy(&["run", pb.to_str().unwrap(), "-f", "2", "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    for h in ["host1", "host2"] {
        assert_eq!(
            host(&j, h)["status"],
            "changed",
            "{h} did not meet the other host: {j:#}"
        );
    }
}

// ---------------------------------------------------------------- injection

/// Removes marker files on drop (if a test failed because one was created).
struct Markers(Vec<PathBuf>);
impl Drop for Markers {
    fn drop(&mut self) {
        for m in &self.0 {
            let _ = std::fs::remove_file(m);
        }
    }
}

#[test]
fn injection_attempts_are_inert_and_land_as_literal_data() {
    let lab = Lab::new().hosts(1).local(true).build();
    let tag = unique("pwned");
    let m = |v: &str| PathBuf::from(format!("/tmp/{tag}-{v}"));
    let markers = Markers(
        ["dest", "content", "dir", "var1", "var2", "var3"]
            .iter()
            .map(|v| m(v))
            .collect(),
    );
    let mk = |v: &str| m(v).display().to_string();

    let evil = format!(
        "e'f\"g;$(touch {}) `touch {}` | touch {} &\nnext line",
        mk("var1"),
        mk("var2"),
        mk("var3")
    );
    let content = format!(
        "c'o\"n;$(touch {})`touch {}`\n",
        mk("content"),
        mk("content")
    );
    let dest_tail = format!("a'b;$(touch {})`touch {}`", mk("dest"), mk("dest"));
    let dir_tail = format!("d $(touch {});'\"`touch {}`", mk("dir"), mk("dir"));

    let mut inv = String::from("all:\n  hosts:\n");
    for h in &lab.hosts {
        inv.push_str(&lab.host_entry_yaml(h, 4));
        inv.push_str(&format!(
            "      home: {}\n",
            yq(&h.home.display().to_string())
        ));
    }
    lab.write_inventory(&inv);

    let pb = lab.write_file(
        "inject.yml",
        &format!(
            r#"- name: injection
  hosts: all
  vars:
    evil: {evil}
  tasks:
    - name: literal dest
      copy:
        content: {content}
        dest: {dest}
        mode: "0644"
    - name: var in dest and content
      copy:
        content: "{{{{ evil }}}}"
        dest: "{{{{ home }}}}/v-{{{{ evil }}}}"
    - name: literal directory
      file:
        path: {dir}
        state: directory
        mode: "0755"
    - name: var as command argument
      command:
        argv: [touch, "{{{{ home }}}}/c-{{{{ evil }}}}"]
    - name: var echoed
      command:
        argv: [echo, "{{{{ evil }}}}"]
    - name: var in the environment of shell text
      command:
        cmd: 'echo "$EVIL" > /dev/null'
        env: {{EVIL: "{{{{ evil }}}}"}}
"#,
            evil = yq(&evil),
            content = yq(&content),
            dest = yq(&format!("{{{{ home }}}}/{dest_tail}")),
            dir = yq(&format!("{{{{ home }}}}/{dir_tail}")),
        ),
    );

    // The markers hold '/', so the literal paths have parent directories;
    // create them so the tasks can land their data (mkdir -p semantics are not
    // part of the contract).
    for h in &lab.hosts {
        for tail in [
            dest_tail.clone(),
            format!("v-{evil}"),
            format!("c-{evil}"),
            dir_tail.clone(),
        ] {
            std::fs::create_dir_all(h.home.join(&tail).parent().unwrap()).unwrap();
        }
    }

    let out = lab.csdeploy(&["run", pb.to_str().unwrap(), "--format", "json"]);
    let fired: Vec<_> = markers.0.iter().filter(|p| p.exists()).collect();
    assert!(
        fired.is_empty(),
        "injection executed, markers created: {fired:?}\n{out}"
    );
    out.assert_exit(0);
    for h in &lab.hosts {
        let home = &h.home;
        let n = &h.name;
        assert_eq!(
            std::fs::read_to_string(home.join(&dest_tail))
                .ok()
                .as_deref(),
            Some(content.as_str()),
            "{n}: literal dest/content"
        );
        assert_eq!(
            std::fs::read_to_string(home.join(format!("v-{evil}")))
                .ok()
                .as_deref(),
            Some(evil.as_str()),
            "{n}: var dest/content"
        );
        assert!(
            home.join(&dir_tail).is_dir(),
            "{n}: literal directory missing: {:?}",
            tree(home)
        );
        assert!(
            home.join(format!("c-{evil}")).is_file(),
            "{n}: command arg not literal: {:?}",
            tree(home)
        );
    }
}

#[test]
fn command_var_is_passed_as_one_literal_argument() {
    let lab = Lab::new().hosts(1).local(true).build();
    let tag = unique("pwned");
    let marker = PathBuf::from(format!("/tmp/{tag}"));
    let _markers = Markers(vec![marker.clone()]);
    let evil = format!(
        "it's \"quoted\" `touch {m}` $(touch {m}); touch {m}\nsecond line \\ end",
        m = marker.display()
    );
    let mut inv = String::from("all:\n  hosts:\n");
    for h in &lab.hosts {
        inv.push_str(&lab.host_entry_yaml(h, 4));
        inv.push_str(&format!(
            "      out: {}\n",
            yq(&h.home.join("echoed").display().to_string())
        ));
    }
    lab.write_inventory(&inv);
    let script = r#"printf %s "$1" > "$2""#;
    let pb = lab.write_file(
        "arg.yml",
        &format!(
            "- name: arg\n  hosts: all\n  vars:\n    evil: {}\n  tasks:\n    - name: print it\n      command:\n        argv: [sh, -c, {}, sh, \"{{{{ evil }}}}\", \"{{{{ out }}}}\"]\n    - name: print it from env\n      command:\n        cmd: 'printf %s \"$EVIL\" > \"$OUT.env\"'\n        env: {{EVIL: \"{{{{ evil }}}}\", OUT: \"{{{{ out }}}}\"}}\n",
            yq(&evil),
            yq(script)
        ),
    );
    let out = lab.csdeploy(&["run", pb.to_str().unwrap(), "--format", "json"]);
    assert!(!marker.exists(), "injection executed\n{out}");
    out.assert_exit(0);
    for h in &lab.hosts {
        for file in ["echoed", "echoed.env"] {
            assert_eq!(
                std::fs::read_to_string(h.home.join(file)).unwrap(),
                evil,
                "{}: {file}",
                h.name
            );
        }
    }
}

#[test]
fn command_value_starting_with_tilde_is_the_hosts_home() {
    let lab = Lab::new().hosts(1).local(true).build();
    let pb = lab.write_file(
        "tilde.yml",
        "- name: tilde\n  hosts: all\n  vars:\n    made: \"~/made by it\"\n  tasks:\n    - name: mkdir\n      command:\n        argv: [mkdir, -p, \"{{ made }}/sub\", \"{{ claude_home }}/x\"]\n",
    );
    let out = lab.csdeploy(&["run", pb.to_str().unwrap()]);
    out.assert_exit(0);
    for h in &lab.hosts {
        assert!(h.home.join("made by it/sub").is_dir(), "{}\n{out}", h.name);
        assert!(h.home.join(".claude/x").is_dir(), "{}\n{out}", h.name);
    }
}

#[test]
fn command_placeholder_in_shell_text_is_refused_and_nothing_runs() {
    let lab = local_lab();
    let tag = unique("pwned");
    let marker = PathBuf::from(format!("/tmp/{tag}"));
    let _markers = Markers(vec![marker.clone()]);
    // Each of these ran the value before: where a word stands in shell text
    // cannot tell what the command does with it.
    for cmd in [
        "mkdir -p \"{{ dir }}\"",
        "eval {{ dir }}",
        "sh -c {{ dir }}",
        "mkdir -p {{ dir }}",
    ] {
        let pb = lab.write_file(
            "quoted.yml",
            &format!(
                "- name: quoted\n  hosts: all\n  vars:\n    dir: \"my dir $(touch {m})\"\n  tasks:\n    - name: first\n      command:\n        cmd: touch ~/ran-first\n    - name: quoted\n      command:\n        cmd: {}\n",
                yq(cmd),
                m = marker.display()
            ),
        );
        let out = lab.csdeploy(&["run", pb.to_str().unwrap()]);
        assert_invalid_at(&out, &pb, 11, "cmd");
        assert!(
            out.stderr.contains("argv:") && out.stderr.contains("env:"),
            "{out}"
        );
        assert!(!marker.exists(), "injection executed\n{out}");
        assert_empty_dir(&lab.home("local"));
    }
}

#[test]
fn null_variable_is_refused_not_rendered_empty() {
    let lab = local_lab();
    let inv = local_inventory_with(&lab, "      claude_home: ~\n");
    lab.write_inventory(&inv);
    let out = lab.csdeploy(&["push", "--check"]);
    out.assert_exit(2);
    assert!(out.stderr.contains("`claude_home` is null"), "{out}");
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn odd_destinations_fail_their_task_without_blocking_or_leaving_files() {
    let lab = local_lab();
    let home = lab.home("local");
    let fifo = home.join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for diff in [false, true] {
        let pb = lab.write_file(
            "fifo.yml",
            "- name: fifo\n  hosts: all\n  tasks:\n    - name: skip\n      command:\n        cmd: touch ~/should-not-run\n        creates: ~/fifo\n    - name: write\n      copy:\n        content: hi\n        dest: ~/fifo\n",
        );
        let mut args = vec!["run", pb.to_str().unwrap(), "--format", "json"];
        if diff {
            args.push("--diff");
        }
        let out = lab.csdeploy(&args);
        out.assert_exit(1);
        let json = out.json();
        let host = host(&json, "local");
        let skip = task(host, "skip");
        assert!(
            skip["msg"].as_str().unwrap().starts_with("skipped, since"),
            "{out}"
        );
        assert_eq!(task(host, "write")["status"], "failed", "{out}");
        assert!(
            task(host, "write")["msg"]
                .as_str()
                .unwrap()
                .contains("not a regular file"),
            "{out}"
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(&home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["fifo"], "nothing else was written");
}

#[test]
fn relative_paths_start_in_the_home_directory_over_local_too() {
    let lab = local_lab();
    let pb = lab.write_file(
        "rel.yml",
        "- name: rel\n  hosts: all\n  tasks:\n    - name: dir\n      file: {path: rel, state: directory}\n    - name: file\n      copy: {content: hi, dest: rel/f}\n",
    );
    let out = lab.csdeploy(&["run", pb.to_str().unwrap()]);
    out.assert_exit(0);
    assert_eq!(
        std::fs::read_to_string(lab.home("local").join("rel/f")).unwrap(),
        "hi"
    );
    assert!(
        !lab.root.join("rel").exists(),
        "not in csdeploy's working directory"
    );
    let again = lab.csdeploy(&["run", pb.to_str().unwrap(), "--format", "json"]);
    again.assert_exit(0);
    assert_eq!(num(&again.json()["summary"], "changed"), 0, "{again}");
}

#[test]
fn a_directory_removed_by_a_later_task_does_not_fail_the_host() {
    let lab = local_lab();
    let pb = lab.write_file(
        "stage.yml",
        "- name: stage\n  hosts: all\n  tasks:\n    - name: make\n      file: {path: ~/stage, state: directory}\n    - name: fill\n      copy: {content: hi, dest: ~/stage/f}\n    - name: use\n      command: {cmd: cat ~/stage/f}\n    - name: drop\n      file: {path: ~/stage, state: absent}\n",
    );
    let out = lab.csdeploy(&["run", pb.to_str().unwrap(), "--format", "json"]);
    out.assert_exit(0);
    let json = out.json();
    assert_eq!(num(host(&json, "local"), "changed"), 4, "{out}");
    assert!(!lab.home("local").join("stage").exists());
}

/// An inventory where `hanging`'s apply step never ends: its "python"
/// writes its pid to the returned file and sleeps. The others are as the lab
/// made them.
fn lab_with_a_hanging_host(lab: &Lab, hanging: &str) -> PathBuf {
    let started = lab.root.join("hanging-step-started");
    let sleeper = lab.write_file(
        "hang-python",
        &format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 60\n",
            started.display()
        ),
    );
    std::fs::set_permissions(
        &sleeper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut inv = String::from("all:\n  hosts:\n");
    for h in &lab.hosts {
        inv.push_str(&lab.host_entry_yaml(h, 4));
        if h.name == hanging {
            inv.push_str(&format!(
                "      ansible_python_interpreter: {}\n",
                sleeper.display()
            ));
        }
    }
    lab.write_inventory(&inv);
    started
}

#[test]
fn a_remote_step_that_never_ends_fails_its_host_at_the_timeout_and_the_others_finish() {
    let lab = Lab::new().hosts(1).local(true).build();
    lab_with_a_hanging_host(&lab, "local");
    let out = lab.csdeploy(&["push", "--timeout", "2", "--format", "json"]);
    out.assert_exit(1);
    let json = out.json();
    let local = host(&json, "local");
    assert_eq!(local["status"], "failed", "{out}");
    assert!(
        local["error"]
            .as_str()
            .unwrap()
            .contains("did not finish within 2 s (--timeout)"),
        "{out}"
    );
    for h in lab.ssh_hosts() {
        assert_eq!(host(&json, &h)["status"], "changed", "{out}");
    }
    assert!(out.elapsed < std::time::Duration::from_secs(60), "{out}");
}

#[test]
fn a_connection_lost_mid_step_makes_the_host_unreachable_with_a_clear_message() {
    let lab = Lab::new().hosts(1).build();
    let started = lab_with_a_hanging_host(&lab, "host1");
    let sshd = lab.servers[0].pid();
    let watched = started.clone();
    let out = lab.csdeploy_meanwhile(&["push", "--format", "json"], &[], move |_| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::read_to_string(&watched).map_or(true, |t| t.trim().is_empty())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The connection's sshd processes die; the listener and the step do not.
        std::process::Command::new("pkill")
            .args(["-KILL", "-P", &sshd.to_string()])
            .status()
            .unwrap();
    });
    if let Ok(pid) = std::fs::read_to_string(&started) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status();
    }
    out.assert_exit(3);
    let json = out.json();
    let host1 = host(&json, "host1");
    assert_eq!(host1["status"], "unreachable", "{out}");
    assert!(
        host1["error"]
            .as_str()
            .unwrap()
            .contains("the connection to the host was lost during the csdeploy apply step"),
        "{out}"
    );
}

#[test]
fn a_host_that_floods_its_output_fails_with_bounded_reports() {
    let lab = local_lab();
    for (script, says) in [
        ("head -c 70000000 /dev/zero", "more than 64 MiB on stdout"),
        (
            "head -c 3000000 /dev/zero | tr '\\0' x >&2; exit 3",
            "exited with 3: xxx",
        ),
    ] {
        let flooder = lab.write_file("flood-python", &format!("#!/bin/sh\n{script}\n"));
        std::fs::set_permissions(
            &flooder,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let inv = local_inventory_with(
            &lab,
            &format!("      ansible_python_interpreter: {}\n", flooder.display()),
        );
        lab.write_inventory(&inv);
        let out = lab.csdeploy(&["push", "--format", "json"]);
        out.assert_exit(1);
        let json = out.json();
        let error = host(&json, "local")["error"].as_str().unwrap().to_string();
        assert!(error.contains(says), "{}", &error[..error.len().min(300)]);
        assert!(
            error.len() < 10_000,
            "the report keeps {} bytes of it",
            error.len()
        );
        assert!(
            out.stdout.len() < 20_000,
            "{} bytes of report",
            out.stdout.len()
        );
    }
}

#[test]
fn sigint_stops_the_hosts_reports_them_and_cleans_up_with_exit_130() {
    let lab = Lab::new().hosts(1).local(true).build();
    let started = lab_with_a_hanging_host(&lab, "local");
    let tmp = lab.root.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let watched = started.clone();
    let out = lab.csdeploy_meanwhile(
        &["push", "--format", "json"],
        &[("TMPDIR", &tmp)],
        move |pid| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !watched.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .unwrap();
        },
    );
    assert!(started.exists(), "the hanging step never started\n{out}");
    out.assert_exit(130);
    let json = out.json();
    assert_eq!(
        json["summary"]["exit_code"], 130,
        "the report must carry the real exit code\n{out}"
    );
    assert!(
        host(&json, "local")["error"]
            .as_str()
            .unwrap()
            .starts_with("interrupted"),
        "{out}"
    );
    assert_eq!(
        json["hosts"].as_array().unwrap().len(),
        1 + lab.ssh_hosts().len(),
        "every host is reported\n{out}"
    );
    assert!(out.stderr.contains("interrupted"), "{out}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "control directory left behind: {left:?}");
}

/// Processes (of ours) whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[test]
fn sigint_stops_remote_work_over_ssh_and_ends_masters_still_in_their_handshake() {
    let lab = Lab::new().hosts(1).build();
    // A host that accepts the connection and never says a word: its ssh
    // master sits in the handshake (ConnectTimeout 10 s) when the signal comes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let started = lab.root.join("work-started");
    let finished = lab.root.join("work-finished");
    let mut inv = String::from("all:\n  hosts:\n");
    for h in &lab.hosts {
        inv.push_str(&lab.host_entry_yaml(h, 4));
    }
    inv.push_str(&format!(
        "    silent:\n      ansible_host: 127.0.0.1\n      ansible_port: {silent_port}\n"
    ));
    lab.write_inventory(&inv);
    let pb = lab.write_file(
        "long.yml",
        &format!(
            "- name: long\n  hosts: all\n  tasks:\n    - name: work\n      command:\n        cmd: 'touch \"$STARTED\"; sleep 3; touch \"$FINISHED\"'\n        env: {{STARTED: {}, FINISHED: {}}}\n",
            started.display(),
            finished.display()
        ),
    );
    let tmp = lab.root.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let control = tmp.display().to_string();
    let watched = started.clone();
    let watched_control = control.clone();
    let out = lab.csdeploy_meanwhile(
        &["run", pb.to_str().unwrap(), "--format", "json"],
        &[("TMPDIR", &tmp)],
        move |pid| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            // The work runs on host1 and the silent host's master is connecting.
            while !(watched.exists()
                && processes_mentioning(&watched_control)
                    .iter()
                    .any(|c| c.contains(&format!("-p {silent_port}"))))
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .unwrap();
        },
    );
    assert!(started.exists(), "the remote work never started\n{out}");
    out.assert_exit(130);
    let left = processes_mentioning(&control);
    drop(silent);
    assert!(
        left.is_empty(),
        "ssh masters outlived csdeploy: {left:?}\n{out}"
    );
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(
        !finished.exists(),
        "the remote command ran on after csdeploy stopped\n{out}"
    );
}

#[test]
fn temp_files_of_a_killed_push_are_swept_by_the_next_and_a_running_ones_kept() {
    let lab = Lab::new().hosts(1).local(true).build();
    // A writer that is gone: a finished child's pid.
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let live_pid = std::process::id();
    for h in ["host1", "local"] {
        let bin = lab.home(h).join(".claude/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(
            bin.join(format!(".csdeploy-tmp-{dead_pid}-0a0b0c0d0e0f")),
            "left",
        )
        .unwrap();
        std::fs::write(
            bin.join(format!(".csdeploy-tmp-{live_pid}-0a0b0c0d0e0f")),
            "writing",
        )
        .unwrap();
    }
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(0);
    let j = out.json();
    for h in ["host1", "local"] {
        let bin = lab.home(h).join(".claude/bin");
        assert!(
            !bin.join(format!(".csdeploy-tmp-{dead_pid}-0a0b0c0d0e0f"))
                .exists(),
            "{h}: a dead writer's temp file was left"
        );
        assert!(
            bin.join(format!(".csdeploy-tmp-{live_pid}-0a0b0c0d0e0f"))
                .exists(),
            "{h}: a running writer's temp file was removed"
        );
        let said: Vec<&str> = host(&j, h)["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["msg"].as_str())
            .filter(|m| m.contains("stale temp file"))
            .collect();
        assert_eq!(said.len(), 1, "{h}: the sweep is reported once\n{j:#}");
    }
}

// ---------------------------------------------------------------- invalid input (exit 2)

fn local_lab() -> Lab {
    Lab::new().local(true).build()
}

fn local_inventory_with(lab: &Lab, extra_host_lines: &str) -> String {
    // line 1 all:, 2 hosts:, 3 local:, 4 ansible_connection, 5 environment:, 6 HOME, 7.. extra
    let h = lab.host_info("local");
    format!(
        "all:\n  hosts:\n{}{extra_host_lines}",
        lab.host_entry_yaml(h, 4)
    )
}

#[test]
fn inventory_unknown_key_is_rejected_with_location() {
    let lab = local_lab();
    let inv = format!(
        "{}  childen:\n    web:\n      hosts: {{}}\n",
        local_inventory_with(&lab, "")
    );
    assert_eq!(inv.lines().nth(6), Some("  childen:"));
    lab.write_inventory(&inv);
    let out = lab.csdeploy(&["push"]);
    assert_invalid_at(&out, &lab.inventory, 7, "childen");
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn inventory_wrong_type_is_rejected_with_location() {
    let lab = local_lab();
    let mut inv = String::from("all:\n  hosts:\n");
    inv.push_str(&lab.host_entry_yaml(lab.host_info("local"), 4));
    inv.push_str("    web:\n      ansible_host: 127.0.0.1\n      ansible_port: not-a-port\n");
    assert_eq!(inv.lines().nth(8), Some("      ansible_port: not-a-port"));
    lab.write_inventory(&inv);
    let out = lab.csdeploy(&["push"]);
    assert_invalid_at(&out, &lab.inventory, 9, "ansible_port");
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn inventory_yaml_syntax_error_is_rejected_with_location() {
    let lab = local_lab();
    let inv = local_inventory_with(&lab, "      claude_home: a: b\n");
    assert_eq!(inv.lines().nth(6), Some("      claude_home: a: b"));
    lab.write_inventory(&inv);
    let out = lab.csdeploy(&["push"]);
    assert_invalid_at(&out, &lab.inventory, 7, "");
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn an_inherit_list_naming_per_session_state_is_refused_with_location_and_nothing_runs() {
    let lab = Lab::new().hosts(1).local(true).build();
    let inv = format!(
        "{}      inherit_link: \"settings.json projects\"\n    host1:\n      ansible_host: 127.0.0.1\n      ansible_port: {}\n",
        local_inventory_with(&lab, ""),
        lab.port("host1")
    );
    assert_eq!(
        inv.lines().nth(6),
        Some("      inherit_link: \"settings.json projects\"")
    );
    lab.write_inventory(&inv);
    let out = lab.csdeploy(&["push", "--format", "json"]);
    assert_invalid_at(&out, &lab.inventory, 7, "all.hosts.local.inherit_link");
    assert!(
        out.stderr.contains("inherit_link names `projects`")
            && out
                .stderr
                .contains("per-session state Claude Code writes for itself")
            && out.stderr.contains("Remove `projects` from inherit_link"),
        "{out}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing ran, nothing reported: {out}"
    );
    // One bad host stops the whole run before any host is touched.
    assert_empty_dir(&lab.home("local"));
    assert_empty_dir(&lab.home("host1"));

    // A play's own vars are checked the same way, where the play sets them.
    let pb = lab.write_file(
        "share.yml",
        "- hosts: all\n  vars:\n    inherit_copy: \"../.claude.json\"\n  tasks:\n    - file: {path: x, state: directory}\n",
    );
    lab.write_inventory(&local_inventory_with(&lab, ""));
    let out = lab.csdeploy(&["run", pb.to_str().unwrap()]);
    assert_invalid_at(&out, &pb, 3, "[0].vars.inherit_copy");
    assert!(
        out.stderr.contains("not a name directly in claude_home"),
        "{out}"
    );
    assert_empty_dir(&lab.home("local"));
}

/// A one-task playbook whose task body is `task_lines` (indented 6); the
/// task starts on line 4 and its first body line is line 5.
fn playbook_with_task(task_lines: &str) -> String {
    format!("- name: bad\n  hosts: all\n  tasks:\n    - name: the task\n{task_lines}")
}

/// `@DIR@` in `task_lines` stands for a scratch directory inside the lab.
fn assert_bad_playbook(task_lines: &str, line: usize, key: &str) {
    let lab = local_lab();
    let scratch = lab.root.join("scratch").display().to_string();
    let pb = lab.write_file(
        "bad.yml",
        &playbook_with_task(&task_lines.replace("@DIR@", &scratch)),
    );
    let out = lab.csdeploy(&["run", pb.to_str().unwrap()]);
    assert_invalid_at(&out, &pb, line, key);
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn playbook_unknown_module_is_rejected_with_location() {
    assert_bad_playbook("      frobnicate:\n        path: /tmp/x\n", 5, "frobnicate");
}

#[test]
fn playbook_unknown_key_is_rejected_with_location() {
    assert_bad_playbook(
        "      copy:\n        content: hi\n        dest: @DIR@/x\n        mdoe: \"0644\"\n",
        8,
        "mdoe",
    );
}

#[test]
fn playbook_wrong_type_is_rejected_with_location() {
    assert_bad_playbook(
        "      copy:\n        content: hi\n        dest: @DIR@/x\n        backup: sometimes\n",
        8,
        "backup",
    );
}

#[test]
fn playbook_bad_mode_is_rejected_with_location() {
    assert_bad_playbook(
        "      file:\n        path: @DIR@/x\n        state: directory\n        mode: \"0999\"\n",
        8,
        "mode",
    );
}

#[test]
fn playbook_repeated_key_is_rejected_with_location() {
    assert_bad_playbook(
        "      file:\n        path: @DIR@/x\n        state: directory\n        path: @DIR@/y\n",
        8,
        "duplicate key `path` (first at line 6)",
    );
}

#[test]
fn playbook_vars_take_yaml_merge_keys() {
    let lab = local_lab();
    let dest = lab.root.join("greeting.txt");
    let pb = lab.write_file(
        "merge.yml",
        &format!(
            "- name: merged\n  hosts: all\n  vars:\n    <<: &defaults {{greeting: hello, name: world}}\n    name: merge\n  tasks:\n    - name: greet\n      copy:\n        content: \"{{{{ greeting }}}} {{{{ name }}}}\\n\"\n        dest: {}\n",
            yq(&dest.display().to_string())
        ),
    );
    let out = lab.csdeploy(&["run", pb.to_str().unwrap()]);
    out.assert_exit(0);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "hello merge\n");
}

#[test]
fn playbook_undefined_variable_is_rejected_with_location() {
    let lab = local_lab();
    let pb = lab.write_file(
        "bad.yml",
        &playbook_with_task("      copy:\n        content: hi\n        dest: \"/nonexistent/{{ nowhere_defined }}/x\"\n"),
    );
    let out = lab.csdeploy(&["run", pb.to_str().unwrap()]);
    assert_invalid_at(&out, &pb, 7, "nowhere_defined");
    assert!(
        out.stderr.contains("dest"),
        "stderr should name the key `dest`\n{out}"
    );
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn playbook_yaml_syntax_error_is_rejected_with_location() {
    let lab = local_lab();
    let pb = lab.write_file(
        "bad.yml",
        "- name: bad\n  hosts: all\n  tasks:\n    - name: t: x\n      command:\n        cmd: \"true\"\n",
    );
    let out = lab.csdeploy(&["run", pb.to_str().unwrap()]);
    assert_invalid_at(&out, &pb, 4, "");
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn push_with_bad_playbook_file_is_rejected_with_location() {
    let lab = local_lab();
    let pb = lab.write_file("custom.yml", &playbook_with_task("      frobnicate: {}\n"));
    let out = lab.csdeploy(&["push", "--playbook", pb.to_str().unwrap()]);
    assert_invalid_at(&out, &pb, 5, "frobnicate");
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn unknown_host_name_is_rejected() {
    let lab = local_lab();
    let out = lab.csdeploy(&["push", "--host", "no-such-host"]);
    out.assert_exit(2);
    assert!(
        out.stderr.contains("no-such-host"),
        "stderr should name the host\n{out}"
    );
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn out_of_range_numbers_are_rejected_before_anything_runs() {
    let lab = local_lab();
    for args in [
        &["push", "--forks", "0"][..],
        &["push", "--forks", "18446744073709551615"],
        &["verify", "--wait", "0"],
        &["verify", "--wait", "2400000000"],
        &["verify", "--sessions", "65"],
    ] {
        let out = lab.csdeploy(args);
        out.assert_exit(2);
        assert!(
            out.stderr.contains(&format!("for '--{}", &args[1][2..])),
            "{args:?}: names the flag\n{out}"
        );
        assert!(!out.stderr.contains("panicked"), "{out}");
    }
    let pb = lab.write_file(
        "wait.yml",
        "- name: v\n  hosts: all\n  tasks:\n    - name: verify\n      verify:\n        wait: 0\n",
    );
    let out = lab.csdeploy(&["run", pb.to_str().unwrap()]);
    assert_invalid_at(&out, &pb, 6, "wait");
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn unwritable_output_or_missing_ssh_config_is_rejected_before_anything_runs() {
    let lab = local_lab();
    let missing_dir = lab.root.join("no-such-dir").join("report.json");
    let a_dir = lab.root.join("a-dir");
    std::fs::create_dir(&a_dir).unwrap();
    for output in [&missing_dir, &a_dir] {
        let out = lab.csdeploy(&[
            "push",
            "--format",
            "json",
            "--output",
            output.to_str().unwrap(),
        ]);
        out.assert_exit(2);
        assert!(
            out.stderr.contains("--output") && out.stderr.contains(output.to_str().unwrap()),
            "{out}"
        );
        assert_empty_dir(&lab.home("local"));
    }
    assert!(
        std::fs::read_dir(&a_dir).unwrap().next().is_none(),
        "no stray temp file"
    );
    let config = lab.root.join("no-such-ssh-config");
    let inventory = lab.inventory.to_str().unwrap();
    let out = lab.csdeploy_raw(&[
        "push",
        "-i",
        inventory,
        "--ssh-config",
        config.to_str().unwrap(),
    ]);
    out.assert_exit(2);
    assert!(out.stderr.contains("no-such-ssh-config"), "{out}");
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn verify_in_check_mode_is_refused() {
    let lab = local_lab();
    let out = lab.csdeploy(&["verify", "--check"]);
    out.assert_exit(2);
    assert!(out.stderr.contains("--check"), "{out}");
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn each_command_takes_only_the_options_it_uses() {
    let lab = local_lab();
    let help = |command: &str| lab.csdeploy(&[command, "--help"]).stdout;
    let inventory = help("inventory");
    for unused in [
        "--forks",
        "--timeout",
        "--check",
        "--diff",
        "--output",
        "--ssh-config",
    ] {
        assert!(
            !inventory.contains(unused),
            "inventory --help lists {unused}\n{inventory}"
        );
    }
    let verify = help("verify");
    for unused in ["--check", "--diff", "--playbook"] {
        assert!(
            !verify.contains(unused),
            "verify --help lists {unused}\n{verify}"
        );
    }
    for command in ["push", "verify", "run", "inventory"] {
        let text = help(command);
        // Every option has help: after its name, or on the next line.
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            // An option's line; `  - value: ...` lines list possible values.
            if !line.trim_start().starts_with('-') || line.trim_start().starts_with("- ") {
                continue;
            }
            let same_line = line.trim_start().split_once("  ").map(|(_, h)| h.trim());
            let next_line = lines
                .get(i + 1)
                .map(|l| l.trim())
                .filter(|l| !l.starts_with("--") && !l.starts_with("-h"));
            assert!(
                same_line.is_some_and(|h| !h.is_empty())
                    || next_line.is_some_and(|h| !h.is_empty()),
                "{command}: no help text for `{}`\n{text}",
                line.trim()
            );
        }
    }
    // Options that would do nothing are refused, and nothing runs.
    for args in [
        &["push", "--sessions", "3"][..],
        &["push", "--client", "claude", "--wait", "5"],
        &["inventory", "--format", "junit"],
        &["verify", "--diff"],
    ] {
        let out = lab.csdeploy(args);
        out.assert_exit(2);
        assert!(out.stderr.contains(args[1]), "{args:?}\n{out}");
    }
    let out = lab.csdeploy(&["push", "--strict"]);
    assert!(out.stderr.contains("only applies with --verify"), "{out}");
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn host_whose_remote_step_cannot_run_counts_as_failed_in_every_report() {
    let lab = local_lab();
    let inv = local_inventory_with(
        &lab,
        "      ansible_python_interpreter: /nonexistent/python3\n",
    );
    lab.write_inventory(&inv);
    let junit = lab.root.join("report.xml");
    let out = lab.csdeploy(&[
        "push",
        "--format",
        "junit",
        "--output",
        junit.to_str().unwrap(),
    ]);
    out.assert_exit(1);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("local") && l.contains("failed=1")),
        "the recap counts the host's failure\n{out}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    // A real parser reads it; every testcase has a time (checked there).
    let suites = crate::verify::parse_junit(&xml);
    let case = suites[0]
        .cases
        .iter()
        .find(|c| c.attrs["name"] == "host")
        .unwrap_or_else(|| panic!("no host testcase\n{xml}"));
    assert!(case.has("error") && !case.has("failure"), "{xml}");
    assert!(case.outcomes[0].2.contains("/nonexistent/python3"), "{xml}");
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(1);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(num(host(&json, "local"), "failed"), 1, "{out}");
    assert_eq!(num(&json["summary"], "failed"), 1, "{out}");
}

#[test]
fn limit_matching_nothing_is_rejected() {
    let lab = local_lab();
    let out = lab.csdeploy(&["push", "--limit", "zzz*"]);
    out.assert_exit(2);
    assert!(
        out.stderr.contains("zzz*"),
        "stderr should name the pattern\n{out}"
    );
    assert_empty_dir(&lab.home("local"));
}

#[test]
fn push_junit_times_every_task_and_reports_unreachable_as_error() {
    let lab = local_lab();
    let inv = format!(
        "{}    gone:\n      ansible_host: 127.0.0.1\n      ansible_port: 1\n",
        local_inventory_with(&lab, "")
    );
    lab.write_inventory(&inv);
    let junit = lab.root.join("report.xml");
    let out = lab.csdeploy(&[
        "push",
        "--format",
        "junit",
        "--output",
        junit.to_str().unwrap(),
    ]);
    out.assert_exit(3);
    let xml = std::fs::read_to_string(&junit).unwrap();
    let suites = crate::verify::parse_junit(&xml);
    let named = |name: &str| {
        suites
            .iter()
            .find(|s| s.attrs["name"] == name)
            .unwrap_or_else(|| panic!("no suite {name}\n{xml}"))
    };
    let local = named("local");
    assert!(local.cases.len() > 1, "{xml}");
    assert!(
        local.cases.iter().all(|c| c.attrs.contains_key("time")),
        "{xml}"
    );
    let gone = &named("gone").cases;
    assert_eq!(gone.len(), 1, "{xml}");
    assert!(gone[0].has("error") && !gone[0].has("failure"), "{xml}");
    assert!(
        out.stdout.contains("gone  : unreachable: "),
        "the recap's reason\n{out}"
    );
}
