"""Leaving the host as it was: this run's test sessions removed by the
deployed cleaner, probe lines a broken launcher let into histories taken
out, and what the clients changed outside sessions/ put back.

One part of csdeploy's verifier (see main.py): src/builtin.rs joins
src/remote/common.py and the files of src/remote/verify/ into one source,
main.py first of these, so the names of every part are one namespace.
"""
import json
import os
import stat
import subprocess
import sys


def run_script(path, argv, env, errors):
    """Runs the Python program `path` as `python3 -I -S path argv...`, stdin
    /dev/null, stdout discarded, stderr to the file `errors`; returns its
    exit status (-N if killed by signal N). In a session of its own, so that
    a signal to our process group waits for it, as run() waits (see Stop)."""
    python = sys.executable or "python3"
    try:
        with open(errors, "wb") as err:
            return subprocess.run([python, "-I", "-S", path] + argv, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=err, start_new_session=True).returncode
    except OSError as e:
        with open(errors, "w") as err:
            err.write("cannot run %s: %s\n" % (python, e))
        return 127


def test_session_ids(sessions, sessions_dir, prefix):
    """Every session of this run the verifier can find: registered under
    this run's name pattern (seen running or not: a launcher that never got
    its client going still registered), or given a UUID dir it reported."""
    root = os.path.realpath(sessions_dir)
    ids = set()
    for s in sessions:
        if s.entry_id:
            ids.add(s.entry_id)
        sdir = session_dir_of(s, sessions_dir)
        if sdir and os.path.dirname(sdir) == root and UUID_RE.match(os.path.basename(sdir)):
            ids.add(os.path.basename(sdir))
    pids = {s.pid for s in sessions if s.pid} | {s.resume.pid for s in sessions if s.resume and s.resume.pid}
    for sid, entry in (read_registry(sessions_dir) or {}).items():
        if not isinstance(entry, dict) or not UUID_RE.match(sid):
            continue
        # By this run's name, or by the pid of one of its launchers (a
        # launcher that took `resume` for client arguments made a new one).
        if str(entry.get("name", "")).startswith(prefix) or entry.get("pid") in pids:
            ids.add(sid)
    return ids


def remove_test_sessions(ids, sessions_dir, bindir, env, errors):
    """One run of the deployed cleaner for all of them; its exit status."""
    argv = ["--sessions-dir", sessions_dir]
    for sid in sorted(ids):
        argv += ["--session", sid]
    return run_script(os.path.join(bindir, "cleanup-sessions.py"), argv, env, errors)


def leftovers(ids, sessions_dir, prefix):
    """What is left of this run: directories, registry entries, active links."""
    left = [sid for sid in sorted(ids) if os.path.lexists(os.path.join(sessions_dir, sid))]
    registry = read_registry(sessions_dir) or {}
    left += ["registry entry %s" % sid for sid, e in sorted(registry.items())
             if sid in ids or (isinstance(e, dict) and str(e.get("name", "")).startswith(prefix))]
    links = active_links(os.path.join(sessions_dir, "active"))
    left += ["active link %s" % sid for sid in sorted(ids) if sid in links]
    return left


def histories_outside(claude_home, sessions_dir, before_ids):
    """Histories the probes must not write to: the default one and those of
    the sessions that existed before the run. Path -> (inode, size) or None."""
    paths = [os.path.join(claude_home, "history.jsonl")]
    paths += [os.path.join(sessions_dir, sid, "history.jsonl") for sid in before_ids]
    states = {}
    for path in paths:
        try:
            st = os.lstat(path)
            states[path] = (st.st_ino, st.st_size, st.st_atime_ns, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else "other"
        except OSError:
            states[path] = None
    return states


def undo_probe_lines(states, sessions):
    """Takes this run's probe lines back out of the histories in `states`
    (see histories_outside) that a broken launcher let them into: only when
    what was appended is exactly lines of this run's probes, each once, and
    the file is the same file; a file that did not exist and holds only such
    lines is removed. Anything else is left as it is. What was done, as text."""
    ours = {line for s in sessions for line in s.history_lines}
    notes = []
    for path, before in sorted(states.items()):
        if before == "other":
            continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            start = 0 if before is None else before[1]
            if (before is not None and st.st_ino != before[0]) or st.st_size <= start:
                continue
            os.lseek(fd, start, os.SEEK_SET)
            added = os.read(fd, st.st_size - start + 1)
            lines = [line + b"\n" for line in added.split(b"\n")[:-1]]
            if (not added.endswith(b"\n") or not lines or len(set(lines)) != len(lines)
                    or not set(lines) <= ours or os.fstat(fd).st_size != st.st_size):
                notes.append("%s: %d bytes appended that are not only this run's probe lines, left" % (path, len(added)))
                continue
            if before is None:
                os.unlink(path)
                notes.append("%s: held only this run's probe lines, removed" % path)
            else:
                os.ftruncate(fd, start)
                os.utime(fd, ns=(before[2], before[3]))
                notes.append("%s: %d probe lines of this run taken out (back to %d bytes)" % (path, len(lines), start))
        except OSError:
            continue
        finally:
            os.close(fd)
    return notes


def cleanup(sessions, sessions_dir, bindir, env, work, before_ids, before_registry, prefix):
    check = Check("cleanup")
    problems = []
    ids = test_session_ids(sessions, sessions_dir, prefix) - set(before_ids)
    # What the cleaner must never remove: sessions/ itself, active/, the registry.
    layout = [p for p in (sessions_dir, os.path.join(sessions_dir, "active"), os.path.join(sessions_dir, ".registry"))
              if os.path.lexists(p)]
    if ids:
        errors = os.path.join(work, "cleaner.err")
        code = remove_test_sessions(ids, sessions_dir, bindir, env, errors)
        if code != 0:
            problems.append("cleaner exit %d: %s" % (code, (read_text(errors) or "")[:300]))
    gone = [p for p in layout if not os.path.lexists(p)]
    if gone:
        problems.append("gone after the cleaner ran: %s" % ", ".join(gone))
    left = leftovers(ids, sessions_dir, prefix)
    if left:
        problems.append("left of this run's test sessions (%s*): %s" % (prefix, ", ".join(left)))
    after_ids = session_ids(sessions_dir)
    lost = [sid for sid in before_ids if sid not in after_ids]
    if lost:
        problems.append("pre-existing sessions gone: %s" % ", ".join(lost))
    registry = read_registry(sessions_dir) or {}
    lost_entries = [sid for sid in (before_registry or {}) if sid not in registry]
    if lost_entries:
        problems.append("pre-existing registry entries gone: %s" % ", ".join(lost_entries))
    return check.verdict(problems, "test sessions removed by the deployed cleaner; sessions/, active/, "
                         ".registry and pre-existing sessions kept",
                         "%d test sessions removed, %d pre-existing kept" % (len(ids), len(before_ids)))


MAX_SAVED = 16 << 20


def save_state_files(home, claude_home):
    """The bytes (and times) of the user's .claude.json files before the run:
    a broken launcher lets a client rewrite them, and verify puts them back."""
    saved = {}
    for path in {os.path.join(home, ".claude.json"), os.path.join(claude_home, ".claude.json")}:
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SAVED:
                saved[path] = "other"
                continue
            with open(path, "rb") as f:
                saved[path] = (f.read(), st.st_atime_ns, st.st_mtime_ns)
        except OSError:
            saved[path] = None
    return saved


def restore_default(saved, before, claude_home, home, cwd, sids, history_path, history_size):
    """Puts back what this run's clients changed outside sessions/ (only
    what is provably theirs): the .claude.json files saved before, history
    lines of the run's working directory appended to the default history,
    and new entries that are the run's: projects/<its cwd>, .claude.json
    backups, names holding one of its conversation ids, and top-level
    entries that did not exist. What was done, as text."""
    notes = []
    for path, old in sorted(saved.items()):
        if old == "other":
            continue
        try:
            with open(path, "rb") as f:
                now = f.read()
        except OSError:
            now = None
        if old is None:
            if now is not None:
                os.unlink(path)
                notes.append("%s: made by this run, removed" % path)
        elif now != old[0]:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, old[0])
                os.utime(fd, ns=(old[1], old[2]))
            finally:
                os.close(fd)
            notes.append("%s: put back as it was" % path)
    project = json.dumps(cwd)
    try:
        fd = os.open(history_path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        fd = None
    if fd is not None:
        try:
            size = os.fstat(fd).st_size
            start = history_size or 0
            if size > start:
                os.lseek(fd, start, os.SEEK_SET)
                added = os.read(fd, size - start)
                lines = added.split(b"\n")
                ours = all(not line or ('"project":%s' % project).encode() in line.replace(b'": ', b'":')
                           for line in lines)
                if ours and history_size is None:
                    os.unlink(history_path)
                    notes.append("%s: held only this run's lines, removed" % history_path)
                elif ours:
                    os.ftruncate(fd, start)
                    notes.append("%s: this run's lines taken out" % history_path)
                else:
                    notes.append("%s: lines not only of this run appended, left" % history_path)
        finally:
            os.close(fd)
    after = snapshot_default(claude_home, home)
    mangled = mangle(cwd)
    tops = {k.split(os.sep)[0] for k in before}
    doomed = []
    for key in after:
        if key in before or key.startswith("~") or key in ("history.jsonl", ".claude.json"):
            continue
        first = key.split(os.sep)[0]
        if (first not in tops or key.startswith(os.path.join("projects", mangled))
                or key.startswith(os.path.join("backups", ".claude.json.backup."))
                or any(sid in key for sid in sids)):
            doomed.append(key)
    for key in sorted(doomed, key=lambda k: -k.count(os.sep)):
        path = os.path.join(claude_home, key)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                remove_tree(path)
            else:
                os.unlink(path)
        except OSError:
            continue
    if doomed:
        notes.append("removed what this run made outside sessions/: %s" % ", ".join(sorted(doomed)[:10]))
    return notes


def remove_tree(path):
    """rmtree of the work directory (only what this run made), never
    following a symlink."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        entry = os.path.join(path, name)
        try:
            if stat.S_ISDIR(os.lstat(entry).st_mode):
                remove_tree(entry)
            else:
                os.unlink(entry)
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass
