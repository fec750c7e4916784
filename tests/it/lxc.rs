//! `ansible_connection: lxc` and the Proxmox `pct` connection, against a
//! real running LXC container (see `container.rs`): the tooling is pushed
//! into it and verified there, as the container's session user, through
//! `lxc-attach` on this machine and through `pct exec` on a node reached
//! over ssh, at the cost a push has over ssh.

use std::os::unix::fs::MetadataExt;

use crate::container::{Container, Node};
use crate::harness::{Lab, host, num, tasks, yq};

/// An inventory entry for a container host entered with `lxc-attach`, as
/// `user`.
fn lxc_host(name: &str, container: &str, user: &str) -> String {
    format!(
        "    {name}:\n      ansible_connection: lxc\n      ansible_lxc_host: {}\n      ansible_become: true\n      ansible_become_method: su\n      ansible_become_user: {user}\n",
        yq(container)
    )
}

/// An inventory entry for a container host on a Proxmox node, as `user`.
fn pct_host(name: &str, node: &Node, vmid: &str, user: &str) -> String {
    format!(
        "    {name}:\n      ansible_connection: community.proxmox.proxmox_pct_remote\n      ansible_host: 127.0.0.1\n      ansible_port: {}\n      ansible_user: root\n      proxmox_vmid: {vmid}\n      ansible_become: true\n      ansible_become_method: su\n      ansible_become_user: {user}\n",
        node.port
    )
}

fn owner(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .uid()
}

/// Every verification check of a host's report passed (and there were some).
#[track_caller]
fn verified(report: &serde_json::Value, name: &str) {
    let checks: Vec<&serde_json::Value> = tasks(host(report, name))
        .iter()
        .filter_map(|t| t["checks"].as_array())
        .flatten()
        .collect();
    assert!(checks.len() > 3, "{name}: no verification\n{report:#}");
    for c in checks {
        assert_eq!(c["status"], "pass", "{name}: {c}");
    }
}

#[test]
fn push_verify_into_a_real_container_through_lxc_and_pct_as_its_users() {
    let Some(ct) = Container::start(&["claude", "anna", "bert"]) else {
        return;
    };
    let lab = Lab::new().hosts(1).build();
    let node = Node::start(&lab, true);
    let mut inventory = String::from("all:\n  hosts:\n");
    inventory.push_str(&lab.host_entry_yaml(lab.host_info("host1"), 4));
    inventory.push_str(&lxc_host("viaLxc", &ct.name, "claude"));
    // Two containers' worth of hosts on one node: one master between them.
    inventory.push_str(&pct_host("viaPct", &node, &ct.name, "anna"));
    inventory.push_str(&pct_host("viaPct2", &node, &ct.name, "bert"));
    lab.write_inventory(&inventory);

    let out = lab.csdeploy(&["push", "--verify", "--format", "json"]);
    out.assert_exit(0);
    let report = out.json();
    // One command each: entering the container and becoming its user are
    // proven inside it, at no command of their own.
    let over_ssh = num(host(&report, "host1"), "remote_commands");
    assert_eq!(over_ssh, 1, "{out}");
    for (name, user) in [
        ("viaLxc", "claude"),
        ("viaPct", "anna"),
        ("viaPct2", "bert"),
    ] {
        let h = host(&report, name);
        assert_eq!(h["status"], "changed", "{name}\n{out}");
        assert_eq!(num(h, "remote_commands"), over_ssh, "{name}\n{out}");
        verified(&report, name);
        // Deployed in the user's own home in the container, owned by them.
        let home = ct.home(user);
        let launcher = home.join(".claude/bin/claude-session");
        assert!(
            launcher.is_file(),
            "{name}: no launcher in {}",
            home.display()
        );
        for path in [
            launcher.as_path(),
            &home.join(".claude"),
            &home.join(".claude/bin"),
        ] {
            assert_eq!(owner(path), ct.uid(user), "{name}: {}", path.display());
        }
    }
    // Nothing landed in root's home in the container.
    assert!(!ct.rootfs().join("root/.claude").exists());
    // The pct path ran pct's own argument form; one ssh login for both
    // containers of the node.
    let calls = node.pct_calls();
    assert!(
        !calls.is_empty() && calls.iter().all(|c| *c == format!("exec {} --", ct.name)),
        "{calls:?} {}",
        ct.name
    );
    assert_eq!(
        node.logins(),
        1,
        "{}",
        std::fs::read_to_string(&node.sshd_log).unwrap()
    );

    // Nothing to change: one command each, as over ssh.
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(0);
    let report = out.json();
    for name in ["host1", "viaLxc", "viaPct", "viaPct2"] {
        let h = host(&report, name);
        assert_eq!(h["status"], "ok", "{name}\n{out}");
        assert_eq!(num(h, "remote_commands"), 1, "{name}\n{out}");
    }
    // A verification alone: one command each, as over ssh.
    let out = lab.csdeploy(&["verify", "--format", "json"]);
    out.assert_exit(0);
    let report = out.json();
    for name in ["host1", "viaLxc", "viaPct", "viaPct2"] {
        let h = host(&report, name);
        assert_eq!(h["status"], "pass", "{name}\n{out}");
        assert_eq!(num(h, "remote_commands"), 1, "{name}\n{out}");
    }
}

#[test]
fn a_node_without_pct_is_entered_with_lxc_attach() {
    let Some(ct) = Container::start(&["claude"]) else {
        return;
    };
    let lab = Lab::new().hosts(1).build();
    let node = Node::start(&lab, false);
    lab.write_inventory(&format!(
        "all:\n  hosts:\n{}",
        pct_host("ct", &node, &ct.name, "claude")
    ));
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(0);
    assert_eq!(host(&out.json(), "ct")["status"], "changed", "{out}");
    assert!(node.pct_calls().is_empty());
    let launcher = ct.home("claude").join(".claude/bin/claude-session");
    assert_eq!(owner(&launcher), ct.uid("claude"));
}

#[test]
fn a_stopped_or_unknown_container_is_unreachable_while_the_others_succeed() {
    let Some(running) = Container::start(&["claude"]) else {
        return;
    };
    let stopped = Container::create(&["claude"]).unwrap();
    let lab = Lab::new().hosts(1).local(true).build();
    let node = Node::start(&lab, true);
    let mut inventory = String::from("all:\n  hosts:\n");
    inventory.push_str(&lab.host_entry_yaml(lab.host_info("local"), 4));
    inventory.push_str(&lxc_host("up", &running.name, "claude"));
    inventory.push_str(&lxc_host("down", &stopped.name, "claude"));
    inventory.push_str(&lxc_host("nosuch", "csdeploy-no-such-container", "claude"));
    inventory.push_str(&pct_host("pctDown", &node, &stopped.name, "claude"));
    inventory.push_str(&pct_host("pctNoSuch", &node, "999999", "claude"));
    // A running container, but no such user in it: su says so.
    inventory.push_str(&lxc_host("noUser", &running.name, "nobody-here"));
    lab.write_inventory(&inventory);
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(3);
    let report = out.json();
    for name in ["local", "up"] {
        assert_eq!(host(&report, name)["status"], "changed", "{name}\n{out}");
    }
    for (name, says) in [
        ("down", format!("lxc-start -n {}", stopped.name)),
        (
            "nosuch",
            "cannot enter the LXC container `csdeploy-no-such-container`".into(),
        ),
        ("pctDown", format!("pct start {}", stopped.name)),
        (
            "pctNoSuch",
            "cannot enter container 999999 on the node".into(),
        ),
        ("noUser", "cannot become `nobody-here` with su".into()),
    ] {
        let h = host(&report, name);
        assert_eq!(h["status"], "unreachable", "{name}\n{out}");
        let error = h["error"].as_str().unwrap_or_default();
        assert!(error.contains(&says), "{name}: {error}");
        // The one command ran, and stopped at the way in.
        assert_eq!(num(h, "remote_commands"), 1, "{name}");
    }

    // No lxc-attach on this machine: the lxc hosts say so, the others go on.
    let path = lab.path_without("lxc", |n| n.starts_with("lxc-"));
    lab.write_inventory(&format!(
        "all:\n  hosts:\n{}{}",
        lab.host_entry_yaml(lab.host_info("local"), 4),
        lxc_host("up", &running.name, "claude")
    ));
    let out = lab.csdeploy_meanwhile(&["push", "--format", "json"], &[("PATH", &path)], |_| {});
    out.assert_exit(3);
    let report = out.json();
    assert_eq!(host(&report, "local")["status"], "ok", "{out}");
    assert_eq!(host(&report, "up")["status"], "unreachable", "{out}");
    // lxc-attach could not start: no command ran.
    assert_eq!(num(host(&report, "up"), "remote_commands"), 0, "{out}");
    let error = host(&report, "up")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("lxc-attach is not installed"), "{error}");
}

/// What runs on this machine whose command line mentions `needle`: a
/// container's processes are among them, seen from outside.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != me.as_str())
        .filter_map(|e| {
            let c = std::fs::read(e.path().join("cmdline")).ok()?;
            Some(String::from_utf8_lossy(&c).replace('\0', " "))
        })
        .filter(|c| c.contains(needle))
        .collect()
}

fn left_running(needle: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_ends_what_runs_in_the_containers_too() {
    let Some(ct) = Container::start(&["claude", "anna"]) else {
        return;
    };
    let lab = Lab::new().hosts(1).build();
    let node = Node::start(&lab, true);
    lab.write_inventory(&format!(
        "all:\n  hosts:\n{}{}",
        lxc_host("viaLxc", &ct.name, "claude"),
        pct_host("viaPct", &node, &ct.name, "anna")
    ));
    let marker = crate::harness::unique("csdt-wait");
    let play = lab.write_file(
        "wait.yml",
        &format!(
            "- hosts: all\n  tasks:\n    - name: wait\n      command: {{argv: [sh, -c, 'sleep 300; :', {marker}]}}\n"
        ),
    );
    let needle = marker.clone();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let saw = seen.clone();
    let out = lab.csdeploy_meanwhile(
        &["run", play.to_str().unwrap(), "--format", "json"],
        &[],
        move |pid| {
            // Both hosts' commands run in the container: interrupt then.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while processes_mentioning(&needle).len() < 2 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            saw.store(
                processes_mentioning(&needle).len() >= 2,
                std::sync::atomic::Ordering::SeqCst,
            );
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        },
    );
    out.assert_exit(130);
    assert!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        "the commands never ran in the container\n{out}"
    );
    assert!(out.elapsed < std::time::Duration::from_secs(60), "{out}");
    assert_eq!(left_running(&marker), Vec::<String>::new(), "{out}");
    // Nor anything that entered the container for them.
    let entering = format!("-n {} --", ct.name);
    let entering_pct = format!("exec {} --", ct.name);
    // They end as their connection does, which takes a while on a loaded
    // machine: the same grace as the command's own processes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let left = loop {
        let left: Vec<String> = processes_mentioning(&ct.name)
            .into_iter()
            .filter(|c| c.contains(&entering) || c.contains(&entering_pct))
            .collect();
        if left.is_empty() || std::time::Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(left, Vec::<String>::new(), "{out}");
}

#[test]
fn check_diff_backups_and_the_day_two_commands_work_through_containers() {
    let Some(ct) = Container::start(&["claude", "anna"]) else {
        return;
    };
    let lab = Lab::new().hosts(1).build();
    let node = Node::start(&lab, true);
    lab.write_inventory(&format!(
        "all:\n  hosts:\n{}{}{}",
        lab.host_entry_yaml(lab.host_info("host1"), 4),
        lxc_host("viaLxc", &ct.name, "claude"),
        pct_host("viaPct", &node, &ct.name, "anna")
    ));
    lab.csdeploy(&["push"]).assert_exit(0);
    // A change in each home: --check --diff shows it and changes nothing.
    let conf = |home: &std::path::Path| home.join(".claude/bin/session.conf");
    for home in [ct.home("claude"), ct.home("anna"), lab.home("host1")] {
        std::fs::write(conf(&home), "max_sessions=99\n").unwrap();
    }
    let out = lab.csdeploy(&["push", "--check", "--diff", "--format", "json"]);
    out.assert_exit(0);
    let report = out.json();
    for (name, home) in [
        ("host1", lab.home("host1")),
        ("viaLxc", ct.home("claude")),
        ("viaPct", ct.home("anna")),
    ] {
        let h = host(&report, name);
        assert_eq!(h["status"], "changed", "{name}\n{out}");
        assert_eq!(num(h, "remote_commands"), 1, "{name}\n{out}");
        assert!(
            h.to_string().contains("max_sessions=99"),
            "{name}: no diff\n{out}"
        );
        assert_eq!(
            std::fs::read_to_string(conf(&home)).unwrap(),
            "max_sessions=99\n"
        );
    }
    // A push with backups, then rollback: the change comes back, in the
    // container as over ssh.
    lab.csdeploy(&["push", "--backup"]).assert_exit(0);
    for home in [ct.home("claude"), ct.home("anna"), lab.home("host1")] {
        assert_ne!(
            std::fs::read_to_string(conf(&home)).unwrap(),
            "max_sessions=99\n"
        );
    }
    lab.csdeploy(&["rollback"]).assert_exit(0);
    for home in [ct.home("claude"), ct.home("anna"), lab.home("host1")] {
        assert_eq!(
            std::fs::read_to_string(conf(&home)).unwrap(),
            "max_sessions=99\n"
        );
        assert_eq!(owner(&conf(&home)), owner(&home), "{}", home.display());
    }
    // The day-two commands cost what they cost over ssh.
    for command in ["doctor", "sessions"] {
        let out = lab.csdeploy(&[command, "--format", "json"]);
        let report = out.json();
        let over_ssh = num(host(&report, "host1"), "remote_commands");
        assert_eq!(over_ssh, 1, "{command}\n{out}");
        for name in ["viaLxc", "viaPct"] {
            let h = host(&report, name);
            assert_eq!(
                h["status"],
                host(&report, "host1")["status"],
                "{command} {name}\n{out}"
            );
            assert_eq!(
                num(h, "remote_commands"),
                over_ssh,
                "{command} {name}\n{out}"
            );
        }
    }
}

#[test]
fn a_node_that_cannot_be_reached_fails_each_of_its_containers_with_its_error() {
    let lab = Lab::new().local(true).build();
    let port = crate::harness::closed_port();
    let entry = |name: &str, vmid: u32| {
        format!(
            "    {name}:\n      ansible_connection: pct\n      ansible_host: 127.0.0.1\n      ansible_port: {port}\n      proxmox_vmid: {vmid}\n"
        )
    };
    lab.write_inventory(&format!(
        "all:\n  hosts:\n{}{}{}",
        lab.host_entry_yaml(lab.host_info("local"), 4),
        entry("ct122", 122),
        entry("ct123", 123)
    ));
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(3);
    let report = out.json();
    assert_eq!(host(&report, "local")["status"], "changed", "{out}");
    let errors: Vec<&str> = ["ct122", "ct123"]
        .iter()
        .map(|name| {
            let h = host(&report, name);
            assert_eq!(h["status"], "unreachable", "{name}\n{out}");
            h["error"].as_str().unwrap()
        })
        .collect();
    assert!(errors[0].contains("Connection refused"), "{out}");
    assert_eq!(errors[0], errors[1], "one node, one connection, one error");
}

#[test]
fn the_inventory_shows_how_each_container_is_entered_and_as_whom() {
    let lab = Lab::new().build();
    lab.write_inventory(
        "all:\n  hosts:\n    web: {ansible_connection: lxc, ansible_become: true, ansible_become_user: claude, ansible_become_method: su}\n    lxc122: {ansible_connection: community.proxmox.proxmox_pct_remote, ansible_host: pve1, ansible_user: root, proxmox_vmid: '122'}\n",
    );
    let out = lab.csdeploy(&["inventory", "--format", "json"]);
    out.assert_exit(0);
    let hosts = &out.json()["hosts"];
    assert_eq!(
        hosts["web"]["connection"],
        serde_json::json!({"type": "lxc", "container": "web"})
    );
    assert_eq!(
        hosts["web"]["become"],
        serde_json::json!({"method": "su", "user": "claude"})
    );
    assert_eq!(
        hosts["lxc122"]["connection"],
        serde_json::json!({"type": "pct", "vmid": 122, "host": "pve1", "port": null, "user": "root", "key_file": null})
    );
    assert_eq!(hosts["lxc122"]["become"], serde_json::Value::Null);
}
