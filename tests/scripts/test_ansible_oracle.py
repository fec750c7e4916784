"""ansible-core as the oracle for what csdeploy reads from an inventory.

Every inventory under tests/ansible-corpus/ is resolved twice, by
`ansible-inventory -i FILE --list` and by `csdeploy inventory -i FILE --format
json`, and the two must agree on the hosts, the groups (members and children),
every host's variables and its connection settings (as Ansible's ssh
connection would build its command line, see ansible_connections). Host patterns written in
the inventory as `# pattern: PATTERN` comments are selected by both
`ansible PATTERN --list-hosts` and `csdeploy inventory --limit PATTERN`.

An inventory csdeploy refuses on purpose says so with `# refused: TEXT`: then
csdeploy must exit 2 with TEXT and the file's name in its message.

ansible-core comes from target/ansible-venv (scripts/test installs it), or
$ANSIBLE_BIN_DIR. Without it the test skips, except under CI, where it fails.
"""
import glob
import json
import os
import re
import shlex
import subprocess

import pytest

from conftest import REPO, csdeploy_binary

CORPUS = os.path.join(REPO, "tests", "ansible-corpus")
BIN_DIR = os.environ.get("ANSIBLE_BIN_DIR") or os.path.join(REPO, "target", "ansible-venv", "bin")
# csdeploy's own defaults, which every host gets unless the inventory sets them.
DEFAULT_KEYS = {"claude_home", "max_sessions", "inherit_copy", "inherit_link"}
MASK = "********"


def cases():
    found = []
    for path in sorted(glob.glob(os.path.join(CORPUS, "*"))):
        if os.path.isdir(path):
            for name in ("hosts.yml", "hosts.yaml", "hosts.ini", "hosts"):
                if os.path.isfile(os.path.join(path, name)):
                    found.append(os.path.join(path, name))
                    break
            else:
                if path.endswith("-inventory"):
                    found.append(path)
        elif path.endswith((".yml", ".yaml", ".ini")):
            found.append(path)
    return found


def case_id(path):
    return os.path.relpath(path, CORPUS)


def ansible(tool):
    path = os.path.join(BIN_DIR, tool)
    if not os.access(path, os.X_OK):
        message = "no %s at %s: scripts/test installs ansible-core there" % (tool, path)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(argv, tmp_path):
    # No ansible.cfg of the user's or the repository's, no ~/.ansible: the
    # oracle reads the inventory with Ansible's defaults, and a file it cannot
    # parse is an error, not a warning and an empty inventory.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "CSDEPLOY_"))}
    config = tmp_path / "ansible.cfg"
    config.write_text("")
    env.update(ANSIBLE_CONFIG=str(config), ANSIBLE_HOME=str(tmp_path / "ansible-home"),
               ANSIBLE_REMOTE_TMP=str(tmp_path / "ansible-tmp"),
               ANSIBLE_INVENTORY_UNPARSED_FAILED="True", ANSIBLE_LOCALHOST_WARNING="False",
               PYTHONWARNINGS="ignore", NO_COLOR="1")
    return subprocess.run(argv, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


def directives(path, word):
    if os.path.isdir(path):
        return []
    with open(path) as f:
        return [m.group(1).strip() for m in re.finditer(r"^# %s: (.+)$" % word, f.read(), re.M)]


def ansible_groups(listing):
    """Every group: its direct hosts and its children."""
    groups = {}
    for name, body in listing.items():
        if name == "_meta":
            continue
        groups.setdefault(name, {"hosts": [], "children": []})
        groups[name]["hosts"] = list(body.get("hosts", []))
        groups[name]["children"] = list(body.get("children", []))
        for child in body.get("children", []):
            groups.setdefault(child, {"hosts": [], "children": []})
    return groups


def members(groups, name, seen=()):
    if name in seen:
        return set()
    found = set(groups[name]["hosts"])
    for child in groups[name]["children"]:
        found |= members(groups, child, seen + (name,))
    return found


def same(ours, theirs):
    """Equal, where csdeploy's masked secrets stand for any value."""
    if ours == MASK:
        return True
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(same(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(same(a, b) for a, b in zip(ours, theirs))
    if isinstance(ours, str) and MASK in ours and isinstance(theirs, str):
        return re.fullmatch(re.escape(ours).replace(re.escape(MASK), ".*"), theirs) is not None
    return ours == theirs and type(ours) is type(theirs)


ANSIBLE_SSH_ARGS = ["-C", "-o", "ControlMaster=auto", "-o", "ControlPersist=60s"]
FLAG_KEYWORDS = {"-J": "ProxyJump", "-p": "Port", "-l": "User", "-i": "IdentityFile"}
FIXED_FLAGS = {"-C": "Compression yes", "-4": "AddressFamily inet", "-6": "AddressFamily inet6",
               "-A": "ForwardAgent yes"}


def ssh_config_lines(words):
    """The ssh_config lines of ssh options as Ansible put them on ssh's
    command line: the options of the corpus (`-o`, `-J`, `-p`, `-l`, `-i`,
    `-C`, `-4`, `-6`, `-A`), where csdeploy's own master replaces the
    control-socket ones. Ansible's default ssh_args stand for none set."""
    if words == ANSIBLE_SSH_ARGS:
        return []
    lines = []
    words = iter(words)
    for word in words:
        if word in FIXED_FLAGS:
            lines.append(FIXED_FLAGS[word])
        elif word in FLAG_KEYWORDS or word == "-o":
            value = next(words)
            if word != "-o":
                lines.append("%s %s" % (FLAG_KEYWORDS[word], value))
            elif not value.startswith(("ControlMaster=", "ControlPersist=")):
                lines.append(value)
        elif word.startswith("-o"):
            lines.append(word[2:])
        else:
            raise AssertionError("an ssh option the oracle does not know: %r" % word)
    return lines


def holds_jinja(value):
    if isinstance(value, str):
        return "{{" in value or "{%" in value or "{#" in value
    if isinstance(value, list):
        return any(holds_jinja(v) for v in value)
    if isinstance(value, dict):
        return any(holds_jinja(v) for v in value.values())
    return False


def rendered_hostvars(inventory, tmp_path):
    """Every host's variables as Ansible renders them when a host uses them:
    `ansible-inventory --list` shows templates as written, the debug module
    (which runs on the controller, connecting nowhere) shows them rendered."""
    proc = run([ansible("ansible"), "all", "-i", inventory, "-m", "debug",
                "-a", "var=hostvars[inventory_hostname]"], tmp_path)
    rendered = {}
    for m in re.finditer(r"^(\S+) \| SUCCESS => (\{.*?^\})$", proc.stdout, re.M | re.S):
        rendered[m.group(1)] = json.loads(m.group(2))["hostvars[inventory_hostname]"]
    return rendered


# The ssh "binary" Ansible is given: a path that does not exist, ending in
# the host's inventory name (Ansible templates it per host), so that each
# logged command names its host whatever order the lines come in.
SSH_STAND_IN = "/nonexistent/csdeploy-oracle/"


def ansible_connections(inventory, tmp_path, hosts):
    """Where, as whom and with which key Ansible's own ssh connection would
    connect to each host: `ansible all -m ping -vvv` with a missing ssh
    binary logs the ssh command it would run, then fails the host, so
    nothing connects anywhere. A `local` host runs the ping module here.
    A host the batch run did not log is asked for alone."""
    connections = logged_connections(inventory, tmp_path, "all")
    for host in sorted(set(hosts) - set(connections)):
        connections.update(logged_connections(inventory, tmp_path, host))
    return connections


def logged_connections(inventory, tmp_path, pattern, extra=()):
    proc = run([ansible("ansible"), pattern, "-i", inventory, "-m", "ping", "-vvv", "-f", "1",
                "-e", "ansible_ssh_executable=%s{{ inventory_hostname }}" % SSH_STAND_IN]
               + list(extra), tmp_path)
    connections = {}
    for line in proc.stdout.splitlines():
        if " SSH: EXEC %s" % SSH_STAND_IN in line:
            argv = shlex.split(line.split(" SSH: EXEC ", 1)[1])
            # Ansible's command line: ssh_args, its own options (up to
            # ConnectTimeout), ssh_common_args, ssh_extra_args, ControlPath.
            own = next(i for i, a in enumerate(argv)
                       if a == "-o" and argv[i + 1].startswith("KbdInteractiveAuthentication="))
            while argv[own - 2] == "-o" and argv[own - 1].startswith(
                    ("Port=", "IdentityFile=", "StrictHostKeyChecking=")):
                own -= 2
            timeout = next(i for i, a in enumerate(argv)
                           if a == "-o" and argv[i + 1].startswith("ConnectTimeout="))
            # No ControlPath where ssh_args leave out ControlMaster.
            control = max((i for i, a in enumerate(argv)
                           if a == "-o" and argv[i + 1].startswith("ControlPath=")), default=len(argv) - 2)
            options = dict(argv[i + 1].split("=", 1) for i in range(own, timeout) if argv[i] == "-o")
            unquote = lambda v: v[1:-1] if v and v[0] == v[-1] == '"' else v
            # ssh takes the first value it is given: a port or user in
            # ssh_args (before Ansible's own options) is the one that counts.
            first = {re.split(r"[ =]", line, 1)[0].lower() for line in ssh_config_lines(argv[1:own])}
            connections.setdefault(argv[0][len(SSH_STAND_IN):], {
                "type": "ssh",
                "host": argv[-2],
                "port": int(options["Port"]) if "Port" in options and "port" not in first else None,
                "user": unquote(options["User"]) if "User" in options and "user" not in first else None,
                "key_file": unquote(options["IdentityFile"]) if "IdentityFile" in options else None,
                "ssh_options": ssh_config_lines(argv[1:own]) + ssh_config_lines(
                    argv[timeout + 2:control]),
            })
    # A host with a result and no ssh command ran the module here (which
    # may fail on this machine: a local interpreter Ansible cannot use).
    if " ESTABLISH LOCAL CONNECTION " in proc.stdout:
        for m in re.finditer(r"^(\S+) \| (?:UNREACHABLE|FAILED|SUCCESS)", proc.stdout, re.M):
            connections.setdefault(m.group(1), {"type": "local"})
    return connections


@pytest.mark.parametrize("inventory", cases(), ids=case_id)
def test_inventory_resolves_as_ansible_does(inventory, tmp_path):
    ansible_inventory = ansible("ansible-inventory")
    refused = directives(inventory, "refused")
    ours = run([csdeploy_binary(), "inventory", "-i", inventory, "--format", "json"], tmp_path)
    if refused:
        assert ours.returncode == 2, ours.stdout + ours.stderr
        for text in refused:
            assert text in ours.stderr, ours.stderr
        assert os.path.basename(inventory) in ours.stderr, ours.stderr
        return
    assert ours.returncode == 0, ours.stderr
    theirs = run([ansible_inventory, "-i", inventory, "--list"], tmp_path)
    assert theirs.returncode == 0, theirs.stderr
    listing = json.loads(theirs.stdout)
    document = json.loads(ours.stdout)
    groups = ansible_groups(listing)
    hostvars = listing["_meta"]["hostvars"]
    all_hosts = members(groups, "all")
    connections = ansible_connections(inventory, tmp_path, all_hosts)
    templated = any(holds_jinja(v) for vs in hostvars.values() for v in vs.values())
    rendered = rendered_hostvars(inventory, tmp_path) if templated else {}
    assert set(connections) == all_hosts, theirs.stdout

    assert set(document["hosts"]) == all_hosts
    assert set(document["groups"]) == set(groups)
    for name, group in groups.items():
        assert set(document["groups"][name]["hosts"]) == members(groups, name), name
        assert set(document["groups"][name]["children"]) == set(group["children"]), name
    for name in sorted(all_hosts):
        host = document["hosts"][name]
        expected = hostvars.get(name, {})
        variables = dict(host["vars"])
        assert variables.pop("inventory_hostname") == name
        for key in DEFAULT_KEYS - set(expected):
            variables.pop(key, None)
        expected = {key: rendered[name][key] if holds_jinja(value) and not holds_jinja(
            variables.get(key)) else value for key, value in expected.items()}
        assert same(variables, expected), "%s: csdeploy %s\nansible %s" % (name, variables, expected)
        in_groups = {g for g in groups if name in members(groups, g)}
        assert set(host["groups"]) == in_groups, name
        connection = host["connection"]
        if connection["type"] == "local":
            connection = {"type": "local"}
        if connection.get("key_file"):
            connection["key_file"] = os.path.expanduser(connection["key_file"])
        assert connection == connections[name], name


def pattern_cases():
    return [(path, pattern) for path in cases() for pattern in directives(path, "pattern")]


@pytest.mark.parametrize("inventory,pattern", pattern_cases(),
                         ids=["%s %s" % (case_id(p), q) for p, q in pattern_cases()])
def test_pattern_selects_what_ansible_selects(inventory, pattern, tmp_path):
    theirs = run([ansible("ansible"), pattern, "-i", inventory, "--list-hosts"], tmp_path)
    assert theirs.returncode == 0, theirs.stderr
    lines = theirs.stdout.splitlines()
    assert lines and re.match(r"\s*hosts \(\d+\):$", lines[0]), theirs.stdout
    expected = [line.strip() for line in lines[1:]]
    ours = run([csdeploy_binary(), "inventory", "-i", inventory, "--format", "json",
                "--limit", pattern], tmp_path)
    if not expected:
        # Ansible warns and does nothing; csdeploy refuses an empty selection.
        assert ours.returncode == 2, ours.stdout + ours.stderr
        return
    assert ours.returncode == 0, ours.stderr
    assert sorted(json.loads(ours.stdout)["hosts"]) == sorted(expected)


PLAYBOOK = os.path.join(CORPUS, "playbooks", "two-plays.yml")


@pytest.mark.parametrize("limit", [None, "east", "two.example.com,one.example.com"])
def test_list_hosts_and_syntax_check_print_what_ansible_playbook_prints(limit, tmp_path):
    inventory = os.path.join(CORPUS, "docs-groups.yml")
    extra = ["--limit", limit] if limit else []
    for flag in ("--list-hosts", "--syntax-check"):
        theirs = run([ansible("ansible-playbook"), "-i", inventory, PLAYBOOK, flag] + extra,
                     tmp_path)
        assert theirs.returncode == 0, theirs.stderr
        ours = run([csdeploy_binary(), "run", PLAYBOOK, "-i", inventory, flag] + extra, tmp_path)
        assert ours.returncode == 0, ours.stderr
        assert host_lists_sorted(ours.stdout) == host_lists_sorted(theirs.stdout), flag


def host_lists_sorted(listing):
    """ansible-playbook lists a play's hosts from a Python set, in no fixed
    order: each list sorted, the rest as printed."""
    out, hosts = [], []
    for line in listing.splitlines() + [""]:
        if line.startswith("      ") and line.strip():
            hosts.append(line)
            continue
        out.extend(sorted(hosts))
        hosts = []
        out.append(line)
    return out


@pytest.mark.parametrize("args", [
    ["-u", "cli"],
    ["--private-key", "/keys/cli"],
    ["-e", "ansible_user=extra ansible_port=2299"],
    ["-e", '{"ansible_ssh_user": "json", "ansible_ssh_port": 2300}', "-u", "cli"],
    ["-e", "ansible_host=first", "-e", "ansible_host=second"],
], ids=lambda args: " ".join(args))
def test_command_line_vars_connect_as_ansible_would(args, tmp_path):
    """-u and --private-key lose to the inventory, -e wins over everything,
    a later -e over an earlier one."""
    inventory = os.path.join(CORPUS, "legacy-names.yml")
    connections = logged_connections(inventory, tmp_path, "all", args)
    ours = run([csdeploy_binary(), "inventory", "-i", inventory, "--format", "json"] + args,
               tmp_path)
    assert ours.returncode == 0, ours.stderr
    hosts = json.loads(ours.stdout)["hosts"]
    assert set(hosts) == set(connections)
    for name, host in hosts.items():
        connection = dict(host["connection"])
        if connection.get("key_file"):
            connection["key_file"] = os.path.expanduser(connection["key_file"])
        assert connection == connections[name], name


def test_extra_vars_are_strings_from_key_value_and_typed_from_json(tmp_path):
    inventory = os.path.join(CORPUS, "docs-groups.yml")
    vars_file = tmp_path / "extra.yml"
    vars_file.write_text("from_file: [1, 2]\nn: 7\n")
    args = ["-e", "n=3 s='a b'", "-e", '{"j": {"k": true}}', "-e", "@%s" % vars_file]
    proc = run([ansible("ansible"), "all", "-i", inventory, "-m", "debug",
                "-a", "var=hostvars[inventory_hostname]"] + args, tmp_path)
    theirs = {}
    for m in re.finditer(r"^(\S+) \| SUCCESS => (\{.*?^\})$", proc.stdout, re.M | re.S):
        theirs[m.group(1)] = json.loads(m.group(2))["hostvars[inventory_hostname]"]
    ours = run([csdeploy_binary(), "inventory", "-i", inventory, "--format", "json"] + args,
               tmp_path)
    assert ours.returncode == 0, ours.stderr
    hosts = json.loads(ours.stdout)["hosts"]
    assert theirs and set(theirs) == set(hosts)
    for name, host in hosts.items():
        for key in ("n", "s", "j", "from_file"):
            assert host["vars"][key] == theirs[name][key], (name, key)
