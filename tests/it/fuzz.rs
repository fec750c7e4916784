//! Fuzzing that keeps running (issue #15): random YAML-ish inventories and
//! playbooks through the real binary, and the worst inputs found so far
//! (deep nesting, alias amplification, a 10 MB scalar, big values × many
//! hosts) as fixed seeds with time and memory bounds.
//!
//! Each case is one csdeploy process: a panic, an abort or a signal shows
//! as an exit code outside the table. `CSDEPLOY_FUZZ_CASES=N` runs N random
//! cases per loader instead of the default (a deeper run by hand or in a
//! nightly job); `CSDEPLOY_FUZZ_SEED` replays a run.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::harness::*;

/// Random cases per loader when `CSDEPLOY_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 40;
/// CPU time a random case may take: they are small, so one that takes
/// longer has found something slow.
const CASE_LIMIT: Duration = Duration::from_secs(1);
/// CPU time the worst inputs may take to be refused or loaded. In a debug
/// build the YAML scanner (generic code, compiled unoptimized into
/// csdeploy) is the most of it: about 1.2 s for a 10 MB scalar.
const WORST_LIMIT: Duration = if cfg!(debug_assertions) {
    Duration::from_secs(3)
} else {
    Duration::from_millis(500)
};
/// Address space a csdeploy run may use (`ulimit -v`, KiB): past it an
/// allocation fails and the process aborts, outside the exit-code table.
const MEMORY_LIMIT_KIB: u64 = 2 << 20;

/// Words that steer a loader into its corners: its own keys, YAML's
/// syntax (anchors, aliases, tags, merge keys, block scalars, directives),
/// PyYAML's odd scalars and templates.
const WORDS: &[&str] = &[
    "all",
    "hosts",
    "vars",
    "children",
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_connection",
    "local",
    "environment",
    "HOME",
    "claude_home",
    "max_sessions",
    "inherit_link",
    "name",
    "tasks",
    "copy",
    "content",
    "dest",
    "mode",
    "command",
    "argv",
    "cmd",
    "env",
    "creates",
    "file",
    "path",
    "state",
    "directory",
    "link",
    "src",
    "verify",
    "\"0755\"",
    "0644",
    "~",
    "null",
    "yes",
    "No",
    "true",
    "1e3",
    "0x1f",
    "0o7",
    "1_0",
    "1:30.5",
    ".inf",
    "-1",
    "99999999999999999999",
    "'q''s'",
    "\"d\\u2028\"",
    "{{ x }}",
    "{{ claude_home }}",
    "{{",
    "}}",
    "*a",
    "&a x",
    "&a",
    "!!str x",
    "!!binary x",
    "!!python/object x",
    "<<: *a",
    "? x",
    "|",
    "|-",
    ">",
    "---",
    "...",
    "#c",
    "%YAML 1.1",
    "[]",
    "{}",
    "[a, {b: c}]",
    "{a: [b, *a]}",
    "\t",
    "é",
    "\u{2028}",
    "\u{85}",
    "\u{feff}",
    "\\",
    "\"",
    "'",
    ":",
    "- ",
    ",",
];

#[derive(Debug, Clone)]
enum Node {
    Scalar(String),
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(WORDS).prop_map(String::from),
        1 => "[ -~]{0,12}",
        1 => "\\PC{0,6}",
    ]
}

fn node() -> impl Strategy<Value = Node> {
    scalar()
        .prop_map(Node::Scalar)
        .prop_recursive(6, 64, 5, |inner| {
            prop_oneof![
                proptest::collection::vec((scalar(), inner.clone()), 0..5).prop_map(Node::Map),
                proptest::collection::vec(inner, 0..5).prop_map(Node::Seq),
            ]
        })
}

fn render(node: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    let child = |value: &Node, out: &mut String| match value {
        Node::Scalar(s) => {
            out.push(' ');
            out.push_str(s);
            out.push('\n');
        }
        other => {
            out.push('\n');
            render(other, indent + 2, out);
        }
    };
    match node {
        Node::Scalar(s) => {
            out.push_str(&pad);
            out.push_str(s);
            out.push('\n');
        }
        Node::Map(entries) => {
            for (key, value) in entries {
                out.push_str(&format!("{pad}{key}:"));
                child(value, out);
            }
        }
        Node::Seq(items) => {
            for item in items {
                out.push_str(&format!("{pad}-"));
                child(item, out);
            }
        }
    }
}

/// A random tree in one of a loader's contexts.
fn in_context(contexts: &'static [&'static str]) -> impl Strategy<Value = String> {
    (proptest::sample::select(contexts), node()).prop_map(|(context, tree)| {
        let depth = context.lines().last().map_or(0, |l| l.len());
        let mut body = String::new();
        render(&tree, depth, &mut body);
        format!("{}\n{body}", context.trim_end_matches(' '))
    })
}

/// A value as a document writes it: a word, a quoted string, a tree.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => scalar(),
        2 => scalar().prop_map(|s| yq(&s)),
        1 => node().prop_map(|n| {
            let mut out = String::new();
            render(&n, 8, &mut out);
            format!("\n{}", out.trim_end())
        }),
    ]
}

const VAR_NAMES: &[&str] = &[
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_connection",
    "ansible_python_interpreter",
    "ansible_ssh_private_key_file",
    "environment",
    "claude_home",
    "max_sessions",
    "inherit_link",
    "inherit_copy",
    "db",
    "password",
    "api_key",
    "x",
    "v",
];

/// `key: value` lines at `indent`.
fn vars(indent: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec((proptest::sample::select(VAR_NAMES), value()), 0..4).prop_map(
        move |vars| {
            let pad = " ".repeat(indent);
            vars.iter()
                .map(|(k, v)| format!("{pad}{k}: {v}\n"))
                .collect()
        },
    )
}

/// `head` and `body`, or nothing for an empty body (an empty `vars:` is null).
fn block(head: &str, body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!("{head}{body}")
    }
}

const HOST_NAMES: &[&str] = &[
    "h1",
    "h2",
    "web-1",
    "db.example",
    "local",
    "10.0.0.1",
    "h[1:3]",
];

/// A well-formed inventory (hosts, vars, a group with children) with
/// random names and values: the cases that get past the parser.
fn inventory_shape() -> impl Strategy<Value = String> {
    (
        vars(4),
        proptest::collection::vec((proptest::sample::select(HOST_NAMES), vars(6)), 1..4),
        proptest::collection::vec(proptest::sample::select(HOST_NAMES), 0..3),
        vars(8),
    )
        .prop_map(|(all_vars, hosts, members, group_vars)| {
            let mut doc = format!("all:\n{}  hosts:\n", block("  vars:\n", &all_vars));
            for (name, vars) in hosts {
                doc.push_str(&format!("    {name}:\n{vars}"));
            }
            doc.push_str("  children:\n    g:\n      hosts:\n");
            for m in members {
                doc.push_str(&format!("        {m}:\n"));
            }
            doc.push_str(&block("      vars:\n", &group_vars));
            doc
        })
}

/// Task templates; `V` and `W` become random values.
const TASKS: &[&str] = &[
    "copy: {content: V, dest: W}",
    "copy: {src: V, dest: W, mode: \"0644\"}",
    "file: {path: V, state: directory, mode: W}",
    "file: {path: V, state: link, src: W}",
    "command: {argv: [V, W]}",
    "command: {cmd: \"true\", env: {A: V}, creates: W}",
    "command: V",
    "verify: {sessions: V}",
    "V: W",
];

/// A well-formed play with random tasks, vars and values.
fn playbook_shape() -> impl Strategy<Value = String> {
    (
        vars(4),
        proptest::collection::vec(
            (proptest::sample::select(TASKS), value(), value(), scalar()),
            0..4,
        ),
    )
        .prop_map(|(vars, tasks)| {
            let mut doc = format!(
                "- name: p\n  hosts: all\n{}  tasks:\n",
                block("  vars:\n", &vars)
            );
            for (template, v, w, name) in tasks {
                let flat = |x: &str| {
                    if x.contains('\n') {
                        yq(x.trim())
                    } else {
                        x.to_string()
                    }
                };
                let task = template.replace('V', &flat(&v)).replace('W', &flat(&w));
                doc.push_str(&format!("    - name: {}\n      {task}\n", yq(&name)));
            }
            doc
        })
}

/// A document, then, in a third of the cases, a few random edits (a word
/// inserted, a character dropped) anywhere in it.
fn edited(base: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    let edits = proptest::collection::vec((any::<usize>(), proptest::option::of(scalar())), 1..4);
    (base, prop_oneof![2 => Just(Vec::new()), 1 => edits]).prop_map(|(mut doc, edits)| {
        for (at, word) in edits {
            let chars: Vec<(usize, char)> = doc.char_indices().collect();
            if chars.is_empty() {
                continue;
            }
            let (pos, c) = chars[at % chars.len()];
            match word {
                Some(w) => doc.insert_str(pos, &w),
                None => doc.replace_range(pos..pos + c.len_utf8(), ""),
            }
        }
        doc
    })
}

fn inventory_document() -> impl Strategy<Value = String> {
    edited(prop_oneof![
        in_context(INVENTORY_CONTEXTS),
        inventory_shape()
    ])
}

fn playbook_document() -> impl Strategy<Value = String> {
    edited(prop_oneof![in_context(PLAYBOOK_CONTEXTS), playbook_shape()])
}

/// Where a random tree goes in an inventory (its last line's length is
/// the tree's indentation).
const INVENTORY_CONTEXTS: &[&str] = &[
    "",
    "all:\n  hosts:\n    h1:\n      ",
    "all:\n  vars:\n    ",
    "all:\n  children:\n    ",
    "all:\n  hosts:\n    h1:\n    h2:\n  children:\n    g:\n      hosts:\n        h1:\n      vars:\n        ",
];

const PLAYBOOK_CONTEXTS: &[&str] = &[
    "",
    "- name: p\n  hosts: all\n  tasks:\n    ",
    "- hosts: all\n  tasks: []\n  vars:\n    ",
    "- hosts: all\n  tasks:\n    - name: t\n      ",
    "- hosts: all\n  tasks:\n    - copy:\n        ",
];

/// Runs csdeploy under `ulimit -v` and GNU time, reporting what it cost.
fn csdeploy_bounded(lab: &Lab, args: &[String]) -> (Out, Usage) {
    let report = lab.root.join("usage");
    let _ = std::fs::remove_file(&report);
    let script = format!(
        "ulimit -v {MEMORY_LIMIT_KIB} && exec /usr/bin/time -q -f '%M %U %S' -o '{}' \"$@\"",
        report.display()
    );
    let out = lab.csdeploy_via(&["sh", "-c", &script, "sh"], args);
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let mut numbers = text
        .split_whitespace()
        .map(|n| n.parse::<f64>().unwrap_or(0.0));
    let peak_kib = numbers.next().unwrap_or(0.0) as u64;
    let seconds: f64 = numbers.sum();
    let usage = Usage {
        peak_kib,
        cpu: Duration::from_secs_f64(seconds),
    };
    (out, usage)
}

/// What a run cost: its peak resident memory and its CPU time (user and
/// system), which, unlike the wall clock, other work on the machine does
/// not stretch.
struct Usage {
    peak_kib: u64,
    cpu: Duration,
}

/// A refusal or a result, never a crash: an exit code of the loaders'
/// classes, a message with every refusal, no panic.
#[track_caller]
fn assert_exit_class(out: &Out, allowed: &[i32], input: &str) {
    let shown: String = input.chars().take(600).collect();
    assert!(
        allowed.contains(&out.code) && !out.stderr.contains("panicked"),
        "exit {} outside {allowed:?}\n--- input (first 600 chars) ---\n{shown}\n{out}",
        out.code
    );
    if out.code == 2 {
        assert!(
            out.stderr.contains("error"),
            "a refusal without a message\n{shown}\n{out}"
        );
    }
}

fn cases() -> u32 {
    std::env::var("CSDEPLOY_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn runner() -> TestRunner {
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    match std::env::var("CSDEPLOY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(seed) => {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&seed.to_le_bytes());
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
        }
        None => TestRunner::new(config),
    }
}

/// Runs `check` on random documents, failing with the smallest one found;
/// prints how many cases ended with each exit code.
fn fuzz(what: &str, documents: impl Strategy<Value = String>, check: impl Fn(&str) -> i32) {
    let codes = std::sync::Mutex::new(std::collections::BTreeMap::<i32, u32>::new());
    let result = runner().run(&documents, |doc| {
        let code = check(&doc);
        *codes.lock().unwrap().entry(code).or_default() += 1;
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    eprintln!(
        "fuzz-figures: {what}: {} cases, by exit code: {:?}",
        cases(),
        codes.lock().unwrap()
    );
}

#[test]
fn fuzzed_inventories_load_or_are_refused_never_crash() {
    let lab = Lab::new().local(true).build();
    let file = lab.root.join("fuzz-inventory.yml");
    let inventory = file.display().to_string();
    fuzz("inventories", inventory_document(), |doc| {
        std::fs::write(&file, doc).unwrap();
        let args: Vec<String> = ["inventory", "--format", "json", "-i", &inventory]
            .map(String::from)
            .to_vec();
        let (out, usage) = csdeploy_bounded(&lab, &args);
        assert_exit_class(&out, &[0, 2], doc);
        assert!(usage.cpu < CASE_LIMIT, "slow: {:?}\n{doc}", usage.cpu);
        out.code
    });
}

#[test]
fn fuzzed_playbooks_load_or_are_refused_never_crash() {
    let lab = Lab::new().local(true).build();
    let file = lab.root.join("fuzz-playbook.yml");
    let playbook = file.display().to_string();
    let inventory = lab.inventory.display().to_string();
    fuzz("playbooks", playbook_document(), |doc| {
        std::fs::write(&file, doc).unwrap();
        // Check mode on the local host only: a task that loads is decided
        // against the lab's HOME, and nothing changes.
        let args: Vec<String> = [
            "run", &playbook, "--check", "--host", "local", "-i", &inventory,
        ]
        .map(String::from)
        .to_vec();
        let (out, usage) = csdeploy_bounded(&lab, &args);
        assert_exit_class(&out, &[0, 1, 2], doc);
        assert!(usage.cpu < CASE_LIMIT, "slow: {:?}\n{doc}", usage.cpu);
        out.code
    });
}

// ---------------------------------------------------------------- the worst inputs found so far

/// The inputs of issue #15 that crashed csdeploy or took it minutes.
fn worst_inputs() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    // Nesting: quadratic before its depth limit (100k levels: 60 s).
    out.push(("100k nested flow sequences", "[".repeat(100_000)));
    out.push((
        "50k nested flow maps",
        format!("all: {}", "{a: ".repeat(50_000)),
    ));
    let mut block = String::from("all:\n");
    for depth in 1..=2_000 {
        block.push_str(&" ".repeat(depth));
        block.push_str("a:\n");
    }
    out.push(("2k nested block maps", block));
    // Alias amplification: a billion laughs, and a 1 MB scalar behind
    // 2,000 aliases (past 8 GB before the budget).
    let mut laughs =
        String::from("all:\n  vars:\n    l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..=9 {
        let prev = format!("*l{}", level - 1);
        laughs.push_str(&format!(
            "    l{level}: &l{level} [{}]\n",
            vec![prev; 9].join(", ")
        ));
    }
    out.push(("a billion laughs", laughs));
    let mut big_alias = format!(
        "all:\n  vars:\n    big: &big \"{}\"\n    many:\n",
        "x".repeat(1 << 20)
    );
    for _ in 0..2_000 {
        big_alias.push_str("      - *big\n");
    }
    out.push(("1 MB scalar x 2000 aliases", big_alias));
    // Size: a 10 MB scalar, alone and shared by 500 hosts; a 17 MB file.
    let ten = "y".repeat(10 << 20);
    out.push((
        "10 MB scalar",
        format!("all:\n  hosts:\n    h1:\n  vars:\n    big: \"{ten}\"\n"),
    ));
    let mut shared = format!("all:\n  vars:\n    big: \"{ten}\"\n  hosts:\n");
    for h in 0..500 {
        shared.push_str(&format!("    h{h}:\n"));
    }
    out.push(("10 MB value x 500 hosts", shared));
    out.push((
        "17 MB file",
        format!("all:\n  vars:\n    big: \"{}\"\n", "z".repeat(17 << 20)),
    ));
    out
}

#[test]
fn the_worst_inputs_found_so_far_are_refused_fast_in_bounded_memory() {
    let lab = Lab::new().local(true).build();
    let file = lab.root.join("worst.yml");
    let inventory = lab.inventory.display().to_string();
    let path = file.display().to_string();
    let mut figures = Vec::new();
    for (what, text) in worst_inputs() {
        std::fs::write(&file, &text).unwrap();
        for (loader, args) in [
            (
                "inventory",
                ["inventory", "--format", "json", "-i", &path]
                    .map(String::from)
                    .to_vec(),
            ),
            (
                "playbook",
                ["run", &path, "--check", "--host", "local", "-i", &inventory]
                    .map(String::from)
                    .to_vec(),
            ),
        ] {
            let (out, usage) = csdeploy_bounded(&lab, &args);
            let label = format!("{what} as {loader}");
            let mut short = out.all_output();
            short.truncate(2_000);
            // Only a 10 MB scalar, alone, is a valid inventory.
            let expected = if loader == "inventory" && what == "10 MB scalar" {
                0
            } else {
                2
            };
            assert!(
                out.code == expected && !out.stderr.contains("panicked"),
                "{label}: exit {}, not {expected}\n{short}",
                out.code
            );
            if what.contains("hosts") {
                // The values are refused by the per-run budget, with the file's name.
                assert!(
                    out.stderr.contains(&path) && usage.peak_kib < 1 << 20,
                    "{label}: {} MiB\n{short}",
                    usage.peak_kib >> 10
                );
            }
            assert!(
                usage.cpu < WORST_LIMIT,
                "{label}: {:?} of CPU (limit {WORST_LIMIT:?})\n{short}",
                usage.cpu
            );
            figures.push(format!(
                "{label}: exit {} in {} ms of CPU ({} ms wall), peak {} MiB",
                out.code,
                usage.cpu.as_millis(),
                out.elapsed.as_millis(),
                usage.peak_kib >> 10
            ));
        }
    }
    eprintln!("fuzz-figures:\n  {}", figures.join("\n  "));
}
