#!/usr/bin/env python3
"""cleanup-sessions.py: remove Claude Code session directories nobody needs.

    cleanup-sessions.py [--dry-run] [--days N] [--json]
                        [--sessions-dir DIR] [--session ID]...

Candidates are only the UUID-named real directories directly inside the
sessions directory (default <claude_home>/sessions from session.conf).  Symlinks,
files, active/, .registry, .registry.lock and any other name are never touched,
and nothing is ever deleted through a symlink: if the sessions directory itself
or its active/ is a symlink, the cleaner deletes nothing and exits 3.

A candidate is removed when it is
  orphaned  the registry exists and has no entry for it (with no registry at
            all nothing counts as orphaned: we cannot tell), and it is empty
            (below); an orphan that holds a history or a transcript is kept
            ("orphaned-has-history", noted on stderr) whatever --days says:
            sessions from before the registry, or from before a damaged
            registry was moved away, are unregistered yet hold real work.
            Only --session ID removes one,
  empty     it has no history.jsonl, or a 0-byte one, and no transcript
            (projects/*/*.jsonl: headless `claude -p` writes those, never history),
  old       (only with --days N) nothing inside changed for N days,
  requested it is named by --session ID (repeatable; then only those are looked at),
and is not protected.  Protected, whatever else holds (see
session_registry.protection): its launcher is alive (or was started in another
PID namespace, whose processes we cannot see, and not since ended or before a
reboot); a process has it as
CLAUDE_CONFIG_DIR; or it has an active/ link and the registry has no entry
proving its launcher dead (this is what protects sessions when there is no
registry).  Registry entries whose directory is gone and whose launcher is
dead are dropped too (reason "missing").

Credentials: a session made by an older launcher may hold the only copy of
rotated login tokens (a regular .credentials.json newer than the default
store's, <claude_home>/.credentials.json, claude_home being the sessions
directory's parent).  Before deciding, the newest such file is copied into
the default store (atomically, 0600; session_registry.rescue_credentials);
a session that still holds credentials newer than the default store's
(the copy failed) is kept, reason "credentials-newer-than-default", even
when --session names it.  --dry-run copies nothing and reports what it would.

Everything is decided and done under the registry lock, so a launch cannot
slip in between; a removal deletes the active/ link, the directory and the
registry entry.  --dry-run takes the same decisions and prints them without
changing anything.

--json prints {"removed": [{"id", "reason", "dir"}], "kept": [...], "dry_run": bool,
"credentials_rescued": [{"id", "dir", "to", "error"}]} (at most one item; error
null when the copy worked).

Exit codes: 0 ok; 1 something could not be removed, or --session named a
session that is protected or does not exist, or the lock could not be taken;
2 the registry exists but cannot be parsed (nothing is deleted); 3 the sessions
directory or its active/ is a symlink (nothing is deleted); 64 usage error.
"""
import math
import os
import stat
import sys
import time


# What this tool creates is private, whatever the user's umask.
os.umask(0o077)
# session_registry is imported without writing bytecode: ~/.claude stays
# exactly as csdeploy installed it. (The launcher, which runs at every session
# start, caches it in a private directory: see bytecode_cache there.)
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import session_registry as sr  # noqa: E402

sr.PROG = "cleanup-sessions.py"

DAY = 86400
EX_SYMLINK = 3


USAGE = """usage: cleanup-sessions.py [--dry-run] [--days N] [--json] [--sessions-dir DIR] [--session ID]...

Remove empty Claude Code sessions (registered or not) and, with --days, old ones;
never a live one, never an unregistered one that holds history.

  --dry-run           only print what would be removed
  --days N            also remove sessions with no activity for N days
  --json              print the result as JSON
  --sessions-dir DIR  default: <claude_home>/sessions from session.conf
  --session ID        remove exactly this session (refused while it is live); repeatable
"""


def _days(value):
    try:
        n = float(value)
    except ValueError:
        raise ValueError("%r is not a number" % value)
    if not math.isfinite(n):  # nan compares false with everything: no session would be old
        raise ValueError("%r is not a finite number" % value)
    if n < 0:
        raise ValueError("must not be negative")
    return n


OPTIONS = {"--dry-run": (sr.FLAG, False), "--days": (_days, None), "--json": (sr.FLAG, False),
           "--sessions-dir": (sr.path_value, None), "--session": ([sr.session_id], None)}


def claude_home_of(sessions_dir):
    return os.path.dirname(os.path.normpath(sessions_dir))


def rescue(sessions_dir, dry_run):
    """Copy the newest session credentials newer than the default store's
    into it; returns the report items (none or one). In a dry run nothing
    is copied."""
    claude_home = claude_home_of(sessions_dir)
    dirs = sr.session_dirs(sessions_dir)
    sid, error = sr.rescue_credentials(claude_home, dirs, dry_run=dry_run)
    if sid is None:
        return []
    return [{"id": sid, "dir": dirs[sid], "to": sr.default_credentials(claude_home), "error": error}]


def assumed_default_mtime(rescued, dry_run):
    """For plan(): in a dry run, the default store's mtime as the rescue would
    leave it (no newer than the copied file); else False: read it."""
    if not dry_run or not rescued:
        return False
    try:
        return os.lstat(os.path.join(rescued[0]["dir"], sr.CREDENTIALS_NAME)).st_mtime_ns
    except OSError:
        return False


def plan(sessions_dir, registry, days, only, default_mtime=False):
    """Decide (removed, kept) lists; pure apart from reading the file system.
    default_mtime: see assumed_default_mtime."""
    entries = registry["sessions"] if registry is not None else {}
    dirs = sr.session_dirs(sessions_dir)
    in_use = sr.dirs_in_use(sessions_dir)
    newer = sr.newer_credentials(claude_home_of(sessions_dir), dirs, default_mtime)
    now = time.time()
    removed, kept = [], []

    ids = sorted(set(dirs) | set(entries))
    if only:
        ids = [sid for sid in only if sid in dirs or sid in entries]
    for sid in ids:
        entry = entries.get(sid)
        path = dirs.get(sid)
        item = {"id": sid, "dir": path or os.path.join(sessions_dir, sid)}
        guard = sr.protection(sid, entry, registry is not None, sessions_dir, in_use)
        if guard:
            kept.append(dict(item, reason=guard))
            continue
        if sid in newer:
            # The only copy of a login: never deleted (the copy into the
            # default store failed, or it became newer meanwhile).
            kept.append(dict(item, reason="credentials-newer-than-default"))
            continue
        if path is None:
            reason = "missing"  # a dead entry whose directory is already gone
        elif only:
            reason = "requested"
        elif registry is not None and entry is None:
            # No entry is no evidence that the directory holds nothing: older
            # launchers kept no registry, and one moved away (the advice for
            # a damaged one) is recreated empty by the next launch. Only an
            # orphan with nothing to lose goes; the others wait for --session.
            if holds_work(path):
                kept.append(dict(item, reason="orphaned-has-history"))
                continue
            reason = "orphaned"
        elif not holds_work(path):
            reason = "empty"
        elif days is not None and (sr.last_activity(path) or 0) < now - days * DAY:
            reason = "old"
        else:
            kept.append(dict(item, reason="has-history"))
            continue
        removed.append(dict(item, reason=reason))
    return removed, kept


def holds_work(path):
    """A history (non-empty history.jsonl) or a transcript: what a user could lose."""
    return sr.history_bytes(path) > 0 or sr.has_transcripts(path)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path, dir_fd=None):
    """rm -r path (relative to dir_fd if given) without ever following a
    symlink, even if the tree changes while it runs: every directory is opened
    with O_NOFOLLOW relative to its parent's descriptor, and every name is
    removed relative to it, so a directory swapped for a symlink meanwhile is
    an error, not a way out. (shutil.rmtree does the same on Linux; importing
    shutil would cost more than a whole removal, through fnmatch and re.)"""
    if not {os.open, os.unlink, os.rmdir} <= os.supports_dir_fd:
        raise OSError("refusing to delete %s: no *at() system calls here" % path)
    fd = os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        _remove_contents(fd)
    finally:
        os.close(fd)
    os.rmdir(path, dir_fd=dir_fd)


def _remove_contents(dir_fd):
    with os.scandir(dir_fd) as entries:
        names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    for name, is_dir in names:
        if is_dir:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                _remove_contents(fd)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)


def symlinked(sessions_dir):
    """sessions_dir or its active/ if either is a symlink, else None.

    Both are ours: a symlink there leads to somebody else's directory, where
    a UUID-named entry is not a session of ours."""
    for path in (os.path.normpath(sessions_dir), os.path.join(sessions_dir, sr.ACTIVE_NAME)):
        if os.path.islink(path):
            return path
    return None


def _unlink_symlink(name, dir_fd):
    try:
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def apply(sessions_dir, registry, removed):
    """Delete what plan() chose; returns the ids that failed.  Caller holds the lock.

    Everything is removed relative to descriptors of sessions/ and active/
    opened with O_NOFOLLOW: if either became a symlink since main() looked,
    that is an error, not a way into another directory."""
    failed = []
    changed = False
    if not removed:
        return failed
    sessions_fd = os.open(sessions_dir, _DIR_FLAGS)
    try:
        try:
            active_fd = os.open(sr.ACTIVE_NAME, _DIR_FLAGS, dir_fd=sessions_fd)
        except FileNotFoundError:
            active_fd = None
        try:
            changed = _remove_sessions(sessions_fd, active_fd, registry, removed, failed)
        finally:
            if active_fd is not None:
                os.close(active_fd)
    finally:
        os.close(sessions_fd)
    if changed:
        sr.write_registry(sessions_dir, registry)
    return failed


def _remove_sessions(sessions_fd, active_fd, registry, removed, failed):
    changed = False
    for item in removed:
        sid = item["id"]
        try:
            if active_fd is not None:
                _unlink_symlink(sid, active_fd)
            if item["reason"] != "missing":
                remove_tree(sid, dir_fd=sessions_fd)
        except OSError as e:
            sys.stderr.write("cleanup-sessions: cannot remove %s: %s\n" % (item["dir"], e))
            failed.append(sid)
            continue
        # The entry goes only after its directory: an interrupted run leaves a
        # dead entry ("missing" next time), never an unregistered directory.
        if registry is not None and registry["sessions"].pop(sid, None) is not None:
            changed = True
    return changed


def main(argv=None):
    opts = sr.command_line("cleanup-sessions.py", USAGE, sys.argv[1:] if argv is None else argv, OPTIONS)
    dry_run, days, only = opts["--dry-run"], opts["--days"], opts["--session"]
    if only:
        only = list(dict.fromkeys(only))  # each session once, in the order given
    sessions_dir = opts["--sessions-dir"] or sr.load_config().sessions_dir

    link = symlinked(sessions_dir)
    if link:
        sys.stderr.write("cleanup-sessions: %s is a symlink; refusing to delete anything through it "
                         "(name the real directory with --sessions-dir)\n" % link)
        return EX_SYMLINK
    if not os.path.isdir(sessions_dir):
        removed, kept, failed, rescued = [], [], [], []
    else:
        try:
            with sr.RegistryLock(sessions_dir):
                registry = sr.read_registry(sessions_dir)
                rescued = rescue(sessions_dir, dry_run)
                removed, kept = plan(sessions_dir, registry, days, only,
                                     assumed_default_mtime(rescued, dry_run))
                failed = [] if dry_run else apply(sessions_dir, registry, removed)
        except sr.RegistryError as e:
            sys.stderr.write("cleanup-sessions: %s\ncleanup-sessions: refusing to delete "
                             "anything until the registry is repaired or moved away\n" % e)
            return 2
        except (sr.LockTimeout, OSError) as e:
            sys.stderr.write("cleanup-sessions: %s\n" % e)
            return 1
    removed = [r for r in removed if r["id"] not in failed]

    if opts["--json"]:
        import json

        sys.stdout.write(json.dumps({"removed": removed, "kept": kept, "dry_run": dry_run,
                                     "credentials_rescued": rescued}, indent=1) + "\n")
    else:
        sys.stdout.reconfigure(errors="backslashreplace")  # a path that is not UTF-8
        for r in rescued:
            if r["error"]:
                continue
            sys.stdout.write("%s credentials of %s (newer than the default store) into %s\n"
                             % ("would copy the" if dry_run else "copied the", r["id"], r["to"]))
        verb = "would remove" if dry_run else "removed"
        for r in removed:
            sys.stdout.write("%s %s (%s) %s\n" % (verb, r["id"], r["reason"], r["dir"]))
        for k in kept:
            if k["reason"] == "orphaned-has-history":
                sys.stderr.write("cleanup-sessions: keeping %s: not in the registry but it holds "
                                 "history; --session %s removes it\n" % (k["dir"], k["id"]))
            elif k["reason"] == "credentials-newer-than-default":
                sys.stderr.write("cleanup-sessions: keeping %s: its .credentials.json is newer than "
                                 "%s (the only copy of a login)%s\n"
                                 % (k["dir"], sr.default_credentials(claude_home_of(sessions_dir)),
                                    "".join("; copying it there failed: %s" % r["error"]
                                            for r in rescued if r["id"] == k["id"] and r["error"])))

    status = 1 if failed else 0
    gone = {r["id"] for r in removed} | set(failed)
    for sid in sorted(set(only or ()) - gone):
        guard = [k["reason"] for k in kept if k["id"] == sid]
        if guard == ["credentials-newer-than-default"]:
            sys.stderr.write("cleanup-sessions: not removing %s: it holds the newest login\n" % sid)
        elif guard:
            sys.stderr.write("cleanup-sessions: not removing %s: it is live (%s)\n" % (sid, guard[0]))
        else:
            sys.stderr.write("cleanup-sessions: no session %s in %s\n" % (sid, sessions_dir))
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
