#!/usr/bin/env python3
"""Session registry for csdeploy's parallel Claude Code sessions.

This module is the one implementation of the on-disk session layout, the
registry format, its locking, and the rules that decide whether a session is
live.  `claude-session` (bash) calls it as a program; `claude-session-list` and
`cleanup-sessions.py` import it.  Python 3.8+ standard library only.

Configuration
-------------
`$CLAUDE_SESSION_CONF` if set and non-empty, else `session.conf` next to this
file (symlinks resolved).  A missing file means all defaults.  Lines are
`key=value` (value = rest of the line, trimmed); blank lines and lines starting
with `#` are ignored, as are unknown keys.  The file is parsed, never sourced.

    claude_home   default ~/.claude; a leading `~/` or a bare `~` is $HOME,
                  a relative path is taken relative to $HOME
    max_sessions  live sessions allowed at once, default 4, 0 = unlimited
    inherit_copy  names relative to claude_home copied into each new session,
                  default "settings.json CLAUDE.md"
    inherit_link  names symlinked into each new session, default
                  ".credentials.json"
    host          label recorded in registry entries, default the hostname

Layout (all under <claude_home>/sessions/, which is one host's own)
------
    <uuid>/              a session's CLAUDE_CONFIG_DIR, mode 0700
    active/<uuid>        symlink -> <uuid>/ while its launcher runs
    .registry            the registry, JSON, mode 0600
    .registry.lock       flock(2) target guarding every registry update

The sessions directory must not be shared between hosts: liveness is judged
from this host's /proc.

Registry format (.registry)
---------------------------
    {
      "version": 1,
      "sessions": {
        "<uuid>": {
          "id":        "<uuid>",             same as the key
          "name":      "text" | null,        --name given to claude-session
          "host":      "label",              `host` from session.conf
          "pid":       1234,                 the launcher (bash) process
          "pid_start": 567890,               field 22 of /proc/<pid>/stat
          "boot_id":   "<uuid>" | null,      /proc/sys/kernel/random/boot_id
          "started":   "2025-11-15T14:16:00Z",
          "status":    "active" | "ended",
          "ended":     "2025-11-15T15:00:00Z" | null,
          "exit_code": 0 | null,             the client's exit code
          "dir":       "/abs/path/<uuid>"    informational only
        }
      }
    }

Every change happens under an exclusive flock on .registry.lock: read, modify,
write a temp file in the same directory, fsync, rename over .registry, fsync
the directory.  Readers that only look (claude-session-list) need no lock,
since the rename makes every version complete.  Anything that does not match
this shape (bad JSON, other version, an entry without an integer pid) makes the
whole registry "unreadable": callers then change nothing and exit non-zero,
because deciding what is live from half a registry could delete a live session.

The recorded "dir" is never used to delete anything: the only deletion
candidates are UUID-named real directories found directly in sessions/.

Liveness
--------
The launcher is alive when /proc/<pid>/stat exists, is not a zombie, shows the
recorded start time (so a reused pid does not count) and, when recorded, the
boot id is unchanged.  A session is live when its entry says "active" and its
launcher is alive.  An "active" entry whose launcher is not alive is reported
as "ended": a crashed launcher never keeps a session live forever.  Only live
sessions count against max_sessions.

The cleaner protects more than that (see protection()): a session is never
deleted while
  1. its registry entry is live, or
  2. any process we can inspect has CLAUDE_CONFIG_DIR set to the session dir
     (a client outliving a `kill -9`ed launcher, or a shell it started), or
  3. it has an active/<uuid> link and the registry gives no evidence that the
     launcher is dead: either there is no registry at all, or it has no entry
     for that id.  A link whose entry shows a dead launcher is stale.

Commands (used by claude-session)
---------------------------------
    register --id UUID --pid PID [--name NAME] [--force]
        Under the lock: capacity check, mkdir <uuid> (0700), add the entry,
        create the active link.  Then, outside the lock, seed the directory
        from the inherit lists.  Prints the session dir on stdout.
        Creating the directory under the same lock as the entry means the
        cleaner can never see it as an orphan.
    finish --id UUID --exit-code N
        Under the lock: mark the entry ended, remove the active link.
    config
        Prints the resolved configuration as JSON.

Exit codes: 0 ok, 64 usage error, 75 capacity refused, 70 other failure
(unreadable registry, lock timeout, I/O error).
"""
import argparse
import errno
import fcntl
import json
import os
import re
import stat
import sys
import time

EX_USAGE = 64
EX_SOFTWARE = 70
EX_TEMPFAIL = 75

REGISTRY_VERSION = 1
REGISTRY_NAME = ".registry"
LOCK_NAME = ".registry.lock"
ACTIVE_NAME = "active"
HISTORY_NAME = "history.jsonl"
LOCK_TIMEOUT = 30.0

DEFAULTS = {
    "claude_home": "~/.claude",
    "max_sessions": "4",
    "inherit_copy": "settings.json CLAUDE.md",
    "inherit_link": ".credentials.json",
    "host": "",
}

# The ids we create come from /proc/sys/kernel/random/uuid: lowercase, canonical.
_UUID_RE = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_LEN = 200


class RegistryError(Exception):
    """The registry exists but cannot be trusted; nothing may be changed."""


class LockTimeout(Exception):
    pass


def warn(msg):
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "session_registry"
    sys.stderr.write("%s: %s\n" % (prog, msg))


def is_session_id(name):
    return bool(_UUID_RE.match(name))


def now_iso():
    return iso(time.time())


def iso(ts):
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# ---------------------------------------------------------------- config

class Config(object):
    def __init__(self, values, path):
        self.path = path
        self.claude_home = _expand_home(values["claude_home"] or DEFAULTS["claude_home"])
        self.max_sessions = _parse_max(values["max_sessions"], path)
        self.inherit_copy = values["inherit_copy"].split()
        self.inherit_link = values["inherit_link"].split()
        self.host = values["host"] or os.uname().nodename

    @property
    def sessions_dir(self):
        return os.path.join(self.claude_home, "sessions")

    def as_dict(self):
        return {"config_file": self.path, "claude_home": self.claude_home,
                "sessions_dir": self.sessions_dir, "max_sessions": self.max_sessions,
                "inherit_copy": self.inherit_copy, "inherit_link": self.inherit_link,
                "host": self.host}


def _home():
    home = os.environ.get("HOME")
    if home:
        return home
    return os.path.expanduser("~")


def _expand_home(value):
    # Only `~` and `~/...`: `~user` forms and $VARS are deliberately not expanded.
    if value == "~":
        return _home()
    if value.startswith("~/"):
        return os.path.join(_home(), value[2:])
    return os.path.join(_home(), value)  # an absolute value wins in join()


def _parse_max(value, path):
    try:
        n = int(value)
        if n < 0:
            raise ValueError
        return n
    except ValueError:
        # A typo must not switch the guard off: fall back to the default.
        warn("%s: max_sessions=%r is not a non-negative integer, using %s"
             % (path, value, DEFAULTS["max_sessions"]))
        return int(DEFAULTS["max_sessions"])


def config_path():
    env = os.environ.get("CLAUDE_SESSION_CONF")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.realpath(__file__)), "session.conf")


def parse_conf(text):
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip()
        if key in DEFAULTS:
            values[key] = value.strip()
    return values


def load_config(path=None):
    path = path or config_path()
    values = dict(DEFAULTS)
    try:
        with open(path, encoding="utf-8") as f:
            values.update(parse_conf(f.read()))
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as e:
        warn("cannot read %s (%s), using defaults" % (path, e))
    return Config(values, path)


# ---------------------------------------------------------------- processes

def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def proc_start_time(pid):
    """Start time (clock ticks after boot) of a running, non-zombie process, else None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2:].split()
    try:
        state, start = fields[0], int(fields[19])  # fields 3 and 22
    except (IndexError, ValueError):
        return None
    if state in (b"Z", b"X"):
        return None
    return start


def launcher_alive(entry):
    start = proc_start_time(entry["pid"])
    if start is None or start != entry["pid_start"]:
        return False
    recorded_boot = entry.get("boot_id")
    return not recorded_boot or recorded_boot == _boot_id()


def session_live(entry):
    """Registered as active and its launcher really runs."""
    return entry["status"] == "active" and launcher_alive(entry)


def effective_status(entry):
    """"active" only while the launcher really runs; a dead one reads as "ended"."""
    return "active" if session_live(entry) else "ended"


def dirs_in_use(sessions_dir):
    """Ids of sessions some inspectable process uses as its CLAUDE_CONFIG_DIR.

    /proc/<pid>/environ is the environment at exec time, which is exactly how
    the launcher hands the directory to the client (and the client to its
    children).  Processes of other users are unreadable and skipped.
    """
    real = os.path.realpath(sessions_dir)
    found = set()
    key = b"CLAUDE_CONFIG_DIR="
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = f.read()
        except OSError:
            continue
        for var in env.split(b"\0"):
            if not var.startswith(key):
                continue
            value = os.fsdecode(var[len(key):])
            parent, base = os.path.split(os.path.normpath(value))
            if is_session_id(base) and os.path.realpath(parent or ".") == real:
                found.add(base)
    return found


# ---------------------------------------------------------------- registry

def empty_registry():
    return {"version": REGISTRY_VERSION, "sessions": {}}


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def validate(data, path):
    def bad(why):
        raise RegistryError("%s: %s" % (path, why))
    if not isinstance(data, dict):
        bad("top level is not a JSON object")
    if data.get("version") != REGISTRY_VERSION:
        bad("unsupported version %r (expected %d)" % (data.get("version"), REGISTRY_VERSION))
    sessions = data.get("sessions")
    if not isinstance(sessions, dict):
        bad('"sessions" is not a JSON object')
    for sid, entry in sessions.items():
        if not is_session_id(sid):
            bad("entry key %r is not a session id" % sid)
        if not isinstance(entry, dict):
            bad("entry %s is not a JSON object" % sid)
        # Liveness needs both numbers; without them the entry could hide a live session.
        if not _is_int(entry.get("pid")) or not _is_int(entry.get("pid_start")):
            bad("entry %s has no integer pid/pid_start" % sid)
        if entry.get("status") not in ("active", "ended"):
            bad("entry %s has status %r" % (sid, entry.get("status")))
    return data


def registry_path(sessions_dir):
    return os.path.join(sessions_dir, REGISTRY_NAME)


def read_registry(sessions_dir):
    """The registry as a dict, None if the file does not exist; RegistryError if unusable."""
    path = registry_path(sessions_dir)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RegistryError("%s: cannot read: %s" % (path, e))
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RegistryError("%s: not valid JSON: %s" % (path, e))
    return validate(data, path)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_registry(sessions_dir, data):
    """Atomically replace the registry.  Caller must hold the lock."""
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    # Not tempfile: this runs at every session start and end, and importing
    # tempfile (with random, shutil...) costs more than the write itself.
    tmp = os.path.join(sessions_dir, "%s.%s.tmp" % (REGISTRY_NAME, os.urandom(6).hex()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o600)
            os.fsync(f.fileno())
        os.replace(tmp, registry_path(sessions_dir))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(sessions_dir)


class RegistryLock(object):
    """Exclusive flock on sessions/.registry.lock, polled so a stuck holder
    produces an error instead of a silent hang."""

    def __init__(self, sessions_dir, timeout=LOCK_TIMEOUT):
        self.path = os.path.join(sessions_dir, LOCK_NAME)
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except PermissionError:
            # flock works on a read-only descriptor too (e.g. a dry run by another user).
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            if time.monotonic() >= deadline:
                os.close(self.fd)
                self.fd = None
                raise LockTimeout("%s: still locked by another process after %.0f s"
                                  % (self.path, self.timeout))
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None
        return False


def ensure_sessions_dir(sessions_dir):
    """Create sessions/ and sessions/active/ (0700) if push has not already."""
    for path in (sessions_dir, os.path.join(sessions_dir, ACTIVE_NAME)):
        try:
            os.makedirs(path, 0o700)
        except FileExistsError:
            pass


# ---------------------------------------------------------------- sessions on disk

def active_link(sessions_dir, sid):
    return os.path.join(sessions_dir, ACTIVE_NAME, sid)


def remove_active_link(sessions_dir, sid):
    path = active_link(sessions_dir, sid)
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def session_dirs(sessions_dir):
    """{id: path} of the UUID-named real directories directly in sessions_dir.

    Symlinks (even to directories), files and every non-UUID name are left
    out; this is the only source of deletion candidates.
    """
    found = {}
    try:
        entries = list(os.scandir(sessions_dir))
    except FileNotFoundError:
        return found
    for entry in entries:
        if is_session_id(entry.name) and entry.is_dir(follow_symlinks=False):
            found[entry.name] = entry.path
    return found


def history_bytes(session_dir):
    try:
        st = os.lstat(os.path.join(session_dir, HISTORY_NAME))
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def has_transcripts(session_dir):
    """Whether Claude Code kept a transcript here (projects/<cwd>/<id>.jsonl).
    Headless `claude -p` writes transcripts but never history.jsonl, so a
    session without history may still hold work."""
    projects = os.path.join(session_dir, "projects")
    if os.path.islink(projects):
        return False
    for _root, _dirs, files in os.walk(projects):
        if any(name.endswith(".jsonl") for name in files):
            return True
    return False


def last_activity(session_dir):
    """Newest mtime of the directory or anything below it (links not followed)."""
    try:
        newest = os.lstat(session_dir).st_mtime
    except OSError:
        return None
    for root, dirs, files in os.walk(session_dir):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                pass  # removed while we walked
    return newest


def protection(sid, entry, registry_exists, sessions_dir, in_use):
    """Why the session must not be deleted (see module docstring), or None."""
    if entry is not None and session_live(entry):
        return "live"
    if sid in in_use:
        return "in-use"
    if os.path.islink(active_link(sessions_dir, sid)) and (not registry_exists or entry is None):
        return "active-link"
    return None


# ---------------------------------------------------------------- commands

def _seed(cfg, session_dir):
    """Copy / link the inherit lists from claude_home; missing sources are skipped quietly."""
    for names, link in ((cfg.inherit_copy, False), (cfg.inherit_link, True)):
        for name in names:
            parts = os.path.normpath(name).split("/")
            # Stay inside claude_home, and never copy sessions/ into one of its own children.
            if os.path.isabs(name) or ".." in parts or parts[0] in (".", "sessions"):
                warn("inherit: ignoring %r (must name something in claude_home other "
                     "than sessions/, without ..)" % name)
                continue
            src = os.path.join(cfg.claude_home, name)
            dst = os.path.join(session_dir, name)
            if not os.path.lexists(src):
                continue
            try:
                parent = os.path.dirname(dst)
                if parent != session_dir:
                    os.makedirs(parent, 0o700, exist_ok=True)
                if link:
                    os.symlink(src, dst)
                else:
                    import shutil  # imported only when there is something to copy

                    if os.path.isdir(src):
                        shutil.copytree(src, dst, symlinks=True)
                    else:
                        shutil.copy2(src, dst)
            except OSError as e:
                warn("inherit: cannot %s %s: %s" % ("link" if link else "copy", src, e))


def cmd_register(args):
    cfg = load_config()
    if not is_session_id(args.id):
        warn("register: %r is not a session id" % args.id)
        return EX_USAGE
    name = args.name or None
    if name is not None and (_CONTROL_RE.search(name) or len(name) > MAX_NAME_LEN):
        warn("--name must be at most %d characters without control characters" % MAX_NAME_LEN)
        return EX_USAGE
    pid_start = proc_start_time(args.pid)
    if pid_start is None:
        warn("register: launcher pid %d is not running" % args.pid)
        return EX_SOFTWARE
    sdir = cfg.sessions_dir
    session_dir = os.path.join(sdir, args.id)
    ensure_sessions_dir(sdir)
    with RegistryLock(sdir):
        reg = read_registry(sdir) or empty_registry()
        live = sum(1 for e in reg["sessions"].values() if session_live(e))
        if cfg.max_sessions and live >= cfg.max_sessions and not args.force:
            sys.stderr.write(
                "claude-session: %d live session%s, max_sessions=%d (%s); not starting another.\n"
                "claude-session: use --force to override.\n"
                % (live, "" if live == 1 else "s", cfg.max_sessions, cfg.path))
            return EX_TEMPFAIL
        os.mkdir(session_dir, 0o700)
        try:
            os.chmod(session_dir, 0o700)  # mkdir's mode is filtered by the umask
            remove_active_link(sdir, args.id)
            os.symlink(session_dir, active_link(sdir, args.id))
            reg["sessions"][args.id] = {
                "id": args.id, "name": name, "host": cfg.host,
                "pid": args.pid, "pid_start": pid_start, "boot_id": _boot_id(),
                "started": now_iso(), "status": "active", "ended": None,
                "exit_code": None, "dir": session_dir,
            }
            write_registry(sdir, reg)
        except BaseException:
            # Leave nothing behind that the cleaner would have to explain.
            remove_active_link(sdir, args.id)
            os.rmdir(session_dir)
            raise
    _seed(cfg, session_dir)
    sys.stdout.write(session_dir + "\n")
    return 0


def cmd_finish(args):
    cfg = load_config()
    sdir = cfg.sessions_dir
    with RegistryLock(sdir):
        remove_active_link(sdir, args.id)
        reg = read_registry(sdir)
        entry = reg["sessions"].get(args.id) if reg else None
        if entry is None:
            warn("finish: session %s is not in the registry" % args.id)
            return 0
        entry.update(status="ended", ended=now_iso(), exit_code=args.exit_code)
        write_registry(sdir, reg)
    return 0


def cmd_config(_args):
    sys.stdout.write(json.dumps(load_config().as_dict(), indent=1) + "\n")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, "%s: error: %s\n" % (self.prog, message))


def main(argv=None):
    parser = _Parser(prog="session_registry.py",
                     description="Session registry helper for claude-session.")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("register", help="create and register a session")
    p.add_argument("--id", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--name", default="")
    p.add_argument("--force", action="store_true")
    p = sub.add_parser("finish", help="mark a session ended")
    p.add_argument("--id", required=True)
    p.add_argument("--exit-code", type=int, required=True)
    sub.add_parser("config", help="print the resolved configuration")
    args = parser.parse_args(argv)
    handlers = {"register": cmd_register, "finish": cmd_finish, "config": cmd_config}
    if args.command not in handlers:
        parser.print_usage(sys.stderr)
        return EX_USAGE
    try:
        return handlers[args.command](args)
    except (RegistryError, LockTimeout) as e:
        warn(str(e))
        return EX_SOFTWARE
    except OSError as e:
        warn("%s: %s" % (args.command, e))
        return EX_SOFTWARE
    except KeyboardInterrupt:
        return 128 + 2


if __name__ == "__main__":
    sys.exit(main())
