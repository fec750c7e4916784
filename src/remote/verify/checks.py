"""The checks: each judges, from what is on the filesystem after the sessions
ran, one property of the installation and returns a Check result.

One part of csdeploy's verifier (see main.py): src/builtin.rs joins
src/remote/common.py and the files of src/remote/verify/ into one source,
main.py first of these, so the names of every part are one namespace.
"""
import errno
import fcntl
import json
import os
import stat
import time


class Check:
    def __init__(self, check_id):
        self.id = check_id
        self.started = time.monotonic()

    def result(self, status, expected=None, actual=None, detail=None):
        return {"id": self.id, "status": status, "expected": expected, "actual": actual,
                "detail": detail, "duration_ms": int((time.monotonic() - self.started) * 1000)}

    def verdict(self, problems, expected, passed, detail=None):
        if problems:
            return self.result("fail", expected, "; ".join(problems), detail)
        return self.result("pass", expected, passed, detail)


def read_registry(sessions_dir):
    """The registry's sessions by id, or None when it is missing or unreadable."""
    try:
        with open(os.path.join(sessions_dir, ".registry")) as f:
            data = json.loads(f.read())
        sessions = data.get("sessions")
        return sessions if isinstance(sessions, dict) else None
    except (OSError, ValueError, AttributeError):
        return None


def active_links(active_dir):
    """Session id -> where its active link points. One readlink per link: the
    launcher may remove a link at any moment, and a link read half-way must
    not look like one pointing somewhere else."""
    links = {}
    try:
        names = os.listdir(active_dir)
    except OSError:
        return links
    for name in names:
        try:
            target = os.readlink(os.path.join(active_dir, name))
        except OSError:
            continue
        links[name] = os.path.normpath(os.path.join(active_dir, target))
    return links


def file_state(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    state = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
    if stat.S_ISREG(st.st_mode):
        state["sha256"] = sha256_of(path)
    return state


def snapshot_default(claude_home, home):
    """Everything under the default config dir except sessions/, plus ~/.claude.json."""
    entries = {}
    for root, dirs, files in os.walk(claude_home):
        if root == claude_home and "sessions" in dirs:
            dirs.remove("sessions")
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            entries[os.path.relpath(path, claude_home)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
            if len(entries) >= WALK_LIMIT:
                return entries
    # The user's own state file, which the launcher seeds sessions from and
    # a client without CLAUDE_CONFIG_DIR writes to.
    beside = os.path.join(home, ".claude.json")
    if os.path.lexists(beside):
        st = os.lstat(beside)
        entries["~/.claude.json"] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return entries


def session_ids(sessions_dir):
    try:
        return sorted(n for n in os.listdir(sessions_dir) if UUID_RE.match(n))
    except OSError:
        return []


def sessions_and_registry(sessions_dir, timeout=30.0):
    """The session directories and the registry as of one moment: read under
    a shared flock on .registry.lock, which the registry helper holds
    exclusively from a new session's mkdir to its entry. Read without it,
    another verify's new session could be a directory without its entry yet,
    taken for a pre-existing session. A holder that keeps the lock longer
    than timeout (the helper's own limit) leaves them read as they are."""
    try:
        fd = os.open(os.path.join(sessions_dir, ".registry.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        fd = None  # no sessions/ yet, or not ours to write: nothing registers here now
    try:
        deadline = time.monotonic() + timeout
        while fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= deadline:
                    break
            time.sleep(0.005)
        return session_ids(sessions_dir), read_registry(sessions_dir)
    finally:
        if fd is not None:
            os.close(fd)


def cannot_run(path):
    """Why the program at `path` cannot be run by this user, or None. access()
    also answers no on a file system mounted noexec."""
    if os.access(path, os.X_OK):
        return None
    try:
        st = os.stat(path)
    except OSError as err:
        return err.strerror
    if st.st_mode & 0o111 and stat.S_ISREG(st.st_mode):
        return "not executable here (mode %04o; file system mounted noexec?)" % stat.S_IMODE(st.st_mode)
    return "not executable (mode %04o)" % stat.S_IMODE(st.st_mode)


def check_integrity(bindir, expected):
    check = Check("launcher-integrity")
    problems = []
    for name, want in sorted(expected.items()):
        path = os.path.join(bindir, name)
        try:
            got = sha256_of(path)
        except OSError as err:
            problems.append("%s: %s" % (name, err.strerror))
            continue
        if got != want:
            problems.append("%s: sha256 %s, csdeploy ships %s" % (name, got[:12], want[:12]))
        why = cannot_run(path) if name in EXECUTABLES else None
        if why:
            problems.append("%s: %s" % (name, why))
    runnable = [n for n in sorted(expected) if n in EXECUTABLES]
    return check.verdict(problems, "deployed scripts match what this csdeploy ships (sha256); %s executable"
                         % ", ".join(runnable), "%d scripts match, %d executable" % (len(expected), len(runnable)))


def check_capacity(max_sessions, root="/"):
    check = Check("capacity")
    total = meminfo(root).get("MemTotal")
    if total is None:
        return check.result("skip", detail="/proc/meminfo is not readable")
    mem_mb = total // (1024 * 1024)
    source = "MemTotal"
    limit = cgroup_memory_limit(root)
    if limit is not None and limit[0] // (1024 * 1024) < mem_mb:
        source = "%s; MemTotal %d MB" % (limit[1], mem_mb)
        mem_mb = limit[0] // (1024 * 1024)
    expected = "max_sessions x %d MB fits in memory" % SESSION_MB
    if not max_sessions:
        return check.result("warn", expected, "max_sessions is unlimited; host has %d MB (%s)" % (mem_mb, source))
    need = max_sessions * SESSION_MB
    actual = "%d x %d MB = %d MB, host has %d MB (%s)" % (max_sessions, SESSION_MB, need, mem_mb, source)
    return check.result("pass" if need <= mem_mb else "warn", expected, actual)


def session_dir_of(s, sessions_dir):
    """The directory the launcher gave the session: what it exported (or the
    wrong variable it exported), else what it registered."""
    report = s.report or {}
    for key in ("config_dir", "session_dir"):
        if report.get(key):
            # A relative one is where the client took it: from where it ran.
            return os.path.realpath(os.path.join(s.cwd, report[key]))
    if s.entry_id:
        return os.path.join(os.path.realpath(sessions_dir), s.entry_id)
    return None


def check_parallel(sessions, probe):
    check = Check("parallel-launch")
    problems = []
    codes = [s.returncode for s in sessions]
    if probe and any(code != 0 for code in codes):
        problems.append("exit codes %s" % codes)
    if not probe and any(code is None or code in LAUNCHER_FAILURES or code < 0 or code >= 128 for code in codes):
        # Offline, Claude Code's onboarding exits 1 by itself: only the
        # launcher's own failures and killed sessions count.
        problems.append("exit codes %s (64/70/75 are the launcher's own failures)" % codes)
    if probe:
        missing = [s.label() for s in sessions if s.report is None]
        if missing:
            problems.append("client never ran in %s" % ", ".join(missing))
        else:
            # The verifier's clock: a probe was running when its marker was
            # read, and had ended when its launcher was reaped.
            latest_start = max(s.exited if s.started is None else s.started for s in sessions)
            earliest_end = min(s.exited for s in sessions)
            if latest_start >= earliest_end:
                problems.append("not running at once: the last session started %.2fs after the first ended"
                                % (latest_start - earliest_end))
            elif not all(s.report["all_started"] for s in sessions):
                problems.append("some sessions gave up waiting for the others")
    else:
        latest = max(s.launched for s in sessions)
        if min(s.exited for s in sessions) <= latest:
            problems.append("a session ended before the last one was launched")
    expected = "%d sessions running at once, all exiting 0" % len(sessions)
    if not probe:
        expected = "%d sessions running at once, none refused or failed by the launcher" % len(sessions)
    return check.verdict(problems, expected,
                         "%d sessions overlapped, exit codes %s" % (len(sessions), codes))


def relative_config(s):
    """A problem if the session got a relative CLAUDE_CONFIG_DIR (it means
    another directory wherever the client's working directory is)."""
    config = (s.report or {}).get("config_dir")
    if config and not os.path.isabs(config):
        return "%s: CLAUDE_CONFIG_DIR %r is not an absolute path" % (s.label(), config)
    return None


def check_history(sessions, sessions_dir, default_history, others):
    """Each session's prompt line in <its dir>/history.jsonl (no line of
    another session there, distinct inodes), its .claude.json and its
    transcript projects/<cwd>/<sessionId>.jsonl in its own dir."""
    check = Check("history-isolation")
    problems = []
    inodes = {}
    for s in sessions:
        sdir = session_dir_of(s, sessions_dir)
        if relative_config(s):
            problems.append(relative_config(s))
        report = s.report or {}
        if report and not report.get("config_dir"):
            problems.append("%s: CLAUDE_CONFIG_DIR was not set, history went to %s instead of %s"
                            % (s.label(), default_history, os.path.join(sdir or "<session dir>", "history.jsonl")))
            continue
        if sdir is None:
            problems.append("%s: no session directory" % s.label())
            continue
        state = os.path.join(sdir, ".claude.json")
        if not os.path.isfile(state) or os.path.islink(state):
            problems.append("%s: no .claude.json of its own in %s" % (s.label(), sdir))
        path = os.path.join(sdir, "history.jsonl")
        try:
            st = os.stat(path)
            with open(path) as f:
                entries = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError) as err:
            reached = report.get("screen") == "prompt"
            problems.append("%s: %s: %s%s" % (s.label(), path, getattr(err, "strerror", None) or err,
                                              "" if reached else " (the client never reached its prompt)"))
            continue
        displays = [e.get("display") for e in entries if isinstance(e, dict)]
        own = [e for e in entries if isinstance(e, dict) and e.get("display") == s.display]
        foreign = [d for d in displays if d in others and d not in (s.display, getattr(s.resume, "display", None))]
        if not own:
            problems.append("%s: %s has no line of its prompt %r" % (s.label(), path, s.display))
        if foreign:
            problems.append("%s: %s holds %d lines of other sessions" % (s.label(), path, len(foreign)))
        sid = own[0].get("sessionId") if own else None
        if sid and not any(os.path.isfile(os.path.join(sdir, "projects", p, sid + ".jsonl"))
                           for p in listdir(os.path.join(sdir, "projects"))):
            problems.append("%s: no transcript projects/<cwd>/%s.jsonl in %s" % (s.label(), sid, sdir))
        key = (st.st_dev, st.st_ino)
        if key in inodes:
            problems.append("%s and %s share history inode %d" % (inodes[key], s.label(), st.st_ino))
        inodes[key] = s.label()
    return check.verdict(problems, "each session's prompt in <its session dir>/history.jsonl (distinct inodes, no other "
                         "session's lines), its .claude.json and transcript projects/<cwd>/<id>.jsonl there too",
                         "%d histories, inodes %s" % (len(inodes), sorted(k[1] for k in inodes)))


def listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def user_named(uid):
    """The user csdeploy runs as, by name: with `become`, the become user
    (not the login user, who only reached the host)."""
    import pwd
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = "a user without a name"
    return "%s (uid %d, the user csdeploy runs as: the become user, else the login user)" % (name, uid)


def check_directories(sessions, sessions_dir):
    check = Check("directory-isolation")
    problems = []
    seen = {}
    uid = os.getuid()
    root = os.path.realpath(sessions_dir)
    for s in sessions:
        sdir = session_dir_of(s, sessions_dir)
        if relative_config(s):
            problems.append(relative_config(s))
        if sdir is None:
            problems.append("%s: no session directory" % s.label())
            continue
        name = os.path.basename(sdir)
        if os.path.dirname(sdir) != root or not UUID_RE.match(name):
            problems.append("%s: %s is not a UUID directory in %s" % (s.label(), sdir, root))
        if sdir in seen:
            problems.append("%s and %s share %s" % (seen[sdir], s.label(), sdir))
        seen[sdir] = s.label()
        try:
            st = os.lstat(sdir)
        except OSError:
            problems.append("%s: %s does not exist" % (s.label(), sdir))
            continue
        if not stat.S_ISDIR(st.st_mode):
            problems.append("%s: %s is not a directory" % (s.label(), sdir))
        if stat.S_IMODE(st.st_mode) != 0o700:
            problems.append("%s: mode %04o" % (s.label(), stat.S_IMODE(st.st_mode)))
        if st.st_uid != uid:
            problems.append("%s: owned by uid %d, not %s" % (s.label(), st.st_uid, user_named(uid)))
    problems += private_layout(sessions_dir, uid)
    return check.verdict(problems, "distinct UUID-named directories, mode 0700, owned by %s, "
                         "in a private sessions/ (sessions/ and active/ 0700, .registry 0600)"
                         % user_named(uid),
                         "%d distinct UUID directories, 0700, uid %d; sessions/, active/, .registry private"
                         % (len(seen), uid))


def private_layout(sessions_dir, uid):
    """sessions/ and sessions/active are real 0700 directories of the user
    csdeploy runs as, the registry a 0600 file of theirs (what is missing is left to the
    checks that need it)."""
    problems = []
    for path, want, kind in ((sessions_dir, 0o700, stat.S_ISDIR),
                             (os.path.join(sessions_dir, "active"), 0o700, stat.S_ISDIR),
                             (os.path.join(sessions_dir, ".registry"), 0o600, stat.S_ISREG)):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not kind(st.st_mode):
            problems.append("%s is not a %s" % (path, "directory" if want == 0o700 else "regular file"))
            continue
        if stat.S_IMODE(st.st_mode) != want:
            problems.append("%s: mode %04o, expected %04o" % (path, stat.S_IMODE(st.st_mode), want))
        if st.st_uid != uid:
            problems.append("%s: owned by uid %d, not %s" % (path, st.st_uid, user_named(uid)))
    return problems


def check_shared_state(sessions, sessions_dir, inherit_link):
    check = Check("no-shared-state")
    problems = []
    policy = []
    owners = {}
    dirs = sorted({d for d in (session_dir_of(s, sessions_dir) for s in sessions) if d})
    for sdir in dirs:
        label = os.path.basename(sdir)
        for root, subdirs, files in os.walk(sdir):
            for name in subdirs + files:
                path = os.path.join(root, name)
                rel = os.path.relpath(path, sdir)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    target = os.path.realpath(path)
                    if target == sdir or target.startswith(sdir + os.sep):
                        continue
                    if rel in inherit_link:
                        policy.append(rel)
                    else:
                        problems.append("%s/%s is a symlink to %s, outside its session" % (label, rel, target))
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    problems.append("%s/%s has %d hard links" % (label, rel, st.st_nlink))
                key = (st.st_dev, st.st_ino)
                if key in owners and owners[key] != label:
                    problems.append("%s/%s shares inode %d with session %s" % (label, rel, st.st_ino, owners[key]))
                owners[key] = label
    detail = None
    if policy:
        detail = "shared by policy (inherit_link): %s" % ", ".join(sorted(set(policy)))
    return check.verdict(problems, "no hard links, no symlinks out of a session dir except inherit_link, no shared inodes",
                         "%d session dirs share nothing" % len(dirs), detail)


def check_default(before, after, history_before, history_after, default_history):
    check = Check("default-untouched")
    problems = []
    if history_before != history_after:
        def show(state):
            if state is None:
                return "absent"
            return "size %d, mtime_ns %d, sha256 %s" % (state["size"], state["mtime_ns"], state.get("sha256", "")[:12])
        problems.append("%s changed: was %s, now %s" % (default_history, show(history_before), show(history_after)))
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k) and k != "history.jsonl")
    if changed:
        shown = ", ".join(changed[:10]) + (" and %d more" % (len(changed) - 10) if len(changed) > 10 else "")
        problems.append("changed outside sessions/: %s" % shown)
    return check.verdict(problems, "default history and everything outside sessions/ unchanged",
                         "unchanged (%d entries watched)" % len(before))


def check_registry(sessions, sessions_dir):
    check = Check("registry-tracking")
    registry = read_registry(sessions_dir)
    if registry is None:
        return check.result("fail", "every test session in the registry, active while running, ended after",
                            "registry %s missing or unreadable" % os.path.join(sessions_dir, ".registry"))
    by_name = {e.get("name"): e for e in registry.values() if isinstance(e, dict)}
    problems = []
    for s in sessions:
        entry = by_name.get(s.name)
        if entry is None:
            problems.append("%s: no registry entry" % s.label())
            continue
        if not s.seen_active:
            problems.append("%s: never seen active while it ran" % s.label())
        if entry.get("status") != "ended":
            problems.append("%s: status %r after exit, expected 'ended'" % (s.label(), entry.get("status")))
        else:
            last = s.resume if s.resume is not None and s.resume.pid else s
            if entry.get("exit_code") != last.returncode:
                problems.append("%s: recorded exit code %r, real %r" % (s.label(), entry.get("exit_code"),
                                                                       last.returncode))
    return check.verdict(problems, "every test session in the registry, active while running, ended after",
                         "%d sessions tracked: active, then ended" % len(sessions))


def check_links(sessions, sessions_dir, active_dir):
    check = Check("active-links")
    if not os.path.isdir(active_dir) or os.path.islink(active_dir):
        return check.result("fail", "%s is a directory" % active_dir, "missing")
    problems = []
    remaining = active_links(active_dir)
    for s in sessions:
        # The link belongs with the registered directory; without a registry
        # entry, with the directory the session was given.
        if s.entry_id:
            sdir = os.path.join(os.path.realpath(sessions_dir), s.entry_id)
        else:
            sdir = session_dir_of(s, sessions_dir)
        sid = s.entry_id or (os.path.basename(sdir) if sdir else None)
        if s.seen_link is None:
            problems.append("%s: no active link while it ran" % s.label())
        elif sdir and os.path.realpath(s.seen_link) != sdir:
            problems.append("%s: active link points to %s, not %s" % (s.label(), s.seen_link, sdir))
        if sid and sid in remaining:
            problems.append("%s: active link still there after exit" % s.label())
    return check.verdict(problems, "a link per running session in sessions/active, gone after exit",
                         "%d links appeared and were removed" % len(sessions))


def skipped(check_ids, reason):
    return [Check(i).result("skip", detail=reason) for i in check_ids]


SESSION_CHECKS = ["parallel-launch", "onboarding", "history-isolation", "directory-isolation", "no-shared-state",
                  "inherit-policy", "credential-store", "default-untouched", "resume", "registry-tracking",
                  "active-links", "cleanup"]


# ------------------------------------------------------------ client, policy

class Capture(object):
    """argv started at once, stdin /dev/null, its output in files of work;
    result() waits for it (up to timeout seconds from its start)."""

    def __init__(self, argv, env, work, name, timeout):
        self.out, self.err = os.path.join(work, name + ".out"), os.path.join(work, name + ".err")
        self.end = time.monotonic() + timeout
        self.failed = None
        try:
            self.pid = spawn(argv, env, self.out, err=self.err)
        except OSError as e:
            self.pid, self.failed = None, (127, "", "%s: %s" % (argv[0], e.strerror))

    def result(self):
        """(exit code or None on timeout, stdout, stderr)."""
        if self.pid is None:
            return self.failed
        code = None
        while True:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                code = exit_code(status)
                break
            if time.monotonic() > self.end:
                self.stop()
                break
            time.sleep(0.01)
        self.pid = None
        self.failed = code, (read_raw(self.out) or "").strip(), (read_raw(self.err) or "").strip()
        return self.failed

    def stop(self):
        """Kills it (and what it started) and reaps it, if it still runs."""
        if self.pid is not None:
            kill_and_reap(self.pid)


def run_capture(argv, env, work, name, timeout):
    """(exit code or None on timeout, stdout, stderr) of argv, stdin /dev/null."""
    return Capture(argv, env, work, name, timeout).result()


SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox")


def wrapper_problem(path):
    """Why a `claude` that is a shell script would not run sessions where the
    launcher put them: it sets the config dir or the store itself."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    names = [os.path.basename(w.decode("utf-8", "replace")) for w in words[:2]]
    if not any(n in SHELLS for n in names):
        return None  # Claude Code's own cli.js (node), say
    found = [v for v in ("CLAUDE_CONFIG_DIR", "CLAUDE_SECURESTORAGE_CONFIG_DIR") if v.encode() in head]
    if found:
        return ("%s is a shell script that sets %s itself: every session would run with its value, "
                "not the directory the launcher gave it" % (path, " and ".join(found)))
    return None


def ask_for_client(launcher, launcher_text, env, work):
    """The launcher asked which client it runs (`--which-client`, CLAUDE_BIN
    unset), started at once: with the probe it runs while the sessions do.
    None: the launcher cannot say."""
    if b"--which-client" not in launcher_text:
        return None
    lookup = dict(env)
    lookup.pop("CLAUDE_BIN", None)
    return Capture([launcher, "--which-client"], lookup, work, "which-client", 10)


def check_client(probe, asked, env, work):
    """Which client the launcher runs (the answer to ask_for_client), and
    with --client claude its --version. Returns (result, path)."""
    check = Check("client")
    problems = []
    path = version = None
    if asked is None:
        problems.append("the deployed launcher has no --which-client (it cannot say which claude it runs)")
        why = "unknown"
    else:
        code, out, err = asked.result()
        if code == 0 and out:
            path = out.splitlines()[-1]
            why = None
        else:
            why = err or out or "exit %s" % code
            if not probe:
                problems.append("no claude: claude-session --which-client exit %s: %s" % (code, why[:300]))
    if path:
        wrapped = wrapper_problem(path)
        if wrapped:
            problems.append(wrapped)
        if not probe:
            code, out, err = run_capture([path, "--version"], env, work, "version", 30)
            if code == 0 and out:
                version = out.splitlines()[0]
            else:
                problems.append("%s --version exit %s: %s" % (path, code, (err or out)[:300]))
    if probe:
        info = {"kind": "probe", "path": None, "version": "built-in probe (mirrors Claude Code 2.1.332)",
                "launcher_client": path}
        passed = "probe; the launcher would run %s" % (path or "no claude (%s)" % (why or "none found")[:200])
        expected = "the launcher resolves claude to a client that keeps the launcher's directories"
    else:
        info = {"kind": "claude", "path": path, "version": version, "launcher_client": path}
        passed = "claude %s (%s)" % (path, version)
        expected = "claude found by claude-session --which-client, runs --version, keeps the launcher's directories"
    result = check.verdict(problems, expected, passed)
    result["client"] = info
    # A client that runs is run, even one this check fails (a wrapper): the
    # sessions then show what it does.
    return result, (path if probe or version else None)


def read_conf(bindir):
    conf = {}
    try:
        with open(os.path.join(bindir, "session.conf")) as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep and not key.startswith("#"):
                    conf[key.strip()] = value.strip()
    except OSError:
        pass
    return conf


def check_inherit_policy(conf, per_session_state, sessions, sessions_dir):
    """session.conf shares none of the per-session state, and no session dir
    holds such state as a link or a hard link."""
    check = Check("inherit-policy")
    problems = []
    state = set(per_session_state)
    for key in ("inherit_copy", "inherit_link"):
        for name in conf.get(key, "").split():
            first = os.path.normpath(name).split(os.sep)[0]
            if first in state:
                problems.append("session.conf %s shares %s, which Claude Code writes per session" % (key, name))
    for sdir in sorted({d for d in (session_dir_of(s, sessions_dir) for s in sessions) if d}):
        for name in sorted(state):
            path = os.path.join(sdir, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                problems.append("%s/%s is a link to %s" % (os.path.basename(sdir), name, os.path.realpath(path)))
            elif stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                problems.append("%s/%s has %d hard links" % (os.path.basename(sdir), name, st.st_nlink))
    shared = "copy: %s; link: %s" % (conf.get("inherit_copy") or "-", conf.get("inherit_link") or "-")
    return check.verdict(problems, "no per-session state (%s) in inherit_copy/inherit_link or linked into a session"
                         % " ".join(per_session_state), shared)


def user_state(home, claude_home):
    """Whether the user's own `claude` is past onboarding and logged in: what
    a session must reach too. ~/.claude.json, or claude_home's when that is
    where the launcher seeds from (see the contract)."""
    onboarded = False
    for path in (os.path.join(home, ".claude.json"), os.path.join(claude_home, ".claude.json")):
        try:
            with open(path) as f:
                if json.loads(f.read()).get("hasCompletedOnboarding") is True:
                    onboarded = True
        except (OSError, ValueError, AttributeError):
            pass
    return onboarded, os.path.exists(os.path.join(claude_home, ".credentials.json"))


def check_onboarding(sessions, probe, onboarded, logged_in):
    check = Check("onboarding")
    problems = []
    hint = []
    if not onboarded:
        hint.append("the user's own ~/.claude.json has not completed onboarding")
    if not logged_in:
        hint.append("the default store has no .credentials.json (not logged in)")
    for s in sessions:
        if probe:
            seen = (s.report or {}).get("screen")
            if seen is None:
                problems.append("%s: the client never ran" % s.label())
            elif seen == "onboarding":
                problems.append("%s: showed the onboarding (its .claude.json lacks hasCompletedOnboarding)" % s.label())
            elif seen == "login":
                problems.append("%s: showed the login screen (no .credentials.json in the store it used)" % s.label())
        elif s.drive is not None and s.drive.login is False:
            problems.append("%s: the client answered its prompt with \"Not logged in\" (the login screen): "
                            "it does not see the default store's login" % s.label())
        elif s.drive is not None and s.drive.landed and s.drive.login is None:
            # No answer is no proof of a login: not a pass.
            problems.append("%s: the client did not answer its prompt in %d s (neither a request nor \"Not "
                            "logged in\"): whether it sees the login is unknown; the screen showed %r" % (
                                s.label(), CLAUDE_ANSWER, s.drive.seen[-300:]))
        elif s.drive is None or not s.drive.landed:
            d = s.drive
            shown = (d.showed if d else None) or "%r" % (d.seen[-300:] if d else "")
            problems.append("%s: never reached the prompt (%s); the screen showed %s" % (
                s.label(), "last step %s" % d.step if d else "not started", shown))
    if problems and hint:
        problems.append("(%s: run claude once and log in on this host)" % "; ".join(hint))
    passed = "%d sessions reached the prompt; the typed prompt landed in a history" % len(sessions)
    if not probe:
        heard = sum(1 for s in sessions if s.drive is not None and s.drive.api.prompted)
        passed += " and went to the API (%s)" % (
            "the verifier's loopback API took each request" if heard == len(sessions) else
            "%d of %d reached the verifier's loopback API; the others' retries showed on the screen"
            % (heard, len(sessions)))
    if probe and hint:
        passed += " (the user's own claude would show %s too)" % " and ".join(
            w for w, h in (("onboarding", not onboarded), ("login", not logged_in)) if h)
    return check.verdict(problems, "no onboarding or login screen: each session's prompt came up and took a typed line",
                         passed)


def store_of(report, home, cwd):
    """The credential store a client with this environment uses."""
    store = report.get("store")
    if store is None:
        store = report.get("config_dir")
        if store is None:
            store = os.path.join(home, ".claude")
    elif store == "":
        store = os.path.join(home, ".claude")
    return os.path.realpath(os.path.join(cwd, store)), report.get("store") is not None


def check_credential_store(sessions, sessions_dir, claude_home, home):
    check = Check("credential-store")
    problems = []
    want = os.path.realpath(claude_home)
    for s in sessions:
        sdir = session_dir_of(s, sessions_dir)
        for d in [sdir] + ([os.path.join(sessions_dir, s.entry_id)] if s.entry_id else []):
            path = os.path.join(d, ".credentials.json") if d else None
            if path and os.path.lexists(path):
                kind = "a link to %s" % os.path.realpath(path) if os.path.islink(path) else "a file"
                problems.append("%s: %s is %s: a token refresh would leave the default store behind" % (
                    s.label(), path, kind))
                break
        if not s.report:
            problems.append("%s: the client's environment was not seen" % s.label())
            continue
        store, explicit = store_of(s.report, home, s.cwd)
        if store != want:
            how = "CLAUDE_SECURESTORAGE_CONFIG_DIR=%s" % s.report.get("store") if explicit else \
                "CLAUDE_SECURESTORAGE_CONFIG_DIR unset, so its config dir"
            problems.append("%s: its credential store is %s (%s), not %s" % (s.label(), store, how, want))
    return check.verdict(problems, "no .credentials.json in a session dir; every client's store "
                         "(CLAUDE_SECURESTORAGE_CONFIG_DIR) is the default %s" % want,
                         "%d sessions used the default store, none holds credentials" % len(sessions))


def check_resume(sessions, sessions_dir, probe, supported):
    check = Check("resume")
    problems = []
    if not supported:
        problems.append("the deployed launcher has no `resume` command")
    for s in sessions if supported else ():
        r = s.resume
        first_sid = (s.report or {}).get("session_id")
        if r is None or r.pid is None:
            problems.append("%s: not resumed (%s)" % (s.label(), "no registry entry" if not s.entry_id
                                                        else "its first run never reached the prompt"))
            continue
        if r.returncode in LAUNCHER_FAILURES or (r.returncode or 0) < 0 or (r.returncode or 0) >= 128:
            problems.append("%s: claude-session resume exit %s: %s" % (
                s.label(), r.returncode, (read_text(r.log) or "")[-200:]))
            continue
        if probe:
            got = (r.report or {}).get("session_id")
        else:
            got = r.drive.landed[1] if r.drive and r.drive.landed else None
        own = os.path.join(sessions_dir, s.entry_id, "history.jsonl")
        line = find_display(own, r.display)
        if got is None or line is None:
            problems.append("%s: the resumed client's prompt did not reach %s" % (s.label(), own))
        elif line.get("sessionId") != first_sid:
            problems.append("%s: the resumed client started conversation %s instead of continuing %s" % (
                s.label(), line.get("sessionId"), first_sid))
    detail = None
    if not probe and supported:
        shown = [s.label() for s in sessions if s.resume and s.resume.drive and s.prompt in s.resume.drive.seen]
        detail = "the first prompt was on the resumed screen in: %s" % (", ".join(shown) or "none")
    return check.verdict(problems, "claude-session resume ID -- --continue continues each session's conversation "
                         "(same sessionId, in its own history)",
                         "%d sessions resumed their conversation" % len(sessions), detail)


def find_display(path, display):
    """The first history entry in `path` whose display is exactly `display`."""
    try:
        with open(path) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("display") == display:
                    return entry
    except OSError:
        pass
    return None


def which(name, path):
    """shutil.which(name, path=path), without importing shutil."""
    if path is None:
        path = os.defpath
    for directory in path.split(os.pathsep) if path else ():
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None

