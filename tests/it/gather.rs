//! The shell gather and its fallback: a host whose `stat` is not GNU stat
//! still gets a correct push, the agent gathering in the same command.

use crate::harness::Lab;

#[test]
fn push_falls_back_to_the_python_gather_without_gnu_stat() {
    let lab = Lab::new().local(true).build();
    let home = lab.home("local");
    // A `stat` that, like a non-GNU one, does not understand --printf.
    let fake = lab.root.join("fake-bin");
    std::fs::create_dir_all(&fake).unwrap();
    let stat = fake.join("stat");
    std::fs::write(
        &stat,
        "#!/bin/sh\necho 'stat: unrecognized option --printf' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&stat, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    lab.write_inventory(&format!(
        "all:\n  hosts:\n    local:\n      ansible_connection: local\n      environment:\n        HOME: {}\n        PATH: {}:/usr/bin:/bin\n",
        home.display(),
        fake.display()
    ));
    let first = lab.csdeploy(&["push", "--format", "json"]);
    first.assert_exit(0);
    let doc = first.json();
    assert_eq!(doc["hosts"][0]["changed"], 10, "{doc}");
    // The shell gather ran and was refused; the agent gathered and applied,
    // all in the one command.
    assert_eq!(doc["hosts"][0]["remote_commands"], 1, "{doc}");

    let again = lab.csdeploy(&["push", "--format", "json"]);
    again.assert_exit(0);
    let doc = again.json();
    assert_eq!(
        doc["hosts"][0]["changed"], 0,
        "a blind stat must not look like missing files: {doc}"
    );
    assert_eq!(doc["hosts"][0]["remote_commands"], 1, "{doc}");
}

#[test]
fn over_ssh_without_any_stat_the_agent_gathers_in_the_same_command() {
    let lab = Lab::new().hosts(1).build();
    let path = lab.path_without("stat", |name| name == "stat");
    let mut inv = String::from("all:\n  hosts:\n");
    inv.push_str(&lab.host_entry_yaml(&lab.hosts[0], 4));
    inv.push_str(&format!("        PATH: {}\n", path.display()));
    lab.write_inventory(&inv);
    for (args, changed) in [
        (&["push", "--check"][..], 10),
        (&["push"][..], 10),
        (&["push"][..], 0),
        (&["push", "--diff"][..], 0),
    ] {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        let out = lab.csdeploy(&args);
        out.assert_exit(0);
        let doc = out.json();
        assert_eq!(doc["hosts"][0]["changed"], changed, "{args:?}: {doc}");
        assert_eq!(doc["hosts"][0]["remote_commands"], 1, "{args:?}: {doc}");
    }
}
