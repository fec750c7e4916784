//! `csdeploy inventory`: hosts, groups and resolved variables, as Ansible resolves them.

use crate::harness::{Lab, closed_port, current_user, host, yq};

const NESTED: &str = r#"
all:
  vars:
    max_sessions: 5
    color: all
  hosts:
    local:
      ansible_connection: local
  children:
    lxc:
      vars:
        color: lxc
      hosts:
        lxc122:
          ansible_host: lxc122
          max_sessions: 3
      children:
        deep:
          vars:
            color: deep
          hosts:
            lxc123:
              ansible_port: 2222
"#;

#[test]
fn inventory_prints_hosts_groups_and_resolved_vars() {
    let lab = Lab::new().build();
    lab.write_inventory(NESTED);
    let out = lab.csdeploy(&["inventory", "--format", "json"]);
    out.assert_exit(0);
    let doc = out.json();
    let hosts = &doc["hosts"];
    assert_eq!(hosts["local"]["connection"]["type"], "local");
    assert_eq!(hosts["lxc122"]["connection"]["host"], "lxc122");
    assert_eq!(hosts["lxc123"]["connection"]["port"], 2222);
    // Host vars win over group vars; deeper groups win over shallower ones.
    assert_eq!(hosts["lxc122"]["vars"]["max_sessions"], 3);
    assert_eq!(hosts["lxc122"]["vars"]["color"], "lxc");
    assert_eq!(hosts["lxc123"]["vars"]["color"], "deep");
    assert_eq!(hosts["lxc123"]["vars"]["max_sessions"], 5);
    assert_eq!(hosts["local"]["vars"]["claude_home"], "~/.claude");
    assert_eq!(
        hosts["lxc123"]["groups"],
        serde_json::json!(["all", "lxc", "deep"])
    );
    assert_eq!(
        doc["groups"]["lxc"]["hosts"],
        serde_json::json!(["lxc122", "lxc123"])
    );

    let limited = lab.csdeploy(&["inventory", "--format", "json", "--limit", "lxc:!deep"]);
    limited.assert_exit(0);
    let names: Vec<String> = limited.json()["hosts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(names, ["lxc122"]);

    let text = lab.csdeploy(&["inventory"]);
    text.assert_exit(0);
    assert!(
        text.stdout.contains("lxc123:") && text.stdout.contains("color: deep"),
        "{}",
        text.stdout
    );
}

#[test]
fn inventory_hides_secret_values() {
    let lab = Lab::new().build();
    lab.write_inventory(
        "all:\n  vars:\n    api_token: tok-4711\n  hosts:\n    a:\n      db_password: hunter2\n      vault_become_pass: s3cret\n      color: blue\n",
    );
    for format in ["text", "json"] {
        let out = lab.csdeploy(&["inventory", "--format", format]);
        out.assert_exit(0);
        for secret in ["tok-4711", "hunter2", "s3cret"] {
            assert!(
                !out.stdout.contains(secret),
                "{format}: {secret} shown\n{out}"
            );
        }
        assert!(out.stdout.contains("blue"), "{out}");
        assert_eq!(out.stdout.matches("********").count(), 3, "{out}");
    }
}

#[test]
fn inventory_hides_nested_secrets_and_url_passwords() {
    let lab = Lab::new().build();
    lab.write_inventory(
        "all:\n  hosts:\n    a:\n      sasl_users: {user1: {password: nest-1}}\n      users: [{name: u, password: nest-2}]\n      environment: {PGPASSWORD: nest-3, ANTHROPIC_API_KEY: nest-4}\n      repo: \"ssh://deploy:nest-5@git.example/x\"\n      color: blue\n",
    );
    for format in ["text", "json"] {
        let out = lab.csdeploy(&["inventory", "--format", format]);
        out.assert_exit(0);
        for n in 1..=5 {
            let secret = format!("nest-{n}");
            assert!(
                !out.stdout.contains(&secret),
                "{format}: {secret} shown\n{out}"
            );
        }
        assert!(
            out.stdout.contains("blue") && out.stdout.contains("git.example"),
            "{out}"
        );
    }
}

#[test]
fn without_an_inventory_file_the_built_in_one_is_used() {
    // The lab's directory has no inventory/hosts.yml: an installed csdeploy run anywhere.
    let lab = Lab::new().build();
    let out = lab.csdeploy_raw(&["inventory", "--format", "json"]);
    out.assert_exit(0);
    let doc = out.json();
    assert_eq!(doc["hosts"]["local"]["connection"]["type"], "local");
    // A template that works on any machine: LXC 122 is an example to enable.
    assert_eq!(doc["hosts"].as_object().unwrap().len(), 1, "{doc:#}");
    // An inventory named on the command line must exist.
    let missing = lab.csdeploy_raw(&["inventory", "-i", "nope.yml"]);
    missing.assert_exit(2);
    assert!(missing.stderr.contains("nope.yml"), "{}", missing.stderr);
}

#[test]
fn a_closed_stdout_is_not_a_crash() {
    let lab = Lab::new().build();
    lab.write_inventory(NESTED);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_csdeploy"))
        .args(["inventory", "-i"])
        .arg(&lab.inventory)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader went away, like `| head -0`
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

const MERGED: &str = r#"
all:
  hosts:
    web1: &common {ansible_port: 2222, max_sessions: 2}
    web2: {<<: *common, ansible_user: deploy}
    web3:
      <<: [{max_sessions: 7}, *common]
      ansible_port: 2200
"#;

#[test]
fn inventory_applies_yaml_merge_keys() {
    let lab = Lab::new().build();
    lab.write_inventory(MERGED);
    let out = lab.csdeploy(&["inventory", "--format", "json", "--host", "web2"]);
    out.assert_exit(0);
    let web2 = &out.json()["hosts"]["web2"];
    assert_eq!(web2["connection"]["port"], 2222, "{out}");
    assert_eq!(web2["connection"]["user"], "deploy", "{out}");
    assert_eq!(web2["vars"]["max_sessions"], 2, "{out}");
    assert!(web2["vars"].get("<<").is_none(), "{out}");

    // List form: the first merged mapping wins; the host's own keys win over all.
    let out = lab.csdeploy(&["inventory", "--format", "json", "--host", "web3"]);
    out.assert_exit(0);
    let web3 = &out.json()["hosts"]["web3"];
    assert_eq!(web3["connection"]["port"], 2200, "{out}");
    assert_eq!(web3["vars"]["max_sessions"], 7, "{out}");
}

#[test]
fn inventory_with_a_repeated_key_is_rejected_with_location() {
    let lab = Lab::new().build();
    lab.write_inventory(
        "all:\n  hosts:\n    web1:\n      max_sessions: 2\n      max_sessions: 3\n    web2:\n    web1:\n",
    );
    let out = lab.csdeploy(&["inventory"]);
    out.assert_exit(2);
    assert!(
        out.stderr.contains(
            "inventory.yml:5:7: all.hosts.web1.max_sessions: duplicate key `max_sessions` (first at line 4)"
        ),
        "{out}"
    );
    // A key set over a merged one is no repeat.
    lab.write_inventory(MERGED);
    lab.csdeploy(&["inventory"]).assert_exit(0);
}

#[test]
fn inventory_shows_the_inherit_defaults_and_the_policy_push_would_refuse() {
    let lab = Lab::new().build();
    lab.write_inventory(concat!(
        "all:\n",
        "  hosts:\n",
        "    plain:\n",
        "  children:\n",
        "    sharing:\n",
        "      vars:\n",
        "        inherit_link: \"settings.json todos\"\n",
        "      hosts:\n",
        "        lxc9:\n",
    ));
    let out = lab.csdeploy(&["inventory", "--format", "json"]);
    // Showing what the inventory says is not deploying it.
    out.assert_exit(0);
    let hosts = &out.json()["hosts"];
    assert_eq!(hosts["plain"]["vars"]["inherit_copy"], "", "{out}");
    assert_eq!(
        hosts["plain"]["vars"]["inherit_link"],
        "settings.json CLAUDE.md agents commands skills output-styles keybindings.json",
        "{out}"
    );
    assert_eq!(hosts["lxc9"]["vars"]["inherit_link"], "settings.json todos");

    // Deploying it is refused where the group sets it; nothing is contacted.
    let out = lab.csdeploy(&["push", "--check", "--host", "lxc9"]);
    out.assert_exit(2);
    assert!(
        out.stderr.contains(
            "inventory.yml:7:9: all.children.sharing.vars.inherit_link: inherit_link names `todos`, which is per-session state"
        ),
        "{out}"
    );
}

#[test]
fn inventory_reads_group_vars_and_host_vars_beside_it() {
    let lab = Lab::new().build();
    lab.write_inventory(
        "all:\n  vars:\n    color: file\n  children:\n    web:\n      hosts:\n        w1:\n        w2:\n",
    );
    lab.write_file("group_vars/all.yml", "color: all-file\nmax_sessions: 2\n");
    lab.write_file("group_vars/web/10-users.yml", "ansible_user: deploy\n");
    lab.write_file("host_vars/w2", "ansible_port: 2222\n");
    let out = lab.csdeploy(&["inventory", "--format", "json"]);
    out.assert_exit(0);
    let hosts = &out.json()["hosts"];
    assert_eq!(hosts["w1"]["vars"]["color"], "all-file");
    assert_eq!(hosts["w1"]["connection"]["user"], "deploy");
    assert_eq!(hosts["w2"]["connection"]["port"], 2222);
    assert_eq!(hosts["w1"]["connection"]["port"], serde_json::Value::Null);

    // A bad value is reported in the file that set it, at its line.
    lab.write_file("host_vars/w2", "# port\nansible_port: lots\n");
    let out = lab.csdeploy(&["inventory"]);
    out.assert_exit(2);
    assert!(
        out.stderr
            .contains("host_vars/w2:2:1: ansible_port: expected a port number"),
        "{out}"
    );
}

#[test]
fn what_csdeploy_cannot_do_as_ansible_would_is_refused_where_it_is_set() {
    let lab = Lab::new().build();
    for (vars, key, says) in [
        (
            "ansible_password: pw",
            "ansible_password",
            "never types an ssh password",
        ),
        (
            "ansible_ssh_pass: pw",
            "ansible_ssh_pass",
            "never types an ssh password",
        ),
        (
            "ansible_become_password: pw",
            "ansible_become_password",
            "never types a password for sudo or su",
        ),
        (
            "ansible_become_method: doas\n      ansible_become: true",
            "ansible_become_method",
            "sudo or su, not `doas`",
        ),
        (
            "ansible_ssh_common_args: '-o ProxyJump=bastion -f'",
            "ansible_ssh_common_args",
            "-f makes no sense",
        ),
        (
            "ansible_host: \"{{ inventory_hostname | upper }}.example.com\"",
            "ansible_host",
            "host a: `{{ inventory_hostname | upper }}`: csdeploy evaluates only `{{ name }}`, no filters",
        ),
        (
            "ansible_user: \"{{ lookup('env', 'USER') }}\"",
            "ansible_user",
            "no filters, lookups or expressions",
        ),
        (
            "claude_home: \"{{ home }}/.claude\"",
            "claude_home",
            "host a: `home` is undefined. csdeploy needs this value itself",
        ),
        (
            "environment: {HOME: \"{% if x %}/h{% endif %}\"}",
            "environment",
            "`{% ... %}`",
        ),
    ] {
        lab.write_inventory(&format!("all:\n  hosts:\n    a:\n      {vars}\n"));
        let out = lab.csdeploy(&["inventory"]);
        out.assert_exit(2);
        let at = format!("inventory.yml:4:7: all.hosts.a.{key}: ");
        assert!(
            out.stderr.contains(&at) && out.stderr.contains(says),
            "{vars}\n{out}"
        );
    }
    // Set to nothing, or false, they change nothing, and neither do ssh
    // options for a local connection.
    lab.write_inventory(
        "all:\n  hosts:\n    a:\n      ansible_become: false\n      ansible_password: ~\n      ansible_ssh_extra_args: ''\n    b:\n      ansible_connection: local\n      ansible_ssh_common_args: -o X=y\n",
    );
    lab.csdeploy(&["inventory"]).assert_exit(0);
}

#[test]
fn an_ini_inventory_is_read_as_ansibles_ini_plugin_reads_it() {
    let lab = Lab::new().build();
    let path = lab.write_file(
        "inv/hosts",
        "lone ansible_connection=local\n[web]\nw[1:2] ansible_port=2222 tag=0755\n[web:vars]\nmax_sessions=2\nansible_user = deploy\n",
    );
    lab.write_file("inv/group_vars/web.yml", "color: blue\n");
    let inventory = path.to_str().unwrap();
    let out = lab.csdeploy_raw(&["inventory", "-i", inventory, "--format", "json"]);
    out.assert_exit(0);
    let hosts = &out.json()["hosts"];
    assert_eq!(hosts["lone"]["connection"]["type"], "local");
    assert_eq!(
        hosts["lone"]["groups"],
        serde_json::json!(["all", "ungrouped"])
    );
    assert_eq!(hosts["w2"]["connection"]["port"], 2222);
    assert_eq!(hosts["w2"]["connection"]["user"], "deploy");
    assert_eq!(hosts["w1"]["vars"]["max_sessions"], 2);
    assert_eq!(hosts["w1"]["vars"]["tag"], "0755");
    assert_eq!(hosts["w1"]["vars"]["color"], "blue");

    // A value is placed at its line and column; one csdeploy cannot be sure
    // how Ansible would read is refused, with how to write it.
    lab.write_file(
        "inv/hosts",
        "[web]\nw1 ansible_port=x2\n[web:vars]\nports=80,443\n",
    );
    let out = lab.csdeploy_raw(&["inventory", "-i", inventory]);
    out.assert_exit(2);
    assert!(
        out.stderr.contains(
            "inv/hosts:4:1: (INI inventory): ports: csdeploy cannot tell how Ansible reads `80,443`"
        ),
        "{out}"
    );
    lab.write_file("inv/hosts", "[web]\nw1 ansible_port=x2\n");
    let out = lab.csdeploy_raw(&["inventory", "-i", inventory]);
    out.assert_exit(2);
    assert!(
        out.stderr
            .contains("inv/hosts:2:4: web.hosts.w1.ansible_port: expected a port number"),
        "{out}"
    );
}

#[test]
fn a_limit_term_that_matches_nothing_warns_and_the_rest_goes_on() {
    let lab = Lab::new().build();
    lab.write_inventory(NESTED);
    let out = lab.csdeploy(&["inventory", "--format", "json", "--limit", "lxc[0],nosuch"]);
    out.assert_exit(0);
    let names: Vec<String> = out.json()["hosts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(names, ["lxc122"]);
    assert!(
        out.stderr
            .contains("warning: --limit: `nosuch` matches no host or group"),
        "{out}"
    );
    let out = lab.csdeploy(&["inventory", "--limit", "nosuch:!lxc"]);
    out.assert_exit(2);
    assert!(out.stderr.contains("matches no host"), "{out}");
}

#[test]
fn a_misspelled_ansible_variable_is_a_warning_naming_the_right_one() {
    let lab = Lab::new().build();
    lab.write_inventory(
        "all:\n  hosts:\n    a:\n      ansible_conection: local\n      ansible_user: me\n",
    );
    lab.write_file("group_vars/all.yml", "ansible_ssh_uesr: ops\n");
    let out = lab.csdeploy(&["inventory"]);
    out.assert_exit(0);
    assert!(
        out.stderr.contains(
            "inventory.yml:4:7: all.hosts.a.ansible_conection: `ansible_conection` is not a variable Ansible knows (did you mean `ansible_connection`?)"
        ),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("group_vars/all.yml:1:1: ansible_ssh_uesr: `ansible_ssh_uesr`")
            && out.stderr.contains("`ansible_ssh_user`?"),
        "{out}"
    );
    assert_eq!(out.stderr.matches("warning").count(), 2, "{out}");
}

#[test]
fn a_limit_file_holds_one_pattern_a_line() {
    let lab = Lab::new().build();
    lab.write_inventory(NESTED);
    let file = lab.write_file("retry.txt", "lxc122\n\n  local  \ndeep:!lxc123\n");
    let limit = format!("@{}", file.display());
    let out = lab.csdeploy(&["inventory", "--format", "json", "--limit", &limit]);
    out.assert_exit(0);
    let names: Vec<String> = out.json()["hosts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    // A line is one pattern, as in Ansible: `deep:!lxc123` names nothing.
    assert_eq!(names, ["local", "lxc122"]);
    assert!(
        out.stderr.contains("`deep:!lxc123` matches no host"),
        "{out}"
    );
    let out = lab.csdeploy(&["inventory", "--limit", "@/nonexistent/retry"]);
    out.assert_exit(2);
    assert!(
        out.stderr
            .contains("cannot read the limit file /nonexistent/retry"),
        "{out}"
    );
}

#[test]
fn a_directory_of_inventory_files_is_read_as_ansible_reads_one() {
    let lab = Lab::new().build();
    lab.write_file(
        "inv/a.yml",
        "all:\n  vars:\n    color: a\n  hosts:\n    lone:\n  children:\n    web:\n      vars:\n        tier: first\n      hosts:\n        w1:\n",
    );
    lab.write_file(
        "inv/b.ini",
        "[web]\nw2\n[web:vars]\ntier=second\n[db]\nlone\n",
    );
    lab.write_file(
        "inv/deep/c.yaml",
        "extra:\n  hosts:\n    w1:\n      ansible_port: 2202\n",
    );
    lab.write_file("inv/group_vars/db.yml", "role: database\n");
    // Ansible skips these; broken, they would fail the load if read.
    for skipped in [
        "README.md",
        "hosts.bak",
        "x.yml~",
        ".hidden.yml",
        "ansible.cfg",
    ] {
        lab.write_file(&format!("inv/{skipped}"), "broken: [\n");
    }
    let dir = lab.root.join("inv").display().to_string();
    let out = lab.csdeploy_raw(&["inventory", "-i", &dir, "--format", "json"]);
    out.assert_exit(0);
    let doc = out.json();
    let hosts = &doc["hosts"];
    let names: Vec<&String> = hosts.as_object().unwrap().keys().collect();
    assert_eq!(names, ["lone", "w1", "w2"], "{out}");
    // The later file's group vars win; a host the first file left
    // ungrouped is in the group the second gives it.
    assert_eq!(hosts["w1"]["vars"]["tier"], "second");
    assert_eq!(hosts["w1"]["connection"]["port"], 2202);
    assert_eq!(hosts["lone"]["groups"], serde_json::json!(["all", "db"]));
    assert_eq!(hosts["lone"]["vars"]["role"], "database");
    assert_eq!(doc["groups"]["ungrouped"]["hosts"], serde_json::json!([]));

    // An error names the file of the directory it is in.
    lab.write_file("inv/b.ini", "[web]\nw2 ansible_port=x\n");
    let out = lab.csdeploy_raw(&["inventory", "-i", &dir]);
    out.assert_exit(2);
    assert!(
        out.stderr.contains("b.ini:2:") && out.stderr.contains("ansible_port"),
        "{out}"
    );
    // A script is what Ansible runs for a dynamic inventory: refused.
    let script = lab.write_file("inv/ec2.py", "#!/bin/sh\necho '{}'\n");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = lab.csdeploy_raw(&["inventory", "-i", &dir]);
    out.assert_exit(2);
    assert!(
        out.stderr.contains("ec2.py") && out.stderr.contains("does not run inventory scripts"),
        "{out}"
    );
}

/// One host entry reached only through `ansible_ssh_common_args`.
fn via_ssh_args(lab: &Lab, name: &str, host_vars: &str, args: &str) -> String {
    format!(
        "    {name}:\n      ansible_host: 127.0.0.1\n{host_vars}      ansible_ssh_common_args: {}\n      environment:\n        HOME: {}\n",
        yq(args),
        yq(&lab.home(name).display().to_string())
    )
}

#[test]
fn ssh_args_from_the_inventory_reach_ssh_as_ansible_passes_them() {
    let lab = Lab::new().hosts(2).servers(2).build();
    let (port1, port2) = (lab.port("host1"), lab.port("host2"));
    // The jump host is named `localhost`, so that ssh can tell it from the
    // target (127.0.0.1): record its key under that name too.
    let known = std::fs::read_to_string(&lab.known_hosts).unwrap();
    let key = known.lines().next().unwrap().split_once(' ').unwrap().1;
    std::fs::write(
        &lab.known_hosts,
        format!("{known}[localhost]:{port1} {key}\n"),
    )
    .unwrap();
    let user = format!("      ansible_user: {}\n", yq(&current_user()));
    let push = |host1_args: &str, host2_vars: &str, host2_args: &str| {
        lab.write_inventory(&format!(
            "all:\n  hosts:\n{}{}",
            via_ssh_args(&lab, "host1", &user, host1_args),
            via_ssh_args(&lab, "host2", host2_vars, host2_args),
        ));
        let out = lab.csdeploy(&["push", "--format", "json"]);
        let doc = out.json();
        let status = |h: &str| host(&doc, h)["status"].as_str().unwrap().to_string();
        (status("host1"), status("host2"), out)
    };
    // host1: its port only in `-o Port=N`; host2: its user only in `-o
    // User=...`, reached through a jump over host1's sshd.
    let (one, two, out) = push(
        &format!("-o Port={port1}"),
        &format!("      ansible_port: {port2}\n"),
        &format!("-o User={} -J localhost:{port1}", current_user()),
    );
    assert_eq!(
        (one.as_str(), two.as_str()),
        ("changed", "changed"),
        "{out}"
    );
    // Each option really decides: a wrong port, a jump that is closed, a
    // user that does not exist, and the host is not reached.
    let (one, two, out) = push(
        &format!("-o Port={}", closed_port()),
        &format!("      ansible_port: {port2}\n"),
        &format!("-o User={} -J localhost:{}", current_user(), closed_port()),
    );
    assert_eq!(
        (one.as_str(), two.as_str()),
        ("unreachable", "unreachable"),
        "{out}"
    );
    let (_, two, out) = push(
        &format!("-o Port={port1}"),
        &format!("      ansible_port: {port2}\n"),
        "-o User=nosuchuser-csd",
    );
    assert_eq!(two, "unreachable", "{out}");
    assert!(out.stdout.contains("Permission denied"), "{out}");
}

#[test]
fn ssh_args_that_make_no_sense_for_csdeploy_are_refused_where_they_are_set() {
    let lab = Lab::new().build();
    for (args, says) in [
        (
            "-o StrictHostKeyChecking=no",
            "--host-key-checking accept-new",
        ),
        ("-L 8080:localhost:80", "-L makes no sense"),
        ("-o ProxyJump=a bastion", "`bastion` is not an ssh option"),
    ] {
        lab.write_inventory(&format!(
            "all:\n  children:\n    web:\n      vars:\n        ansible_ssh_extra_args: {}\n      hosts:\n        w1:\n",
            yq(args)
        ));
        let out = lab.csdeploy(&["inventory"]);
        out.assert_exit(2);
        assert!(
            out.stderr.contains(
                "inventory.yml:5:9: all.children.web.vars.ansible_ssh_extra_args: host w1: "
            ) && out.stderr.contains(says),
            "{args}\n{out}"
        );
    }
}

#[test]
fn inventory_templates_resolve_from_the_hosts_own_vars_before_any_connection() {
    let lab = Lab::new().build();
    lab.write_inventory(concat!(
        "all:\n  vars:\n    domain: example.com\n    n: 3\n",
        "    ansible_host: \"{{ inventory_hostname }}.{{ domain }}\"\n",
        "  children:\n    web:\n      vars:\n        domain: web.example.com\n",
        "        ansible_port: \"{{ n }}\"\n        label: \"{{ group_names }}\"\n",
        "        later: \"{{ nope | default('x') }}\"\n",
        "      hosts:\n        w1:\n        w2:\n          n: 2222\n",
    ));
    let out = lab.csdeploy(&["inventory", "--format", "json"]);
    out.assert_exit(0);
    let hosts = &out.json()["hosts"];
    // The group's `domain` wins over `all`'s, as the host's `n` over the
    // group's: a template sees the host's merged variables.
    assert_eq!(hosts["w1"]["connection"]["host"], "w1.web.example.com");
    assert_eq!(hosts["w1"]["connection"]["port"], 3);
    assert_eq!(hosts["w2"]["connection"]["port"], 2222);
    assert_eq!(hosts["w2"]["vars"]["ansible_port"], 2222);
    assert_eq!(hosts["w1"]["vars"]["label"], serde_json::json!(["web"]));
    // What csdeploy cannot evaluate stays as written until it is used.
    assert_eq!(hosts["w1"]["vars"]["later"], "{{ nope | default('x') }}");
    let play = lab.write_file(
        "uses-later.yml",
        "- hosts: all\n  tasks:\n    - name: t\n      command:\n        argv: [echo, \"{{ later }}\"]\n",
    );
    let out = lab.csdeploy(&["run", play.to_str().unwrap(), "--limit", "w1"]);
    out.assert_exit(2);
    assert!(
        out.stderr
            .contains("variable `later` holds Jinja csdeploy cannot evaluate")
            && out.stderr.contains("uses-later.yml"),
        "{out}"
    );
}

#[test]
fn extra_vars_win_over_play_vars_and_the_inventory_as_in_ansible() {
    let lab = Lab::new().local(true).build();
    let home = lab.home("local");
    lab.write_inventory(&format!(
        "all:\n  hosts:\n    local:\n      ansible_connection: local\n      marker: inventory\n      environment:\n        HOME: {}\n",
        yq(&home.display().to_string())
    ));
    let play = lab.write_file(
        "touch.yml",
        &format!(
            "- hosts: all\n  vars:\n    marker: play\n  tasks:\n    - name: touch\n      command:\n        argv: [touch, \"{}/{{{{ marker }}}}\"]\n",
            home.display()
        ),
    );
    let play = play.to_str().unwrap();
    let vars_file = lab.write_file("extra.yml", "marker: from-file\n");
    let at_file = format!("@{}", vars_file.display());
    lab.csdeploy(&["run", play]).assert_exit(0);
    assert!(
        home.join("play").exists(),
        "play vars win over the inventory"
    );
    // `-e` wins over both; a later `-e` over an earlier one.
    lab.csdeploy(&["run", play, "-e", "marker=extra"])
        .assert_exit(0);
    assert!(home.join("extra").exists());
    lab.csdeploy(&["run", play, "-e", "marker=extra", "-e", &at_file])
        .assert_exit(0);
    assert!(home.join("from-file").exists());
    lab.csdeploy(&["run", play, "-e", r#"{"marker": "json"}"#])
        .assert_exit(0);
    assert!(home.join("json").exists());
    let out = lab.csdeploy(&["run", play, "-e", "marker"]);
    out.assert_exit(2);
    assert!(out.stderr.contains("`marker` is not key=value"), "{out}");
}

#[test]
fn list_hosts_and_syntax_check_touch_no_host() {
    let lab = Lab::new().local(true).unreachable("dead").build();
    let out = lab.csdeploy(&["push", "--list-hosts", "--limit", "all:!nosuch"]);
    out.assert_exit(0);
    assert_eq!(
        out.stdout,
        "\nplaybook: (built-in) playbooks/push.yml\n\n  play #1 (all): Deploy the Claude Code parallel-session tooling\tTAGS: []\n    pattern: ['all']\n    hosts (2):\n      dead\n      local\n",
        "{out}"
    );
    let out = lab.csdeploy(&["doctor", "--list-hosts", "--limit", "local"]);
    out.assert_exit(0);
    assert_eq!(out.stdout, "  hosts (1):\n    local\n", "{out}");
    let out = lab.csdeploy(&["push", "--syntax-check"]);
    out.assert_exit(0);
    assert_eq!(out.stdout, "\nplaybook: (built-in) playbooks/push.yml\n");
    assert!(
        !lab.claude_home("local").exists(),
        "a listing or a syntax check deployed"
    );
    // A syntax check reads every selected host's settings, as a run would.
    let out = lab.csdeploy(&["push", "--syntax-check", "-e", "ansible_port=x"]);
    out.assert_exit(2);
    assert!(
        out.stderr
            .contains("(command line): ansible_port: expected a port number"),
        "{out}"
    );
}

#[test]
fn user_and_private_key_from_the_command_line_give_way_to_the_inventory() {
    let lab = Lab::new().hosts(1).build();
    let entry = format!(
        "all:\n  hosts:\n    host1:\n      ansible_host: 127.0.0.1\n      ansible_port: {}\n      environment:\n        HOME: {}\n",
        lab.port("host1"),
        yq(&lab.home("host1").display().to_string())
    );
    lab.write_inventory(&entry);
    let status = |args: &[&str]| {
        let out = lab.csdeploy(&[&["push", "--format", "json"], args].concat());
        let status = host(&out.json(), "host1")["status"]
            .as_str()
            .unwrap()
            .to_string();
        (status, out)
    };
    let (s, out) = status(&["-u", "nosuchuser-csd"]);
    assert_eq!(s, "unreachable", "{out}");
    let (s, out) = status(&["-u", &current_user()]);
    assert_eq!(s, "changed", "{out}");
    let (s, out) = status(&["-u", &current_user(), "--private-key", "/nonexistent/key"]);
    assert_eq!(s, "unreachable", "{out}");
    assert!(out.stdout.contains("/nonexistent/key"), "{out}");
    // The inventory's own user wins over -u, as in Ansible.
    lab.write_inventory(&entry.replace(
        "      environment:",
        &format!(
            "      ansible_user: {}\n      environment:",
            yq(&current_user())
        ),
    ));
    let (s, out) = status(&["-u", "nosuchuser-csd"]);
    assert_eq!(s, "ok", "{out}");
}

#[test]
fn the_readmes_usage_examples_run_as_written() {
    let lab = Lab::new().hosts(2).local(true).build();
    let mut inventory = String::from("all:\n  hosts:\n");
    for (name, like) in [("lxc122", "host1"), ("lxc123", "host2"), ("local", "local")] {
        let info = crate::harness::HostInfo {
            name: name.into(),
            ..lab.host_info(like).clone()
        };
        inventory.push_str(&lab.host_entry_yaml(&info, 4));
    }
    lab.write_inventory(&inventory);
    lab.write_file("inventory/hosts.yml", &inventory);
    lab.write_file(
        "my-playbook.yml",
        "- hosts: all\n  tasks:\n    - name: nothing\n      command:\n        argv: [\"true\"]\n",
    );
    let readme = std::fs::read_to_string(crate::harness::repo_root().join("README.md")).unwrap();
    let usage = readme
        .split("## Usage\n\n```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("README has a Usage block");
    // The examples verify a fleet that was deployed once.
    lab.csdeploy(&["push"]).assert_exit(0);
    let mut ran = 0;
    for line in usage.lines() {
        let command = line.split(" #").next().unwrap().trim();
        let words = shlex::split(command).unwrap_or_else(|| panic!("{line}"));
        let Some(("csdeploy", args)) = words.split_first().map(|(c, a)| (c.as_str(), a)) else {
            panic!("not a csdeploy command: {line}");
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = if args.contains(&"-i") {
            let ssh_config = lab.ssh_config.display().to_string();
            lab.csdeploy_raw(&[&args[..], &["--ssh-config", &ssh_config]].concat())
        } else {
            lab.csdeploy(&args)
        };
        assert_eq!(out.code, 0, "README: {line}\n{out}");
        ran += 1;
    }
    assert!(ran >= 10, "{usage}");
}

#[test]
fn verbose_says_how_each_host_is_reached_and_what_runs_there() {
    let lab = Lab::new()
        .local(true)
        .unreachable("dead")
        .host_var("dead", "ansible_ssh_extra_args", "-o ServerAliveCountMax=2")
        .build();
    let quiet = lab.csdeploy(&["push", "--check"]);
    assert!(!quiet.stderr.contains("task 1/"), "{quiet}");
    let out = lab.csdeploy(&["push", "--check", "-v"]);
    let dead = lab.port("dead");
    assert!(
        out.stderr.contains("csdeploy: local: local processes (ansible_connection: local)\n")
            && out.stderr.contains(&format!(
                "csdeploy: dead: ssh to 127.0.0.1 port {dead} as {}, ssh options: ServerAliveCountMax=2\n",
                current_user()
            ))
            && out.stderr.contains("csdeploy: dead: task 1/10: Launcher directory (play: "),
        "{out}"
    );
    // -vvv: ssh's own debug output, in the unreachable host's error.
    assert!(!out.stdout.contains("debug1: "), "{out}");
    let out = lab.csdeploy(&["push", "--check", "-vvv"]);
    out.assert_exit(3);
    assert!(
        out.stdout.contains("debug1: Connecting to 127.0.0.1"),
        "{out}"
    );
}
