//! What people read: the text screens of a real run, snapshotted with
//! insta in CI mode (plain, as the harness runs csdeploy: CI=1, NO_COLOR=1)
//! and in terminal mode with colour forced, and the inventory's name in
//! every command's header.

use crate::harness::*;

/// The run's text with what changes from run to run replaced: the lab's
/// paths, durations, UUIDs and ports; ESC shown as ␛.
fn stable(lab: &Lab, text: &str) -> String {
    let mut text = text
        .replace(&lab.root.display().to_string(), "[LAB]")
        .replace('\u{1b}', "␛");
    for (pattern, to) in [
        (r"\d+\.\d+s\b", "[DURATION]"),
        (r"\d+ ?ms\b", "[DURATION]"),
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[UUID]",
        ),
        (r"(127\.0\.0\.1|localhost)( port |:)\d+", "$1$2[PORT]"),
        (r"/tmp/[^\s:)'`]+", "[TMP]"),
    ] {
        text = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&text, to)
            .into_owned();
    }
    text
}

fn lab() -> Lab {
    Lab::new().hosts(1).unreachable("dead").build()
}

#[test]
fn push_screen_in_ci_mode() {
    let lab = lab();
    // One host at a time: the lines come in inventory order.
    let out = lab.csdeploy(&["push", "--forks", "1"]);
    out.assert_exit(3);
    let text = stable(&lab, &out.stdout);
    insta::assert_snapshot!(text);
    assert!(!text.contains('␛'), "NO_COLOR: {text}");
    assert!(
        text.starts_with("csdeploy push on 2 hosts (inventory: [LAB]/"),
        "{text}"
    );
    assert!(text.contains("\nPLAY RECAP\n"), "{text}");
    assert!(text.contains("\ndead  : unreachable: "), "{text}");
}

#[test]
fn push_screen_in_terminal_mode_with_colour_forced() {
    let lab = lab();
    let out = lab.csdeploy(&["push", "--forks", "1", "--color", "always"]);
    out.assert_exit(3);
    let text = stable(&lab, &out.stdout);
    insta::assert_snapshot!(text);
    assert!(text.contains("␛[33m✓ changed:␛[0m [host1]"), "{text}");
    assert!(text.contains("␛[31m✗ unreachable:␛[0m [dead]"), "{text}");
}

#[test]
fn push_verify_on_an_unreachable_host_says_the_verification_was_skipped() {
    let lab = lab();
    let out = lab.csdeploy(&["push", "--verify", "--host", "dead"]);
    out.assert_exit(3);
    assert!(
        out.stdout.contains(
            "skipped: [dead] Verify parallel-session isolation: verification skipped: the host was unreachable"
        ),
        "{out}"
    );
    assert!(out.stdout.contains("on 1 host (inventory: "), "{out}");
}

#[test]
fn the_inventory_command_names_its_inventory() {
    let lab = lab();
    let out = lab.csdeploy(&["inventory"]);
    out.assert_exit(0);
    let first = out.stdout.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!("# inventory: {}", lab.inventory.display()),
        "{out}"
    );
}

#[test]
fn push_verify_after_a_failed_push_says_why_the_verification_did_not_run() {
    let lab = Lab::new().local(true).build();
    let failing = lab.write_file(
        "failing.yml",
        "- name: failing\n  hosts: all\n  tasks:\n    - name: always fails\n      command:\n        cmd: \"false\"\n",
    );
    let out = lab.csdeploy(&["push", "--verify", "--playbook", failing.to_str().unwrap()]);
    out.assert_exit(1);
    assert!(
        out.stdout.contains(
            "skipped: [local] Verify parallel-session isolation: verification skipped: the push failed"
        ),
        "{out}"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("local : failed: always fails: ")
                && l.ends_with("(verification skipped: the push failed)")),
        "the recap's reason\n{out}"
    );
}
