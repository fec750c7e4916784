//! `ansible_become` over plain ssh, on a real sshd: root logs in and
//! deploys for the user who runs the sessions (sudo and su; and on this
//! machine, `local`), and a login that would need a password to become
//! someone is unreachable, saying what to do, while the others succeed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;

use crate::harness::{Lab, current_uid, host, num, tasks};

/// A user of this machine, created for one test and removed after it.
struct LocalUser {
    name: String,
    home: PathBuf,
    uid: u32,
    _dir: tempfile::TempDir,
}

impl LocalUser {
    /// `None` (and why, printed) where users cannot be created.
    fn create(tag: &str) -> Option<LocalUser> {
        if current_uid() != 0 {
            crate::container::skip("creating users and becoming them needs root");
            return None;
        }
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("csdt{tag}{}x{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("csdeploy-user-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = dir.path().join(&name);
        let out = Command::new("useradd")
            // `*`: no password, but not locked (sshd refuses a locked
            // account's key logins).
            .args(["-m", "-p", "*", "-s", "/bin/sh", "-d"])
            .arg(&home)
            .arg(&name)
            .output()
            .expect("run useradd");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let uid = std::fs::metadata(&home).unwrap().uid();
        Some(LocalUser {
            name,
            home,
            uid,
            _dir: dir,
        })
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

fn entry(name: &str, port: u16, login: &str, become_: &str, method: &str) -> String {
    format!(
        "    {name}:\n      ansible_host: 127.0.0.1\n      ansible_port: {port}\n      ansible_user: {login}\n      ansible_become: true\n      ansible_become_user: {become_}\n      ansible_become_method: {method}\n"
    )
}

#[test]
fn become_deploys_for_another_user_on_a_real_sshd_host() {
    if Command::new("sudo").arg("--version").output().is_err() {
        crate::container::skip("sudo is not installed");
        return;
    }
    let (Some(anna), Some(bert), Some(carl)) = (
        LocalUser::create("a"),
        LocalUser::create("b"),
        LocalUser::create("c"),
    ) else {
        return;
    };
    let lab = Lab::new().hosts(1).build();
    // sshd reads authorized_keys as the user logging in: anna must reach it.
    std::fs::set_permissions(&lab.root, std::fs::Permissions::from_mode(0o711)).unwrap();
    let port = lab.port("host1");
    let root = crate::harness::current_user();
    lab.write_inventory(&format!(
        "all:\n  hosts:\n{}{}{}    onThisMachine:\n      ansible_connection: local\n      ansible_become: true\n      ansible_become_user: {}\n",
        entry("bySudo", port, &root, &anna.name, "sudo"),
        entry("bySu", port, &root, &bert.name, "su"),
        // anna may not run anything as bert: sudo would ask her password.
        entry("noRights", port, &anna.name, &bert.name, "sudo"),
        carl.name,
    ));
    let out = lab.csdeploy(&["push", "--verify", "--format", "json"]);
    out.assert_exit(3);
    let report = out.json();
    for (name, user) in [("bySudo", &anna), ("bySu", &bert), ("onThisMachine", &carl)] {
        let h = host(&report, name);
        assert_eq!(h["status"], "changed", "{name}\n{out}");
        assert_eq!(num(h, "remote_commands"), 1, "{name}\n{out}");
        let checks: Vec<&serde_json::Value> = tasks(h)
            .iter()
            .filter_map(|t| t["checks"].as_array())
            .flatten()
            .collect();
        assert!(checks.len() > 3, "{name}: no verification\n{out}");
        for c in &checks {
            assert_eq!(c["status"], "pass", "{name}: {c}");
        }
        // The ownership check names the become user, not the login.
        let isolation = checks
            .iter()
            .find(|c| c["id"] == "directory-isolation")
            .unwrap_or_else(|| panic!("{name}: no directory-isolation check\n{out}"));
        let expected = isolation["expected"].as_str().unwrap_or_default();
        assert!(
            expected.contains(&format!("owned by {} (uid {}", user.name, user.uid)),
            "{name}: {expected}"
        );
        // In the user's own home (HOME is theirs), owned by them.
        for rel in [".claude", ".claude/bin", ".claude/bin/claude-session"] {
            let path = user.home.join(rel);
            let md = std::fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("{name}: {}: {e}\n{out}", path.display()));
            assert_eq!(md.uid(), user.uid, "{name}: {}", path.display());
        }
    }
    // Rerun, verification and the day-two commands: one command each, as
    // over ssh; becoming the user costs none of its own.
    let runs: [&[&str]; 4] = [
        &["push"],
        &["verify", "--wait", "2"],
        &["sessions"],
        &["doctor"],
    ];
    for args in runs {
        let command = args[0];
        let out = lab.csdeploy(&[args, &["--format", "json"]].concat());
        let report = out.json();
        for name in ["bySudo", "bySu", "onThisMachine"] {
            let h = host(&report, name);
            assert_ne!(h["status"], "unreachable", "{command} {name}\n{out}");
            assert_eq!(num(h, "remote_commands"), 1, "{command} {name}\n{out}");
        }
    }
    let h = host(&report, "noRights");
    assert_eq!(h["status"], "unreachable", "{out}");
    // The one command ran, and stopped at sudo.
    assert_eq!(num(h, "remote_commands"), 1);
    let error = h["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("cannot become `{}` with sudo", bert.name))
            && error.contains("NOPASSWD"),
        "{error}"
    );
}

/// A sudoers rule for one test, removed after it.
struct SudoRule(PathBuf);

impl SudoRule {
    fn add(user: &str, command: &std::path::Path) -> SudoRule {
        let path = PathBuf::from("/etc/sudoers.d").join(user);
        std::fs::write(
            &path,
            format!("{user} ALL=(root) NOPASSWD: {}\n", command.display()),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        SudoRule(path)
    }
}

impl Drop for SudoRule {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A Proxmox node where the login is not root: pct runs as `sudo -n
/// /path/to/pct exec ...`, as the Ansible plugin runs it, which needs a
/// NOPASSWD rule for pct; without one the host is unreachable, saying so.
#[test]
fn a_node_login_other_than_root_runs_pct_with_sudo() {
    let Some(dana) = LocalUser::create("d") else {
        return;
    };
    let Some(ct) = crate::container::Container::start(&["claude"]) else {
        return;
    };
    let lab = Lab::new().hosts(1).build();
    std::fs::set_permissions(&lab.root, std::fs::Permissions::from_mode(0o711)).unwrap();
    let node = crate::container::Node::start(&lab, true);
    lab.write_inventory(&format!(
        "all:\n  hosts:\n    ct:\n      ansible_connection: pct\n      ansible_host: 127.0.0.1\n      ansible_port: {}\n      ansible_user: {}\n      proxmox_vmid: {}\n      ansible_become: true\n      ansible_become_method: su\n      ansible_become_user: claude\n",
        node.port, dana.name, ct.name
    ));
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(3);
    let report = out.json();
    assert_eq!(host(&report, "ct")["status"], "unreachable", "{out}");
    assert_eq!(num(host(&report, "ct"), "remote_commands"), 1, "{out}");
    let error = host(&report, "ct")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("wants a password") && error.contains("NOPASSWD"),
        "{error}"
    );

    let _rule = SudoRule::add(&dana.name, &node.shim());
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(0);
    assert_eq!(host(&out.json(), "ct")["status"], "changed", "{out}");
    let launcher = ct.home("claude").join(".claude/bin/claude-session");
    assert_eq!(
        std::fs::metadata(&launcher).unwrap().uid(),
        ct.uid("claude")
    );
    assert!(!node.pct_calls().is_empty());
}
