//! The fault suite of issue #15: csdeploy killed (`kill -9`) or interrupted
//! (SIGINT) at scripted points of a push, the host's agent killed mid-write,
//! a full disk, two pushes at once, and hostile strings in every field a
//! user controls, with the host's `/bin/sh` being dash and being bash.
//!
//! Every trial asserts the promises of the README: each deployed file is
//! the old one or the new one, never partial; after the next run nothing is
//! left running (no ssh master, no agent) and nothing left behind (no temp
//! file, no control directory); exit codes stay in the table.
//!
//! The points are scripted, not timed: the host's `ansible_python_interpreter`
//! is a wrapper that runs the real agent (or a cut-short one), touches a
//! rendezvous file at its point and then holds until its connection goes;
//! the test signals csdeploy when the
//! rendezvous appears.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

const PYTHON: &str = "/usr/bin/python3";
/// The files push installs into `<claude_home>/bin`.
const FILES: [&str; 5] = [
    "claude-session",
    "claude-session-list",
    "cleanup-sessions.py",
    "session_registry.py",
    "session.conf",
];

// ---------------------------------------------------------------- helpers

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every entry under `dir`: relative path → "dir", "-> target" or
/// "mode:contents" (a file's mode and bytes, so that a new file
/// with the old mode would count as neither).
type Snapshot = BTreeMap<String, Vec<u8>>;

fn snapshot(dir: &Path) -> Snapshot {
    fn walk(base: &Path, dir: &Path, out: &mut Snapshot) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, format!("-> {}", t.display()).into_bytes());
            } else if md.is_dir() {
                out.insert(rel, b"dir".to_vec());
                walk(base, &p, out);
            } else {
                let mut v = format!("{:o}:", md.permissions().mode() & 0o7777).into_bytes();
                v.extend(std::fs::read(&p).unwrap_or_default());
                out.insert(rel, v);
            }
        }
    }
    let mut out = Snapshot::new();
    walk(dir, dir, &mut out);
    out
}

/// A temp file of a write (apply's `.csdeploy-tmp-*`, a manifest's `*.tmp`).
fn is_temp(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.starts_with(".csdeploy-tmp-") || name.ends_with(".tmp")
}

fn temps(s: &Snapshot) -> Vec<&String> {
    s.keys().filter(|k| is_temp(k)).collect()
}

/// Every path is as it was (`old`) or as the next push makes it (`new`):
/// nothing partial, nothing half-moded, nothing that is neither.
#[track_caller]
fn assert_old_or_new(what: &str, old: &Snapshot, new: &Snapshot, seen: &Snapshot) {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).chain(seen.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys.into_iter().filter(|k| !is_temp(k)) {
        let got = seen.get(k);
        assert!(
            got == old.get(k) || got == new.get(k),
            "{what}: {k} is neither old nor new ({} bytes; old {}, new {})",
            got.map_or(0, Vec::len),
            old.get(k).map_or(0, Vec::len),
            new.get(k).map_or(0, Vec::len),
        );
    }
}

/// How a state compares with the old and new ones, for the figures.
fn classify(old: &Snapshot, new: &Snapshot, seen: &Snapshot) -> &'static str {
    let clean: Snapshot = seen
        .iter()
        .filter(|(k, _)| !is_temp(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if clean == *old {
        "old"
    } else if clean == *new {
        "new"
    } else {
        "mixed"
    }
}

/// Installs an older version of every file push manages: what a fault may leave.
fn plant_old(home: &Path) -> Snapshot {
    let _ = std::fs::remove_dir_all(home.join(".claude"));
    let _ = std::fs::remove_dir_all(home.join(".local"));
    let _ = std::fs::remove_dir_all(home.join(".cache"));
    let bin = home.join(".claude/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for f in FILES {
        let p = bin.join(f);
        std::fs::write(&p, format!("old version of {f}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    snapshot(home)
}

/// Our processes whose command line mentions `needle`, but for the lab's
/// sshd listeners.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != me.as_str())
        .filter_map(|e| {
            let c = std::fs::read(e.path().join("cmdline")).ok()?;
            Some(format!(
                "{}: {}",
                e.file_name().to_string_lossy(),
                String::from_utf8_lossy(&c).replace('\0', " ")
            ))
        })
        .filter(|c| c.contains(needle) && !c.contains("[listener]"))
        .collect()
}

/// What still runs that mentions `needle`, after giving it `grace` to go.
fn left_running(needle: &str, grace: Duration) -> Vec<String> {
    let deadline = Instant::now() + grace;
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits for `file` to appear, then sends `signal` to `pid` (never to a
/// process that has already gone). True when it signalled.
fn signal_on(file: &Path, pid: u32, signal: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !file.exists() {
        if !pid_alive(pid) || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success()
}

/// The lab's inventory with `extra` (YAML lines) added to every host.
fn inventory_with(lab: &Lab, extra: &str) -> String {
    let mut inv = String::from("all:\n  hosts:\n");
    for h in &lab.hosts {
        inv.push_str(&lab.host_entry_yaml(h, 4));
        inv.push_str(extra);
    }
    inv
}

// ---------------------------------------------------------------- scripted points

/// A point of a push where csdeploy is stopped, and what the host then holds.
struct Point {
    name: &'static str,
    /// The state the point leaves: "old" or "new".
    leaves: &'static str,
}

const POINTS: [Point; 4] = [
    Point {
        name: "after connect",
        leaves: "old",
    },
    Point {
        name: "during gather",
        leaves: "old",
    },
    Point {
        // The agent gets the first 300 bytes of the apply request, then
        // EOF: the connection dropped while contents streamed.
        name: "during apply's stdin",
        leaves: "old",
    },
    Point {
        name: "after apply",
        leaves: "new",
    },
];

/// The interpreter wrapper for one point: it runs the real agent between
/// the controller and itself, relaying the protocol's frames (see
/// src/protocol.rs), and at the point touches RV and holds until its
/// reader is gone.
fn wrapper(point: &Point, rv: &Path) -> String {
    format!(
        r#"#!{PYTHON}
import json, os, select, subprocess, sys
RV, POINT = {rv:?}, {point:?}
if "csdeploy-agent" not in sys.argv[4]:
    os.execv("{PYTHON}", ["{PYTHON}"] + sys.argv[1:])
def hold():
    open(RV, "w").close()
    poller = select.poll()
    poller.register(1, 0)
    poller.poll()
if POINT == "after connect":
    hold()
    sys.exit(0)
i, o = sys.stdin.buffer, sys.stdout.buffer
agent = subprocess.Popen(["{PYTHON}"] + sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
line = i.readline()
agent.stdin.write(line + i.read(json.loads(line)["agent"]) + i.readline())
agent.stdin.flush()
reply = agent.stdout.readline()
reply += agent.stdout.read(sum(p["content_size"] or 0 for p in json.loads(reply)["paths"]))
if POINT == "during gather":
    hold()
o.write(reply)
o.flush()
line = i.readline()
frame = line + i.read(sum(op.get("size", 0) for op in json.loads(line)["ops"]))
if POINT == "during apply's stdin":
    agent.stdin.write(frame[:300])
    agent.stdin.close()
    agent.wait()
    hold()
    sys.exit(1)
agent.stdin.write(frame)
agent.stdin.close()
out = agent.stdout.read()
agent.wait()
hold()
o.write(out)
"#,
        rv = rv.display().to_string(),
        point = point.name,
    )
}

/// What one trial saw, for the figures.
struct Trial {
    point: &'static str,
    signal: &'static str,
    code: i32,
    state: &'static str,
}

/// Stops a `--diff` push (the agent gathers, then applies) with `signal` at
/// each point; checks the host after the fault and after the next push.
fn signal_at_every_point(signal: &'static str, expect_code: i32) -> Vec<Trial> {
    let lab = Lab::new().hosts(1).build();
    let home = lab.home("host1");
    let tmp = lab.root.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let needle = lab.root.display().to_string();
    let plain = inventory_with(&lab, "");
    let mut trials = Vec::new();
    for (i, point) in POINTS.iter().enumerate() {
        let rv = lab.root.join(format!("rv-{i}"));
        let interp = lab.root.join(format!("python-{i}"));
        write_exec(&interp, &wrapper(point, &rv));
        lab.write_inventory(&inventory_with(
            &lab,
            &format!("      ansible_python_interpreter: {}\n", interp.display()),
        ));
        let old = plant_old(&home);
        let watched = rv.clone();
        let out = lab.csdeploy_meanwhile(
            &["push", "--diff", "--format", "json"],
            &[("TMPDIR", &tmp)],
            move |pid| {
                signal_on(&watched, pid, signal);
            },
        );
        let what = format!("{signal} {}", point.name);
        assert!(rv.exists(), "{what}: the point was never reached\n{out}");
        assert_eq!(out.code, expect_code, "{what}\n{out}");
        if signal == "-INT" {
            assert_eq!(out.json()["summary"]["exit_code"], 130, "{what}\n{out}");
            let left = left_running(&needle, Duration::from_secs(3));
            assert!(left.is_empty(), "{what}: still running: {left:?}\n{out}");
        }
        let seen = snapshot(&home);

        lab.write_inventory(&plain);
        let next =
            lab.csdeploy_meanwhile(&["push", "--format", "json"], &[("TMPDIR", &tmp)], |_| {});
        next.assert_exit(0);
        let new = snapshot(&home);
        assert_old_or_new(&what, &old, &new, &seen);
        let state = classify(&old, &new, &seen);
        assert_eq!(state, point.leaves, "{what}\n{out}");
        assert!(
            temps(&new).is_empty(),
            "{what}: left behind: {:?}",
            temps(&new)
        );
        let left = left_running(&needle, Duration::from_secs(5));
        assert!(
            left.is_empty(),
            "{what}: still running after the next push: {left:?}"
        );
        let dirs: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(
            dirs.is_empty(),
            "{what}: control directories left behind: {dirs:?}"
        );
        trials.push(Trial {
            point: point.name,
            signal,
            code: out.code,
            state,
        });
    }
    trials
}

fn figures(trials: &[Trial]) {
    for t in trials {
        eprintln!(
            "fault-figures: {} at {:?}: exit {}, files {}",
            t.signal, t.point, t.code, t.state
        );
    }
}

#[test]
fn sigint_at_each_point_of_a_push_leaves_files_old_or_new_and_nothing_running() {
    figures(&signal_at_every_point("-INT", 130));
}

#[test]
fn kill_9_at_each_point_of_a_push_leaves_files_old_or_new_and_the_next_run_cleans_up() {
    figures(&signal_at_every_point("-KILL", 128 + 9));
}

// ---------------------------------------------------------------- the agent killed mid-write

/// How the apply wrapper picks its moment to `kill -9` the real agent.
const KILL_MOMENTS: [&str; 9] = [
    "at its first temp file",
    "sleep 0",
    "sleep 0.02",
    "sleep 0.04",
    "sleep 0.06",
    "sleep 0.08",
    "sleep 0.1",
    "sleep 0.15",
    "sleep 0.25",
];

fn agent_killer(moment: &str, bin: &Path) -> String {
    let wait = if moment.starts_with("sleep") {
        moment.to_string()
    } else {
        format!(
            "while kill -0 $pid 2>/dev/null; do for f in '{}'/.csdeploy-tmp-*; do [ -e \"$f\" ] && break 2; done; done",
            bin.display()
        )
    };
    format!(
        "#!/bin/sh\ncase \"$4\" in\n  *csdeploy-agent*)\n    exec 3<&0\n    {PYTHON} \"$@\" <&3 & pid=$!\n    {wait}\n    kill -9 $pid 2>/dev/null; wait $pid ;;\n  *) exec {PYTHON} \"$@\" ;;\nesac\n"
    )
}

#[test]
fn the_agent_killed_mid_write_leaves_files_old_or_new_and_the_next_push_sweeps() {
    let lab = Lab::new().hosts(1).local(true).build();
    let needle = lab.root.display().to_string();
    let names = ["host1", "local"];
    let plain = inventory_with(&lab, "");
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, moment) in KILL_MOMENTS.iter().enumerate() {
        let mut inv = String::from("all:\n  hosts:\n");
        for h in &lab.hosts {
            let interp = lab.root.join(format!("killer-{i}-{}", h.name));
            write_exec(&interp, &agent_killer(moment, &h.home.join(".claude/bin")));
            inv.push_str(&lab.host_entry_yaml(h, 4));
            inv.push_str(&format!(
                "      ansible_python_interpreter: {}\n",
                interp.display()
            ));
        }
        lab.write_inventory(&inv);
        let old: Vec<Snapshot> = names.iter().map(|h| plant_old(&lab.home(h))).collect();
        let out = lab.csdeploy(&["push", "--format", "json"]);
        assert!([0, 1].contains(&out.code), "{moment}\n{out}");
        *outcomes
            .entry(if out.code == 0 { "exit 0" } else { "exit 1" })
            .or_default() += 1;
        let seen: Vec<Snapshot> = names.iter().map(|h| snapshot(&lab.home(h))).collect();
        lab.write_inventory(&plain);
        lab.csdeploy(&["push", "--format", "json"]).assert_exit(0);
        for (j, h) in names.iter().enumerate() {
            let new = snapshot(&lab.home(h));
            let what = format!("{h}, agent killed {moment}");
            assert_old_or_new(&what, &old[j], &new, &seen[j]);
            assert!(temps(&new).is_empty(), "{what}: left: {:?}", temps(&new));
            let state = classify(&old[j], &new, &seen[j]);
            let temp = if temps(&seen[j]).is_empty() {
                ""
            } else {
                " + temp file"
            };
            *outcomes
                .entry(match (state, temp) {
                    ("old", "") => "old",
                    ("old", _) => "old + temp file",
                    ("mixed", "") => "mixed",
                    ("mixed", _) => "mixed + temp file",
                    ("new", "") => "new",
                    _ => "new + temp file",
                })
                .or_default() += 1;
        }
    }
    let left = left_running(&needle, Duration::from_secs(5));
    assert!(left.is_empty(), "still running: {left:?}");
    eprintln!("fault-figures: agent killed mid-write, host states after the kill: {outcomes:?}");
}

// ---------------------------------------------------------------- disk full

/// A tmpfs mounted over a directory, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Why not, when it cannot be mounted: not root, or mount(8) refused.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        if current_uid() != 0 {
            return Err("mounting a tmpfs needs root".into());
        }
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` but for about `room` bytes.
fn fill_but(dir: &Path, room: u64) {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![b'x'; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    let len = std::fs::metadata(&filler).unwrap().len();
    f.set_len(len.saturating_sub(room)).unwrap();
}

#[test]
fn a_full_disk_fails_the_host_cleanly_with_files_old_or_new_and_no_temp_files() {
    let lab = Lab::new().hosts(1).build();
    let home = lab.home("host1");
    let _tmpfs = match Tmpfs::mount(&home, "512k") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let mut outcomes = Vec::new();
    // Room for nothing, for the first file, for a few files, for almost all.
    for room in [0u64, 60 << 10, 80 << 10, 96 << 10] {
        let old = plant_old(&home);
        fill_but(&home, room);
        let out = lab.csdeploy(&["push", "--format", "json"]);
        let seen = snapshot(&home);
        let _ = std::fs::remove_file(home.join("filler"));
        let what = format!("{} KiB free", room >> 10);
        assert!([0, 1].contains(&out.code), "{what}\n{out}");
        if out.code == 1 {
            assert!(
                out.stdout.contains("No space left on device"),
                "{what}: the reason is given\n{out}"
            );
        }
        assert!(
            temps(&seen).is_empty(),
            "{what}: a failed write left {:?}",
            temps(&seen)
        );
        let mut seen = seen;
        seen.remove("filler");
        lab.csdeploy(&["push", "--format", "json"]).assert_exit(0);
        let new = snapshot(&home);
        assert_old_or_new(&what, &old, &new, &seen);
        outcomes.push(format!(
            "{what}: exit {}, files {}",
            out.code,
            classify(&old, &new, &seen)
        ));
    }
    eprintln!("fault-figures: disk full: {outcomes:?}");
    assert!(
        outcomes.iter().any(|o| o.contains("exit 1")),
        "no trial ran out of space: {outcomes:?}"
    );
}

// ---------------------------------------------------------------- concurrent pushes

#[test]
fn concurrent_pushes_to_one_host_both_succeed_or_one_fails_cleanly() {
    let lab = Lab::new().hosts(1).local(true).build();
    let names = ["host1", "local"];
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for round in 0..3 {
        for h in names {
            plant_old(&lab.home(h));
        }
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| lab.csdeploy(&["push", "--format", "json"]));
            let b = s.spawn(|| lab.csdeploy(&["push", "--format", "json"]));
            (a.join().unwrap(), b.join().unwrap())
        });
        for out in [&a, &b] {
            assert!([0, 1].contains(&out.code), "round {round}\n{out}");
            if out.code == 1 {
                let json = out.json();
                for h in names {
                    let entry = host(&json, h);
                    assert!(
                        entry["status"] != "failed"
                            || !entry["error"].is_null()
                            || tasks(entry).iter().any(|t| t["msg"].is_string()),
                        "round {round}: {h} failed without a reason\n{out}"
                    );
                }
            }
        }
        *outcomes
            .entry(format!(
                "exits {} and {}",
                a.code.min(b.code),
                a.code.max(b.code)
            ))
            .or_default() += 1;
        // Whatever happened, the next push finds the files whole: at most it
        // finishes what a failed push left.
        let next = lab.csdeploy(&["push", "--format", "json"]);
        next.assert_exit(0);
        let again = lab.csdeploy(&["push", "--format", "json"]);
        again.assert_exit(0);
        let json = again.json();
        for h in names {
            assert_eq!(
                host(&json, h)["status"],
                "ok",
                "round {round}: {h}\n{again}"
            );
            let s = snapshot(&lab.home(h));
            assert!(temps(&s).is_empty(), "round {round}: {h}: {:?}", temps(&s));
            for f in FILES.iter().filter(|f| **f != "session.conf") {
                assert_eq!(
                    std::fs::read(lab.home(h).join(".claude/bin").join(f)).unwrap(),
                    std::fs::read(playbook_file(f)).unwrap(),
                    "round {round}: {h}: {f}"
                );
            }
        }
    }
    eprintln!("fault-figures: concurrent pushes, 3 rounds: {outcomes:?}");
}

// ---------------------------------------------------------------- injection

/// Hostile strings; `M` becomes a marker file's name. It is relative, so an
/// injected `touch` lands in whatever directory it ran in: the search looks
/// in every one a step can run in.
const PAYLOADS: [&str; 18] = [
    "$(touch M)",
    "`touch M`",
    "'; touch M; '",
    "\"; touch M; \"",
    "x\ntouch M\n",
    "; touch M",
    "| touch M",
    "&& touch M &",
    "$(touch M)*?[a]{b,c}~",
    "-oProxyCommand=touch M",
    "a[$(touch M)]",
    "x\u{2028}touch M\u{2029}",
    "x\rtouch M\u{b}\u{c}\u{1c}\u{85}",
    "${IFS}touch${IFS}M",
    "\\$(touch M)\\",
    "--rcfile=M -c 'touch M'",
    "$(touch${IFS}M)",
    "-oProxyCommand=touch${IFS}M",
];

/// The README's exit codes.
const EXIT_CODES: [i32; 5] = [0, 1, 2, 3, 130];

/// A YAML double-quoted scalar in ASCII: YAML 1.1 readers take a raw
/// U+0085, U+2028 or U+2029 for a line break, which would fold the value.
fn yq_ascii(s: &str) -> String {
    yq(s)
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                format!("\\u{:04x}", c as u32)
            }
        })
        .collect()
}

struct Injection {
    tag: String,
    payloads: Vec<String>,
}

impl Injection {
    fn new() -> Injection {
        let tag = unique("inj");
        let payloads = PAYLOADS
            .iter()
            .enumerate()
            .map(|(i, p)| p.replace('M', &format!("{tag}-{i}")))
            .collect();
        Injection { tag, payloads }
    }

    /// Marker files anywhere a step could have run: the lab (the controller's
    /// working directory, the homes), the user's real home, `/` and `/tmp`.
    fn fired(&self, lab: &Lab) -> Vec<std::path::PathBuf> {
        fn walk(dir: &Path, tag: &str, deep: bool, out: &mut Vec<std::path::PathBuf>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name
                    .strip_prefix(tag)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                {
                    out.push(e.path());
                }
                if deep && e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), tag, deep, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&lab.root, &self.tag, true, &mut out);
        for top in ["/", "/tmp", "/root"] {
            walk(Path::new(top), &self.tag, false, &mut out);
        }
        if let Some(home) = std::env::var_os("HOME") {
            walk(Path::new(&home), &self.tag, false, &mut out);
        }
        out
    }

    #[track_caller]
    fn assert_inert(&self, lab: &Lab, what: &str, out: &Out) {
        let fired = self.fired(lab);
        for f in &fired {
            let _ = std::fs::remove_file(f);
        }
        assert!(fired.is_empty(), "{what}: injection ran: {fired:?}\n{out}");
        assert!(
            EXIT_CODES.contains(&out.code),
            "{what}: exit code outside the table\n{out}"
        );
    }
}

/// An sshd of the lab whose sessions see bash as `/bin/sh` (a bind mount in
/// a mount namespace of its own), as on hosts where `sh` is bash.
struct BashSshd {
    port: u16,
    child: std::process::Child,
}

impl BashSshd {
    fn start(lab: &Lab) -> Result<BashSshd, String> {
        if current_uid() != 0 {
            return Err("a mount namespace with bash as /bin/sh needs root".into());
        }
        let port = closed_port();
        let script = format!(
            "mount --bind /bin/bash /bin/sh && exec {SSHD} -D -e -f '{}' -p {port}",
            lab.servers[0].config.display()
        );
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                let _ = child.kill();
                return Err("sshd in a mount namespace did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let key = std::fs::read_to_string(lab.root.join("ssh_host_ed25519_key.pub")).unwrap();
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        let mut kh = std::fs::read_to_string(&lab.known_hosts).unwrap();
        kh.push_str(&format!("[127.0.0.1]:{port} {}\n", key.join(" ")));
        std::fs::write(&lab.known_hosts, kh).unwrap();
        Ok(BashSshd { port, child })
    }
}

impl Drop for BashSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs csdeploy so that its local host's steps see bash as `/bin/sh`.
const BASH_AS_SH: [&str; 7] = [
    "unshare",
    "-m",
    "--propagation",
    "private",
    "sh",
    "-c",
    "mount --bind /bin/bash /bin/sh && exec \"$@\"",
];

/// `args` with the lab's inventory and ssh config, for `csdeploy_via`.
fn lab_args(lab: &Lab, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    v.extend([
        "-i".into(),
        lab.inventory.display().to_string(),
        "--ssh-config".into(),
        lab.ssh_config.display().to_string(),
    ]);
    v
}

/// csdeploy with the local host's `sh` being dash (the system's) or bash.
fn csdeploy_with_sh(lab: &Lab, sh: &str, args: &[&str]) -> Out {
    let args = lab_args(lab, args);
    if sh == "bash" {
        let mut wrapper: Vec<&str> = BASH_AS_SH.to_vec();
        wrapper.push("sh");
        lab.csdeploy_via(&wrapper, &args)
    } else {
        lab.csdeploy_raw(&args)
    }
}

/// The matrix playbook: per payload, a task for each field that carries a
/// value to a host (content, dest, a directory's path, an argv element, an
/// env value, `creates`, the host's `environment`), plus a probe of `sh`.
fn injection_playbook() -> String {
    let mut pb = String::from(
        "- name: injection matrix\n  hosts: all\n  tasks:\n    - name: scratch\n      file: {path: \"{{ home }}/inj\", state: directory}\n    - name: which sh\n      command: {cmd: 'if [ -n \"$BASH_VERSION\" ]; then echo bash; else echo dash; fi > \"$O\"', env: {O: \"{{ home }}/inj/sh\"}}\n",
    );
    for (i, raw) in PAYLOADS.iter().enumerate() {
        let p = format!("{{{{ p{i} }}}}");
        pb.push_str(&format!(
            r#"    - name: {name}
      copy: {{content: "{p}", dest: "{{{{ home }}}}/inj/content-{i}"}}
    - name: dest {i}
      copy: {{content: "x", dest: "{{{{ home }}}}/inj/d-{p}"}}
    - name: path {i}
      file: {{path: "{{{{ home }}}}/inj/f-{p}", state: directory}}
    - name: argv {i}
      command: {{argv: [sh, -c, 'printf %s "$1" > "$2"', sh, "{p}", "{{{{ home }}}}/inj/argv-{i}"]}}
    - name: env {i}
      command: {{cmd: 'printf %s "$V" > "$O"', env: {{V: "{p}", O: "{{{{ home }}}}/inj/env-{i}"}}}}
    - name: creates {i}
      command: {{argv: [touch, "{{{{ home }}}}/inj/ran-{i}"], creates: "{{{{ home }}}}/inj/c-{p}"}}
    - name: environment {i}
      command: {{cmd: 'printf %s "$INJ{i}" > "$O"', env: {{O: "{{{{ home }}}}/inj/environment-{i}"}}}}
"#,
            // The task's name is the payload itself: it reaches every report.
            name = yq_ascii(&format!("payload {i}: {raw}")),
        ));
    }
    pb
}

/// The lab's hosts plus `bashhost`, every payload as an inventory variable
/// `p<i>` and as `INJ<i>` in every host's `environment`.
fn injection_inventory(lab: &Lab, inj: &Injection, bash_port: u16) -> String {
    let mut inv = String::from("all:\n  vars:\n");
    for (i, p) in inj.payloads.iter().enumerate() {
        inv.push_str(&format!("    p{i}: {}\n", yq_ascii(p)));
    }
    inv.push_str("  hosts:\n");
    let mut hosts = lab.hosts.clone();
    let mut bash = lab.hosts[0].clone();
    bash.name = "bashhost".into();
    bash.port = Some(bash_port);
    bash.home = lab.root.join("homes/bashhost");
    std::fs::create_dir_all(&bash.home).unwrap();
    hosts.push(bash);
    for h in &hosts {
        inv.push_str(&lab.host_entry_yaml(h, 4));
        for (i, p) in inj.payloads.iter().enumerate() {
            inv.push_str(&format!("        INJ{i}: {}\n", yq_ascii(p)));
        }
        inv.push_str(&format!(
            "      home: {}\n",
            yq(&h.home.display().to_string())
        ));
    }
    inv
}

#[test]
fn hostile_strings_in_every_field_stay_data_with_sh_as_dash_and_as_bash() {
    let lab = Lab::new().hosts(1).local(true).build();
    let bash_sshd = match BashSshd::start(&lab) {
        Ok(s) => s,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let inj = Injection::new();
    let n = inj.payloads.len();
    lab.write_inventory(&injection_inventory(&lab, &inj, bash_sshd.port));
    let pb = lab.write_file("inject.yml", &injection_playbook());
    let pb = pb.to_str().unwrap();
    let mut runs = 0;
    let mut checks = 0;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for local_sh in ["dash", "bash"] {
        let homes: Vec<(&str, std::path::PathBuf)> = vec![
            ("host1", lab.home("host1")),
            ("local", lab.home("local")),
            ("bashhost", lab.root.join("homes/bashhost")),
        ];
        for (_, home) in &homes {
            let _ = std::fs::remove_dir_all(home.join("inj"));
        }
        let out = csdeploy_with_sh(&lab, local_sh, &["run", pb, "--format", "json"]);
        runs += 1;
        let what = format!("matrix, local sh = {local_sh}");
        inj.assert_inert(&lab, &what, &out);
        out.assert_exit(0);
        for (name, home) in &homes {
            let sh = match *name {
                "local" => local_sh,
                "bashhost" => "bash",
                _ => "dash",
            };
            let dir = home.join("inj");
            assert_eq!(
                std::fs::read_to_string(dir.join("sh")).unwrap().trim(),
                sh,
                "{what}: {name} ran the wrong sh"
            );
            for (i, p) in inj.payloads.iter().enumerate() {
                let what = format!("{what}: {name}: payload {i} {p:?}");
                for field in ["content", "argv", "env", "environment"] {
                    assert_eq!(
                        std::fs::read_to_string(dir.join(format!("{field}-{i}"))).ok(),
                        Some(p.clone()),
                        "{what}: {field}"
                    );
                }
                assert!(dir.join(format!("d-{p}")).is_file(), "{what}: dest");
                assert!(dir.join(format!("f-{p}")).is_dir(), "{what}: path");
                assert!(dir.join(format!("ran-{i}")).is_file(), "{what}: creates");
                checks += 7;
            }
        }

        // Host names and ansible_host: a local host named by the payload
        // beside an ssh host whose ansible_host is the payload; then an ssh
        // host whose name is the payload (no ansible_host: the name is
        // ssh's destination).
        let named = lab.write_file(
            "named.yml",
            "- name: names\n  hosts: all\n  tasks:\n    - name: my name\n      command: {cmd: 'printf %s \"$N\" > \"$O\"', env: {N: \"{{ inventory_hostname }}\", O: \"{{ home }}/name\"}}\n",
        );
        for (i, p) in inj.payloads.iter().enumerate() {
            let home = lab.root.join(format!("homes/named-{i}"));
            std::fs::create_dir_all(&home).unwrap();
            let _ = std::fs::remove_file(home.join("name"));
            let vars = format!(
                "all:\n  vars:\n    home: {}\n  hosts:\n",
                yq_ascii(&home.display().to_string())
            );
            let inventories = [
                format!(
                    "{vars}    {local}:\n      ansible_connection: local\n      environment: {{HOME: {home}}}\n    addr-{i}:\n      ansible_host: {p}\n      ansible_port: {port}\n",
                    local = yq_ascii(&format!("L{p}")),
                    home = yq_ascii(&home.display().to_string()),
                    p = yq_ascii(p),
                    port = closed_port(),
                ),
                format!(
                    "{vars}    {p}:\n      ansible_port: {port}\n",
                    p = yq_ascii(p),
                    port = closed_port(),
                ),
            ];
            for (k, inv) in inventories.iter().enumerate() {
                lab.write_inventory(inv);
                let out = csdeploy_with_sh(
                    &lab,
                    local_sh,
                    &["run", named.to_str().unwrap(), "--format", "json"],
                );
                runs += 1;
                let field = ["local name + ansible_host", "ssh name"][k];
                inj.assert_inert(&lab, &format!("{field} {i} {p:?}, sh {local_sh}"), &out);
                *codes
                    .entry(format!("{field} exit {}", out.code))
                    .or_default() += 1;
                if k == 0 && out.code != 2 {
                    assert_eq!(
                        std::fs::read_to_string(home.join("name")).ok(),
                        Some(format!("L{p}")),
                        "host name {i} {p:?}\n{out}"
                    );
                }
                checks += 1;
            }

            let out = csdeploy_with_sh(&lab, local_sh, &["run", pb, "--check", "--limit", p]);
            runs += 1;
            inj.assert_inert(&lab, &format!("--limit {i} {p:?}, sh {local_sh}"), &out);
            *codes
                .entry(format!("--limit exit {}", out.code))
                .or_default() += 1;
            checks += 1;
        }

        // The session ids of `cleanup --session`, on a host with the tools.
        lab.write_inventory(&injection_inventory(&lab, &inj, bash_sshd.port));
        let out = csdeploy_with_sh(&lab, local_sh, &["push", "--host", "local"]);
        out.assert_exit(0);
        let sessions: Vec<String> = inj
            .payloads
            .iter()
            .map(|p| format!("--session={p}"))
            .collect();
        let mut args = vec!["cleanup", "--host", "local", "--format", "json"];
        args.extend(sessions.iter().map(String::as_str));
        let out = csdeploy_with_sh(&lab, local_sh, &args);
        runs += 2;
        inj.assert_inert(&lab, &format!("cleanup --session, sh {local_sh}"), &out);
        *codes
            .entry(format!("--session exit {}", out.code))
            .or_default() += 1;
        let first = host(&out.json(), "local")["cleaner_stderr"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            out.code == 1 && first.contains(&format!("'{}'", inj.payloads[0])),
            "the ids reach the host's cleaner as data, which refuses them\n{out}"
        );
        checks += n;
    }
    // NUL, which no argument, environment value or file name can hold:
    // refused (exit 2) or failing its task (exit 1) in every such field,
    // written as it is in a file's contents.
    let nul = format!("a\0b$(touch {}-nul)", inj.tag);
    let mut inv = injection_inventory(&lab, &inj, bash_sshd.port);
    inv = inv.replacen("  vars:\n", &format!("  vars:\n    nul: {}\n", yq(&nul)), 1);
    lab.write_inventory(&inv);
    for (field, task) in [
        (
            "content",
            r#"copy: {content: "{{ nul }}", dest: "{{ home }}/nul"}"#,
        ),
        (
            "dest",
            r#"copy: {content: "x", dest: "{{ home }}/{{ nul }}"}"#,
        ),
        (
            "path",
            r#"file: {path: "{{ home }}/{{ nul }}", state: directory}"#,
        ),
        ("argv", r#"command: {argv: [echo, "{{ nul }}"]}"#),
        ("env", r#"command: {cmd: "true", env: {V: "{{ nul }}"}}"#),
        (
            "creates",
            r#"command: {argv: ["true"], creates: "{{ nul }}"}"#,
        ),
    ] {
        let pb = lab.write_file(
            "nul.yml",
            &format!("- name: nul\n  hosts: all\n  tasks:\n    - name: {field}\n      {task}\n"),
        );
        let out = lab.csdeploy(&["run", pb.to_str().unwrap(), "--host", "local"]);
        runs += 1;
        inj.assert_inert(&lab, &format!("NUL in {field}"), &out);
        if field == "content" {
            // File contents are bytes: a NUL is data like any other.
            out.assert_exit(0);
            assert_eq!(
                std::fs::read(lab.home("local").join("nul")).unwrap(),
                nul.as_bytes()
            );
        } else {
            assert!([1, 2].contains(&out.code), "NUL in {field}\n{out}");
        }
        *codes.entry(format!("NUL exit {}", out.code)).or_default() += 1;
        checks += 1;
    }
    eprintln!(
        "fault-figures: injection: {n} payloads, {runs} runs, {checks} literal-data and marker checks, 0 markers; {codes:?}"
    );
}

/// When the disk fills while the push manifest is written, the push must
/// not exit 0 without the record `rollback` needs, nor leave its temp file
/// (found by this suite: it did both, with room for the new files and less
/// than a page more).
#[test]
fn a_full_disk_while_the_manifest_is_written_loses_nothing_and_leaves_no_temp_file() {
    let lab = Lab::new().hosts(1).build();
    let home = lab.home("host1");
    let _tmpfs = match Tmpfs::mount(&home, "512k") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    // The pages the new files take (tmpfs counts whole pages), and around it.
    let pages: u64 = FILES
        .iter()
        .filter(|f| **f != "session.conf")
        .map(|f| {
            std::fs::metadata(playbook_file(f))
                .unwrap()
                .len()
                .div_ceil(4096)
        })
        .sum::<u64>()
        + 1;
    for room in pages.saturating_sub(3)..pages + 4 {
        plant_old(&home);
        fill_but(&home, room * 4096);
        let out = lab.csdeploy(&["push", "--backup", "--format", "json"]);
        let seen = snapshot(&home);
        let _ = std::fs::remove_file(home.join("filler"));
        let what = format!("room for {room} pages");
        assert!(
            temps(&seen).is_empty(),
            "{what}: left {:?}\n{out}",
            temps(&seen)
        );
        if out.code == 0 {
            assert!(
                seen.contains_key(".local/state/csdeploy/last-push.json"),
                "{what}: exit 0 without the manifest rollback needs\n{out}"
            );
        }
    }
}
