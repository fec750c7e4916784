"""csdeploy doctor, run on the host it examines.

The agent (agent.py) runs this source inside its one remote command and calls
run(args) with {"claude_home", "max_sessions", "controller_time"} (the
controller's clock, Unix seconds, when it sent the command). It returns
{"ok": true, "checks": [...]}: one item per prerequisite of the deployed tools
and of Claude Code, each {"id", "status": pass|warn|fail, "expected",
"actual", "detail", "duration_ms"}, the detail saying how to fix a warn or a
fail. Nothing on the host is changed.

Written for old interpreters too (no f-strings): a python3 older than 3.8
must still be able to say that it is too old. Where there is no python3 at
all, doctor.sh answers instead. src/builtin.rs joins common.py (the shared
helpers) ahead of this file. Python standard library only.
"""
import os
import shutil
import subprocess
import sys
import time

SESSION_MEMORY = 500 * 1024 * 1024  # what one Claude Code session takes, roughly
MIN_PYTHON = (3, 8)
DISK_WARN = 1024 ** 3
DISK_FAIL = 100 * 1024 ** 2
SKEW_WARN = 5.0
SKEW_FAIL = 60.0


def item(id, status, expected, actual, detail=None, started=None):
    took = 0 if started is None else int((time.monotonic() - started) * 1000)
    return {"id": id, "status": status, "expected": expected, "actual": actual,
            "detail": detail, "duration_ms": took}


def output(argv, timeout=20, env=None):
    """(exit code, stdout text) of argv, or (None, why) when it cannot run."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, env=env,
                              cwd=expand("~"))
    except (OSError, subprocess.SubprocessError) as err:
        return None, str(err)
    return proc.returncode, proc.stdout.decode("utf-8", "replace").strip()


def check_python():
    started = time.monotonic()
    version = "%d.%d.%d" % sys.version_info[:3]
    actual = "%s (%s)" % (version, sys.executable)
    if tuple(sys.version_info[:2]) >= MIN_PYTHON:
        return item("python3", "pass", ">= 3.8", actual, started=started)
    return item("python3", "fail", ">= 3.8", actual,
                "the session tools need Python 3.8 or newer: install it (apt install python3) or "
                "point ansible_python_interpreter at one", started)


def check_bash():
    started = time.monotonic()
    bash = shutil.which("bash")
    if bash is None:
        return item("bash", "fail", "bash on PATH", "not found",
                    "the launcher is a bash script: install bash", started)
    code, text = output([bash, "--version"])
    first = text.splitlines()[0] if code == 0 and text else bash
    return item("bash", "pass", "bash on PATH", "%s: %s" % (bash, first), started=started)


def check_coreutils():
    started = time.monotonic()
    found = []
    missing = []
    for tool in ("stat", "sha256sum"):
        path = shutil.which(tool)
        code, text = output([path, "--version"]) if path else (None, "")
        if code == 0 and "GNU coreutils" in text:
            found.append(tool)
        else:
            missing.append(tool if path else tool + " (not found)")
    if not missing:
        return item("coreutils", "pass", "GNU stat and sha256sum", "GNU stat, sha256sum",
                    started=started)
    return item("coreutils", "warn", "GNU stat and sha256sum",
                "not GNU: " + ", ".join(missing),
                "csdeploy then inspects the host with Python, which is slower: install GNU "
                "coreutils", started)


def check_flock():
    started = time.monotonic()
    path = shutil.which("flock")
    if path:
        return item("flock", "pass", "flock on PATH", path, started=started)
    return item("flock", "warn", "flock on PATH", "not found",
                "scripts that serialise on the session lock need it: install util-linux", started)


# What the deployed launcher exits with when it finds no client.
EX_NOCLIENT = 127


def claude_candidates(claude_home):
    """Where the launcher looks (session_registry.py's client_candidates), in
    its order, for a host it is not deployed on yet."""
    named = os.environ.get("CLAUDE_BIN")
    if named:
        yield os.path.abspath(named) if "/" in named else shutil.which(named)
        return
    yield shutil.which("claude")
    yield expand("~/.local/bin/claude")
    yield os.path.join(expand(claude_home), "local", "claude")
    prefix = os.environ.get("NPM_CONFIG_PREFIX")
    if prefix:
        yield os.path.join(prefix, "bin", "claude")
    yield expand("~/.npm-global/bin/claude")
    yield "/usr/local/bin/claude"


def check_claude(claude_home):
    started = time.monotonic()
    launcher = os.path.join(expand(claude_home), "bin", "claude-session")
    client, how = None, None
    expected = "Claude Code found, `--version` answers"
    if os.path.isfile(launcher) and os.access(launcher, os.X_OK):
        code, text = output([launcher, "--which-client"])
        if code == 0 and text:
            client, how = text.splitlines()[-1], "claude-session --which-client"
        elif code == EX_NOCLIENT:
            # The deployed launcher's answer is the one that counts: a client
            # only a wider search finds is one no session would run.
            return item("claude", "fail", expected, "the deployed launcher finds none: %s" % text[-300:],
                        "install Claude Code where the launcher looks (npm install -g "
                        "@anthropic-ai/claude-code, or its native installer into ~/.local/bin), or "
                        "set CLAUDE_BIN in the host's environment", started)
    if client is None:
        for path in claude_candidates(claude_home):
            if path and os.path.isfile(path) and os.access(path, os.X_OK):
                client, how = path, "search"
                break
    if client is None:
        return item("claude", "fail", expected, "not found",
                    "install Claude Code (npm install -g @anthropic-ai/claude-code, or its native "
                    "installer into ~/.local/bin), or set CLAUDE_BIN in the host's environment",
                    started)
    code, text = output([client, "--version"], timeout=30)
    if code != 0:
        return item("claude", "fail", expected, "%s: --version failed: %s" % (client, text[-300:]),
                    "reinstall Claude Code, or set CLAUDE_BIN to a working one", started)
    version = text.splitlines()[-1] if text else "?"
    return item("claude", "pass", expected, "%s (%s; found by %s)" % (version, client, how),
                started=started)


def mib(n):
    return "%d MiB" % (n // (1024 * 1024))


def check_memory(max_sessions):
    started = time.monotonic()
    available = meminfo().get("MemAvailable")
    cgroup = cgroup_memory_limit()
    budget = available
    parts = []
    if available is not None:
        parts.append("%s available" % mib(available))
    if cgroup is not None:
        limit, _, usage = cgroup
        free_in_cgroup = max(limit - (usage or 0), 0)
        parts.append("cgroup limit %s (%s free)" % (mib(limit), mib(free_in_cgroup)))
        budget = free_in_cgroup if budget is None else min(budget, free_in_cgroup)
    else:
        parts.append("no cgroup memory limit")
    expected = "room for max_sessions=%d sessions at ~500 MiB each" % max_sessions
    if budget is None:
        return item("memory", "warn", expected, "unknown (no /proc/meminfo)",
                    "cannot tell how many sessions fit", started)
    allowed = budget // SESSION_MEMORY
    actual = "%s: %d sessions fit" % ("; ".join(parts), allowed)
    if allowed >= max_sessions:
        return item("memory", "pass", expected, actual, started=started)
    if allowed >= 1:
        return item("memory", "warn", expected, actual,
                    "lower max_sessions to %d in the inventory, or give the host more memory"
                    % allowed, started)
    return item("memory", "fail", expected, actual,
                "not even one session fits: free memory or raise the cgroup limit", started)


def check_disk(claude_home):
    started = time.monotonic()
    path = expand(claude_home)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path)
    except OSError as err:
        return item("disk", "warn", ">= 1 GiB free", "unknown: %s" % err,
                    "cannot tell the free space under claude_home", started)
    free = st.f_bavail * st.f_frsize
    actual = "%s free under %s" % (mib(free), path)
    if free >= DISK_WARN:
        return item("disk", "pass", ">= 1 GiB free", actual, started=started)
    status = "fail" if free < DISK_FAIL else "warn"
    return item("disk", status, ">= 1 GiB free", actual,
                "sessions keep histories and transcripts there: free space (csdeploy cleanup "
                "removes empty and old sessions)", started)


def check_local_bin():
    started = time.monotonic()
    local_bin = expand("~/.local/bin")
    try:
        import pwd
        shell = pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh"
    except (ImportError, KeyError):
        shell = "/bin/sh"
    marker = "csdeploy-path:"
    code, text = output([shell, "-l", "-c", 'printf "\\n%s%s\\n" "$1" "$PATH"', "sh", marker],
                        timeout=15)
    expected = "%s on the PATH of a login shell" % local_bin
    path = None
    for line in (text or "").splitlines():
        if line.startswith(marker):
            path = line[len(marker):]
    if path is None:
        return item("local_bin_on_path", "warn", expected, "unknown: %s -l failed: %s"
                    % (shell, (text or "")[-200:]), "check the login shell's startup files",
                    started)
    entries = [os.path.normpath(expand(p)) for p in path.split(":") if p]
    if os.path.normpath(local_bin) in entries:
        return item("local_bin_on_path", "pass", expected, "yes (%s)" % shell, started=started)
    return item("local_bin_on_path", "warn", expected, "no (%s: PATH=%s)" % (shell, path),
                "`claude-session` is linked there: add `PATH=\"$HOME/.local/bin:$PATH\"` to "
                "~/.profile, or run it as ~/.local/bin/claude-session", started)


def sshd_max_sessions():
    """(value, where) from `sshd -T` (needs root) or sshd_config; (None, why) if unknown."""
    for sshd in ("/usr/sbin/sshd", shutil.which("sshd")):
        if sshd and os.access(sshd, os.X_OK):
            code, text = output([sshd, "-T"], timeout=10)
            if code == 0:
                for line in text.splitlines():
                    if line.lower().startswith("maxsessions "):
                        return int(line.split()[1]), "sshd -T"
            break
    config = "/etc/ssh/sshd_config"
    try:
        with open(config) as f:
            lines = f.read().splitlines()
    except OSError as err:
        return None, "sshd -T needs root and %s is unreadable (%s)" % (config, err.strerror)
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0].lower() == "maxsessions" and words[1].isdigit():
            return int(words[1]), config
        if words and words[0].lower() == "match":
            break  # a Match block's settings are not the global ones
    return 10, "%s (not set: OpenSSH's default)" % config


def check_sshd(max_sessions):
    started = time.monotonic()
    expected = ">= max_sessions=%d" % max_sessions
    value, where = sshd_max_sessions()
    if value is None:
        return item("sshd_max_sessions", "warn", expected, "unknown",
                    "%s: run doctor as root, or check MaxSessions by hand" % where, started)
    actual = "%d (%s)" % (value, where)
    if value >= max_sessions:
        return item("sshd_max_sessions", "pass", expected, actual, started=started)
    return item("sshd_max_sessions", "warn", expected, actual,
                "sessions run over one multiplexed ssh connection stop at %d: raise MaxSessions "
                "in sshd_config" % value, started)


def check_clock(controller_time):
    started = time.monotonic()
    skew = time.time() - controller_time
    actual = "%+.1f s against the controller" % skew
    expected = "within %d s" % SKEW_WARN
    if abs(skew) <= SKEW_WARN:
        return item("clock_skew", "pass", expected, actual, started=started)
    return item("clock_skew", "fail" if abs(skew) > SKEW_FAIL else "warn", expected, actual,
                "session times and `cleanup --days` depend on the clock: enable NTP "
                "(timedatectl set-ntp true)", started)


def run(args):
    home = args["claude_home"]
    max_sessions = int(args["max_sessions"])
    clock = check_clock(args["controller_time"])  # first: the others take time
    checks = [check_python(), check_bash(), check_coreutils(), check_flock(),
              check_claude(home), check_memory(max_sessions), check_disk(home),
              check_local_bin(), check_sshd(max_sessions), clock]
    return {"ok": True, "checks": checks}
