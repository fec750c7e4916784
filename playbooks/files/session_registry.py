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
    inherit_copy  names directly in claude_home copied into each new session,
                  default "" (nothing)
    inherit_link  names directly in claude_home symlinked into each new
                  session, default "settings.json CLAUDE.md agents commands
                  skills output-styles keybindings.json"
    host          label recorded in registry entries, default the hostname

A name in PER_SESSION_STATE (what Claude Code writes for one session; the
same list as csdeploy's src/vars.rs) is never shared: it is skipped with a
warning on stderr, as is a name with `/`, `..` or an absolute path.  Missing
sources are skipped silently.  `plugins` is not in the default link list:
Claude Code 2.1.337 writes into a linked plugins/ at start (it created
plugins/marketplaces/ in a session whose plugins/ linked to claude_home's).

What a new session gets
-----------------------
- the inherit lists above;
- `.claude.json` (0600, written atomically), seeded from the user's: from
  `<claude_home>/.claude.json` when the launcher's own CLAUDE_CONFIG_DIR
  resolves to claude_home, else from `~/.claude.json`.  Every top-level key
  is copied (onboarding done, theme, account, user-scoped mcpServers, the
  tips and release notes already seen) except `projects`, of which each
  project keeps only its trust and permission keys (SEED_PROJECT_KEYS);
  its history, lastSessionId and last* costs and durations (which Claude
  Code writes per session) are not copied.  Without a readable user
  `.claude.json` there is no seed (Claude Code then onboards, as it would).
  Top-level keys are copied whole on purpose: they include
  `migrationVersion`, and a session whose seed lacked it re-ran Claude
  Code's migrations (2.1.337 moved `theme` into settings.json, writing
  through the linked settings.json into the user's own);
- never a `.credentials.json`: the launcher points
  CLAUDE_SECURESTORAGE_CONFIG_DIR at claude_home, so every session reads
  and refreshes the one default credential store.

Credentials of older sessions
-----------------------------
Launchers before this version linked or copied `.credentials.json` into each
session; a token refresh replaced the link with a regular file, the only
copy of the rotated tokens.  A regular `<session>/.credentials.json` newer
(mtime) than `<claude_home>/.credentials.json` (or with no default at all)
is therefore copied into the default store (temp file in claude_home, 0600,
fsync, rename; only the newest one when several are), never the other way
round; symlinks are ignored.  The launcher does it at each start, under the
registry lock; the cleaner does it before deciding, and never deletes a
session that still holds credentials newer than the default store's.

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
          "pid_ns":    "pid:[4026531836]" | null,  the launcher's PID namespace
                                             (absent in entries of older versions)
          "started":   "2025-11-15T14:16:00Z",
          "status":    "active" | "ended",
          "ended":     "2025-11-15T15:00:00Z" | null,
          "exit_code": 0 | null,             the client's exit code
          "dir":       "/abs/path/<uuid>",   informational only
          "cwd":       "/abs/path" | null,   where the launcher was started (the
                                             client's working directory); resume
                                             goes back there
          "resumed":   {"count": 2, "last": "2025-11-16T09:00:00Z"} | null
                                             how often `claude-session resume`
                                             reopened it, and when it last did
        }
      }
    }

"cwd" and "resumed" are optional: entries written by older versions lack
them and stay readable.  It is written with one session entry per line,
keys sorted.
Every change happens under an exclusive flock on .registry.lock: read, modify,
write a temp file in the same directory, fsync, rename over .registry, fsync
the directory.  Readers that only look (claude-session-list) need no lock,
since the rename makes every version complete.  Anything that does not match
this shape (bad JSON, other version, an entry without an integer pid, a field
of another type than shown above) makes the whole registry "unreadable": callers then change nothing and exit non-zero,
because deciding what is live from half a registry could delete a live session.

The recorded "dir" is never used to delete anything: the only deletion
candidates are UUID-named real directories found directly in sessions/.

Liveness
--------
The launcher is alive when /proc/<pid>/stat exists, is not a zombie, shows the
recorded start time (so a reused pid does not count) and, when recorded, the
boot id is unchanged.  An entry made in another PID namespace than ours (a
container or `unshare` sharing this HOME: its pid means nothing in our /proc)
counts as alive while the boot id is unchanged; only "ended", or a reboot,
proves it dead.  Entries without pid_ns are judged by our /proc, as before.  A session is live when its entry says "active" and its
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

Client resolution
-----------------
The client is `$CLAUDE_BIN` if set and non-empty (a bare name is looked up
on PATH), else `claude` on PATH, else the first executable of
`~/.local/bin/claude`, `<claude_home>/local/claude`,
`$NPM_CONFIG_PREFIX/bin/claude`, `~/.npm-global/bin/claude`,
`/usr/local/bin/claude` (where Claude Code's installers put it).
resolve_client() is the one implementation: the launcher runs what it
returns, and `claude-session --which-client` prints it (csdeploy verify asks
that, so it tests what the launcher really runs).

Commands (used by claude-session)
---------------------------------
    session (--id UUID | --resume ID|NAME) --pid PID [--name NAME] [--force]
        Resolves the client first (none: exit 127, nothing created).
        Under the lock: rescue newer credentials (above), capacity check,
        mkdir <uuid> (0700), add the entry, create the active link.  Then,
        outside the lock, seed the directory and print, each ended by a NUL
        byte: the session dir, claude_home, the directory the client should
        start in (empty: stay) and the client's path.
        Creating the directory under the same lock as the entry means the
        cleaner can never see it as an orphan.  Then wait for one line on
        stdin, the client's exit code, and finish the session with it.  The
        launcher keeps this one process beside each session instead of
        starting an interpreter twice; if the launcher dies, stdin ends and
        the entry is finished with exit_code null.
        With --resume, the ended session named by its id or its (unique)
        name is reopened instead: its entry becomes active again for PID
        (resumed count and time updated), its active link is recreated,
        and the client starts in the recorded cwd when that still exists.
        A live one (or one a process still uses as CLAUDE_CONFIG_DIR): exit
        75; an unknown or ambiguous one: exit 64.
    which-client
        Prints the resolved client's absolute path; exit 127 (naming where
        it looked) when there is none.
    finish --id UUID [--exit-code N]
        Under the lock: mark the entry ended, remove the active link (the
        launcher's fallback when its session helper is gone).
    config
        Prints the resolved configuration as JSON.

The launcher runs this module through an import (`python3 -I -S -c 'import
session_registry ...'`), so that Python keeps its compiled form instead of
compiling the whole file at every session start.  The launcher puts that
cache in ${XDG_CACHE_HOME:-~/.cache}/claude-session (sys.pycache_prefix),
never beside the scripts; the list and the cleaner write no bytecode.

Exit codes: 0 ok, 64 usage error (also an unknown or ambiguous session to
resume), 75 capacity refused or the session to resume is live, 127 no client
found, 70 other failure (unreadable registry, lock timeout, I/O error).
"""
import argparse
import errno
import fcntl
import json
import os
import stat
import sys
import time

EX_USAGE = 64
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_NOCLIENT = 127

REGISTRY_VERSION = 1
REGISTRY_NAME = ".registry"
LOCK_NAME = ".registry.lock"
ACTIVE_NAME = "active"
HISTORY_NAME = "history.jsonl"
LOCK_TIMEOUT = 30.0

DEFAULTS = {
    "claude_home": "~/.claude",
    "max_sessions": "4",
    "inherit_copy": "",
    "inherit_link": "settings.json CLAUDE.md agents commands skills output-styles keybindings.json",
    "host": "",
}

# What Claude Code writes for one session in its config directory: never
# shared, whatever inherit_copy/inherit_link say. The same list as
# PER_SESSION_STATE in csdeploy's src/vars.rs (a test checks they agree).
PER_SESSION_STATE = (
    ".claude.json",
    ".credentials.json",
    "history.jsonl",
    "projects",
    "sessions",
    "todos",
    "shell-snapshots",
    "statsig",
    "telemetry",
    "backups",
    "ide",
    "file-history",
    "session-env",
    "debug",
)

CREDENTIALS_NAME = ".credentials.json"
CLAUDE_JSON_NAME = ".claude.json"
# The per-project keys a new session's .claude.json keeps from the user's:
# trust and permissions. Everything else under a project is what Claude Code
# writes per session (history, lastSessionId, last* costs and durations).
SEED_PROJECT_KEYS = frozenset((
    "hasTrustDialogAccepted", "allowedTools", "mcpServers", "enabledMcpjsonServers",
    "disabledMcpjsonServers", "hasCompletedProjectOnboarding", "projectOnboardingSeenCount",
    "hasClaudeMdExternalIncludesApproved", "hasClaudeMdExternalIncludesWarningShown",
))
SEED_PROJECT_PREFIXES = ("hasClaudeMdExternalIncludes",)

MAX_NAME_LEN = 200

# Plain string checks, not `re`: importing re (with enum) would cost every
# session start more than the registry update itself.
_HEX = frozenset("0123456789abcdef")
_UUID_GROUPS = [8, 4, 4, 4, 12]
# C0, DEL and C1: a C1 character such as U+009B (CSI) is a terminal escape too.
CONTROL_CHARS = frozenset(chr(c) for c in list(range(0x20)) + list(range(0x7f, 0xa0)))


class RegistryError(Exception):
    """The registry exists but cannot be trusted; nothing may be changed."""


class LockTimeout(Exception):
    pass


# The name our messages start with. Fixed, not sys.argv[0]: under the
# launcher that is "-c". The launcher, the list and the cleaner set their own.
PROG = "session_registry.py"


def warn(msg):
    sys.stderr.write("%s: %s\n" % (PROG, msg))


def is_session_id(name):
    """The ids we create come from /proc/sys/kernel/random/uuid: lowercase, canonical."""
    groups = name.split("-")
    return [len(g) for g in groups] == _UUID_GROUPS and _HEX.issuperset(name.replace("-", ""))


def valid_name(text):
    """A --name we store: UTF-8 text (argv bytes that are not UTF-8 arrive as
    lone surrogates, which no UTF-8 output can print), not too long, no
    control characters."""
    if len(text) > MAX_NAME_LEN or not CONTROL_CHARS.isdisjoint(text):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
        self.claude_home = os.path.abspath(_expand_home(values["claude_home"] or DEFAULTS["claude_home"]))
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
    # Lines end at "\n" only, as csdeploy writes them (it refuses every other
    # separator in a value): splitlines() would also split a value at
    # U+2028, U+0085, "\v", ... and let it set another key.
    values = {}
    for line in text.split("\n"):
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


_pid_ns = []


def pid_namespace():
    """Our PID namespace, as /proc/self/ns/pid names it; None if it cannot be read."""
    if not _pid_ns:
        try:
            _pid_ns.append(os.readlink("/proc/self/ns/pid"))
        except OSError:
            _pid_ns.append(None)
    return _pid_ns[0]


def launcher_alive(entry):
    recorded_boot = entry.get("boot_id")
    same_boot = not recorded_boot or recorded_boot == _boot_id()
    recorded_ns = entry.get("pid_ns")
    if recorded_ns and recorded_ns != pid_namespace():
        # Our /proc cannot see that launcher: nothing here proves it dead.
        return same_boot
    start = proc_start_time(entry["pid"])
    if start is None or start != entry["pid_start"]:
        return False
    return same_boot


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
    children).  Processes of other users are unreadable and skipped.  This
    reads every process we may read, so it is kept lean: raw reads, a search
    for the one variable instead of splitting whole environments, and one
    realpath per distinct parent directory.
    """
    real = os.path.realpath(sessions_dir)
    found = set()
    key = b"CLAUDE_CONFIG_DIR="
    parents = {}
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        env = _read_proc_file("/proc/%s/environ" % pid)
        at = env.find(key) if env else -1
        while at != -1:
            if at == 0 or env[at - 1] == 0:  # a variable's start, not inside a value
                end = env.find(b"\0", at)
                value = os.fsdecode(env[at + len(key):end if end != -1 else len(env)])
                parent, base = os.path.split(os.path.normpath(value))
                if is_session_id(base):
                    if parent not in parents:
                        parents[parent] = os.path.realpath(parent or ".")
                    if parents[parent] == real:
                        found.add(base)
            at = env.find(key, at + 1)
    return found


def _read_proc_file(path):
    """The whole file, or None if it cannot be read (gone, another user's)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)


# ---------------------------------------------------------------- JSON

# The registry is read and written at every session start and end, with
# json (standard library). It is read strictly: NaN and Infinity are no JSON,
# and a registry nested too deeply is as unreadable as a cut one.
def _no_constant(name):
    raise ValueError("%s is not valid JSON" % name)


def json_loads(text):
    """json.loads(text) for a str, strict; ValueError if it is not one JSON value."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply")


def json_dumps(value):
    """json.dumps(value, sort_keys=True): one line."""
    return json.dumps(value, sort_keys=True)


def registry_text(data):
    """The registry as JSON with one session entry per line (sorted by id)."""
    head = ", ".join("%s: %s" % (json_dumps(k), json_dumps(v))
                     for k, v in sorted(data.items()) if k != "sessions")
    entries = ",\n".join(" %s: %s" % (json_dumps(sid), json_dumps(entry))
                          for sid, entry in sorted(data["sessions"].items()))
    sessions = "{\n%s\n}" % entries if entries else "{}"
    return "{%s%s\"sessions\": %s}\n" % (head, ", " if head else "", sessions)


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
        # What the list and the cleaner print, sort and compare: a hand edit
        # that changes a type must be a clear error, not a traceback.
        for key in _TEXT_FIELDS:
            value = entry.get(key)
            if value is not None and not isinstance(value, str):
                bad("entry %s: %s is %s, expected a string or null" % (sid, key, json_dumps(value)))
        if entry.get("exit_code") is not None and not _is_int(entry["exit_code"]):
            bad("entry %s: exit_code is %s, expected an integer or null"
                % (sid, json_dumps(entry["exit_code"])))
        resumed = entry.get("resumed")
        if resumed is not None and not (isinstance(resumed, dict) and _is_int(resumed.get("count"))
                                        and isinstance(resumed.get("last"), str)):
            bad('entry %s: resumed is %s, expected {"count": N, "last": "..."} or null'
                % (sid, json_dumps(resumed)))
    return data


_TEXT_FIELDS = ("id", "name", "host", "boot_id", "pid_ns", "started", "ended", "dir", "cwd")


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
        data = json_loads(raw.decode("utf-8"))
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
    text = registry_text(data)
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

def shareable(name):
    """Why `name` may not be in an inherit list, or None if it may."""
    if name in PER_SESSION_STATE:
        return "Claude Code keeps per-session state there; it is never shared"
    if os.path.isabs(name) or "/" in name or name in (".", ".."):
        return "must name something directly in claude_home (no /, no ..)"
    return None


def _seed(cfg, session_dir):
    """Copy / link the inherit lists from claude_home; missing sources are skipped quietly."""
    for names, link in ((cfg.inherit_copy, False), (cfg.inherit_link, True)):
        for name in names:
            why = shareable(name)
            if why:
                warn("inherit_%s: ignoring %r: %s" % ("link" if link else "copy", name, why))
                continue
            src = os.path.join(cfg.claude_home, name)
            dst = os.path.join(session_dir, name)
            if not os.path.lexists(src):
                continue
            try:
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


def user_state_file(cfg, environ=None):
    """The user's .claude.json a new session is seeded from: claude_home's
    when the launcher's own CLAUDE_CONFIG_DIR is claude_home, else ~/.claude.json."""
    environ = os.environ if environ is None else environ
    incoming = environ.get("CLAUDE_CONFIG_DIR")
    if incoming and os.path.realpath(incoming) == os.path.realpath(cfg.claude_home):
        return os.path.join(cfg.claude_home, CLAUDE_JSON_NAME)
    return os.path.join(_home(), CLAUDE_JSON_NAME)


def seed_state(user):
    """The .claude.json of a new session made from the user's (a dict): every
    top-level key but `projects`, and of each project only its trust and
    permission keys."""
    seeded = {k: v for k, v in user.items() if k != "projects"}
    projects = user.get("projects")
    if isinstance(projects, dict):
        kept = {}
        for path, project in projects.items():
            if not isinstance(project, dict):
                continue
            keys = {k: v for k, v in project.items()
                    if k in SEED_PROJECT_KEYS or k.startswith(SEED_PROJECT_PREFIXES)}
            if keys:
                kept[path] = keys
        seeded["projects"] = kept
    return seeded


def write_private(path, data, mtime_ns=None):
    """Replace path with bytes `data` atomically: a 0600 temp file in the same
    directory, fsynced, renamed over it, the directory fsynced."""
    parent = os.path.dirname(path)
    tmp = os.path.join(parent, ".%s.%s.tmp" % (os.path.basename(path), os.urandom(6).hex()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o600)
            os.fsync(f.fileno())
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(parent)


def seed_state_file(cfg, session_dir):
    """Write the session's .claude.json from the user's; nothing if the user
    has none. A user file that cannot be read or parsed: a warning, no seed."""
    source = user_state_file(cfg)
    try:
        with open(source, "rb") as f:
            user = json_loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError, ValueError) as e:
        warn("cannot seed %s from %s: %s" % (CLAUDE_JSON_NAME, source, e))
        return
    if not isinstance(user, dict):
        warn("cannot seed %s from %s: not a JSON object" % (CLAUDE_JSON_NAME, source))
        return
    try:
        write_private(os.path.join(session_dir, CLAUDE_JSON_NAME),
                      (json_dumps(seed_state(user)) + "\n").encode("utf-8"))
    except OSError as e:
        warn("cannot seed %s: %s" % (os.path.join(session_dir, CLAUDE_JSON_NAME), e))


# ---------------------------------------------------------------- credentials

def _credentials_mtime(path, regular_only):
    """mtime (ns) of a credentials file, None if absent (or, with
    regular_only, not a regular file: a link made by an older launcher)."""
    try:
        st = os.lstat(path) if regular_only else os.stat(path)
    except OSError:
        return None
    if regular_only and not stat.S_ISREG(st.st_mode):
        return None
    return st.st_mtime_ns


def default_credentials(claude_home):
    return os.path.join(claude_home, CREDENTIALS_NAME)


def newer_credentials(claude_home, dirs, default_mtime=False):
    """{id: mtime_ns} of the sessions (dirs: {id: path}) whose own regular
    .credentials.json is newer than the default store's (or there is none).
    default_mtime: the default's mtime to compare with (None: no default),
    instead of reading it."""
    if default_mtime is False:
        default_mtime = _credentials_mtime(default_credentials(claude_home), False)
    found = {}
    for sid, path in dirs.items():
        mtime = _credentials_mtime(os.path.join(path, CREDENTIALS_NAME), True)
        if mtime is not None and (default_mtime is None or mtime > default_mtime):
            found[sid] = mtime
    return found


def rescue_credentials(claude_home, dirs, dry_run=False):
    """Copy the newest session credentials that are newer than the default
    store's into it (see the module docstring). Returns (id copied or None,
    error text or None); dry_run: what it would copy, changing nothing."""
    newer = newer_credentials(claude_home, dirs)
    if not newer:
        return None, None
    sid = max(newer, key=lambda k: (newer[k], k))
    if dry_run:
        return sid, None
    target = default_credentials(claude_home)
    before = _credentials_mtime(target, False)
    try:
        fd = os.open(os.path.join(dirs[sid], CREDENTIALS_NAME), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            data = f.read()
        # A client may have refreshed the default store meanwhile: never
        # replace tokens newer than the ones we copy.
        now = _credentials_mtime(target, False)
        if now != before and now is not None and now >= newer[sid]:
            return None, None
        write_private(target, data)
    except OSError as e:
        return sid, str(e)
    return sid, None


# ---------------------------------------------------------------- the client

def _executable(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _on_path(name, environ):
    for d in environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(d or ".", name)
        if _executable(candidate):
            return os.path.abspath(candidate)
    return None


def client_candidates(cfg, environ=None):
    """Where resolve_client looks, in order: (description, path or None)."""
    environ = os.environ if environ is None else environ
    home = _home()
    out = []
    bin_ = environ.get("CLAUDE_BIN")
    if bin_:
        if "/" in bin_:
            return [("$CLAUDE_BIN", os.path.abspath(bin_))]
        return [("$CLAUDE_BIN on PATH", _on_path(bin_, environ))]
    out.append(("claude on PATH", _on_path("claude", environ)))
    out.append(("~/.local/bin/claude", os.path.join(home, ".local", "bin", "claude")))
    out.append(("<claude_home>/local/claude", os.path.join(cfg.claude_home, "local", "claude")))
    prefix = environ.get("NPM_CONFIG_PREFIX")
    out.append(("$NPM_CONFIG_PREFIX/bin/claude", os.path.join(prefix, "bin", "claude") if prefix else None))
    out.append(("~/.npm-global/bin/claude", os.path.join(home, ".npm-global", "bin", "claude")))
    out.append(("/usr/local/bin/claude", "/usr/local/bin/claude"))
    return out


def resolve_client(cfg, environ=None):
    """(absolute path of the client, None) or (None, message naming where it looked)."""
    candidates = client_candidates(cfg, environ)
    for _what, path in candidates:
        if path and _executable(path):
            return path, None
    looked = ", ".join("%s (%s)" % (what, path) if path and what != path else what
                       for what, path in candidates)
    return None, "no Claude Code client found; looked at: %s" % looked


# ---------------------------------------------------------------- registering

class Refused(Exception):
    """A start or resume refused with an exit code; the message is for stderr."""

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code


def _capacity(cfg, reg, force):
    live = sum(1 for e in reg["sessions"].values() if session_live(e))
    if cfg.max_sessions and live >= cfg.max_sessions and not force:
        raise Refused(EX_TEMPFAIL,
                      "%d live session%s, max_sessions=%d (%s); not starting another.\n"
                      "use --force to override."
                      % (live, "" if live == 1 else "s", cfg.max_sessions, cfg.path))


def _rescue(cfg, sdir):
    sid, error = rescue_credentials(cfg.claude_home, session_dirs(sdir))
    if sid and error:
        warn("session %s holds credentials newer than %s, and copying them there failed: %s"
             % (sid, default_credentials(cfg.claude_home), error))
    elif sid:
        warn("copied the newer credentials of session %s into %s"
             % (sid, default_credentials(cfg.claude_home)))


def find_session(reg, sessions_dir, target):
    """The id `target` names (an id, or the name of exactly one entry); Refused(64) if none."""
    hint = "see claude-session list"
    entries = reg["sessions"] if reg else {}
    if target in entries:
        return target
    named = sorted(sid for sid, e in entries.items() if e.get("name") == target)
    if len(named) == 1:
        return named[0]
    if named:
        raise Refused(EX_USAGE, "%d sessions are named %r (%s); give its id (%s)"
                      % (len(named), target, ", ".join(named), hint))
    raise Refused(EX_USAGE, "no session %r in %s (%s)" % (target, sessions_dir, hint))


def _launcher_fields(pid, pid_start):
    return {"pid": pid, "pid_start": pid_start, "boot_id": _boot_id(), "pid_ns": pid_namespace()}


def register(cfg, sid, pid, name, force, resume=None):
    """Under the lock: rescue credentials, capacity check, the directory, the
    entry, the active link; then seed the directory. With resume (an id or a
    name), reopen that ended session instead. Returns (session dir, the
    directory the client starts in or None); raises Refused."""
    pid_start = proc_start_time(pid)
    if pid_start is None:
        raise Refused(EX_SOFTWARE, "register: launcher pid %d is not running" % pid)
    sdir = cfg.sessions_dir
    ensure_sessions_dir(sdir)
    with RegistryLock(sdir):
        _rescue(cfg, sdir)
        reg = read_registry(sdir) or empty_registry()
        if resume is not None:
            return _reopen(cfg, reg, resume, pid, pid_start, force)
        _capacity(cfg, reg, force)
        session_dir = os.path.join(sdir, sid)
        os.mkdir(session_dir, 0o700)
        try:
            os.chmod(session_dir, 0o700)  # mkdir's mode is filtered by the umask
            remove_active_link(sdir, sid)
            os.symlink(session_dir, active_link(sdir, sid))
            try:
                cwd = os.getcwd()
            except OSError:
                cwd = None
            entry = {"id": sid, "name": name, "host": cfg.host,
                     "started": now_iso(), "status": "active", "ended": None,
                     "exit_code": None, "dir": session_dir, "cwd": cwd, "resumed": None}
            entry.update(_launcher_fields(pid, pid_start))
            reg["sessions"][sid] = entry
            write_registry(sdir, reg)
        except BaseException:
            # Leave nothing behind that the cleaner would have to explain.
            remove_active_link(sdir, sid)
            os.rmdir(session_dir)
            raise
    _seed(cfg, session_dir)
    seed_state_file(cfg, session_dir)
    return session_dir, None


def _reopen(cfg, reg, target, pid, pid_start, force):
    """register()'s resume half; the caller holds the lock."""
    sdir = cfg.sessions_dir
    sid = find_session(reg, sdir, target)
    entry = reg["sessions"][sid]
    if session_live(entry):
        raise Refused(EX_TEMPFAIL, "session %s is still running (launcher pid %d); "
                      "not starting it twice" % (sid, entry["pid"]))
    if sid in dirs_in_use(sdir):
        # Its client outlived a killed launcher: two clients in one dir is
        # what sessions exist to prevent.
        raise Refused(EX_TEMPFAIL, "session %s is still in use: a process has it as its "
                      "CLAUDE_CONFIG_DIR" % sid)
    session_dir = session_dirs(sdir).get(sid)
    if session_dir is None:
        raise Refused(EX_USAGE, "session %s has no directory any more (see claude-session list)" % sid)
    _capacity(cfg, reg, force)
    resumed = entry.get("resumed") or {"count": 0}
    entry.update(status="active", ended=None, exit_code=None,
                 resumed={"count": resumed["count"] + 1, "last": now_iso()})
    entry.update(_launcher_fields(pid, pid_start))
    remove_active_link(sdir, sid)
    os.symlink(session_dir, active_link(sdir, sid))
    try:
        write_registry(sdir, reg)
    except BaseException:
        remove_active_link(sdir, sid)
        raise
    _tidy_old_credentials(cfg, session_dir)
    if not os.path.lexists(os.path.join(session_dir, CLAUDE_JSON_NAME)):
        seed_state_file(cfg, session_dir)
    cwd = entry.get("cwd")
    if cwd and not os.path.isdir(cwd):
        warn("session %s was started in %s, which is gone; starting in the current directory"
             % (sid, cwd))
        cwd = None
    return session_dir, cwd


def _tidy_old_credentials(cfg, session_dir):
    """An older launcher's .credentials.json in a session being resumed: a
    link, or a copy no newer than the default store (whose tokens it already
    has, see _rescue), is removed; the client uses the default store now."""
    path = os.path.join(session_dir, CREDENTIALS_NAME)
    if not os.path.lexists(path):
        return
    if newer_credentials(cfg.claude_home, {"s": session_dir}):
        return
    try:
        os.unlink(path)
    except OSError as e:
        warn("cannot remove %s: %s" % (path, e))


def finish(cfg, sid, exit_code):
    """Under the lock: mark the entry ended, remove the active link."""
    sdir = cfg.sessions_dir
    with RegistryLock(sdir):
        remove_active_link(sdir, sid)
        reg = read_registry(sdir)
        entry = reg["sessions"].get(sid) if reg else None
        if entry is None:
            warn("finish: session %s is not in the registry" % sid)
            return 0
        entry.update(status="ended", ended=now_iso(), exit_code=exit_code)
        write_registry(sdir, reg)
    return 0


def _read_exit_code(stream):
    """The launcher's one line: the client's exit code. None at end of input
    (the launcher died without saying) or for anything but a number."""
    line = stream.readline().strip()
    try:
        return int(line)
    except ValueError:
        return None


def cmd_session(opts):
    cfg = load_config()
    name = opts["--name"] or None
    if name is not None and not valid_name(name):
        warn("--name must be UTF-8 text of at most %d characters without control characters"
             % MAX_NAME_LEN)
        return EX_USAGE
    if (opts["--id"] is None) == (opts["--resume"] is None):
        warn("session: give exactly one of --id and --resume")
        return EX_USAGE
    client, why = resolve_client(cfg)
    if client is None:
        warn(why)
        return EX_NOCLIENT
    try:
        session_dir, cwd = register(cfg, opts["--id"], opts["--pid"], name, opts["--force"],
                                    opts["--resume"])
    except Refused as e:
        for line in str(e).splitlines():
            warn(line)
        return e.code
    out = sys.stdout.buffer
    for field in (session_dir, cfg.claude_home, cwd or "", client):
        out.write(os.fsencode(field) + b"\0")
    out.flush()
    return finish(cfg, os.path.basename(session_dir), _read_exit_code(sys.stdin))


def cmd_which_client(_opts):
    client, why = resolve_client(load_config())
    if client is None:
        warn(why)
        return EX_NOCLIENT
    sys.stdout.write(client + "\n")
    return 0


def cmd_finish(opts):
    return finish(load_config(), opts["--id"], opts["--exit-code"])


def cmd_config(_opts):
    sys.stdout.write(json.dumps(load_config().as_dict(), indent=1) + "\n")
    return 0


# ---------------------------------------------------------------- command lines

# The tools' options, parsed by argparse from a small spec: {option: (kind,
# default)}; the usage texts stay the hand-written ones.
FLAG = "flag"            # an option without a value
REQUIRED = object()      # a default meaning "must be given"


class UsageError(Exception):
    pass


class HelpRequested(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are exceptions: the tools print their own usage."""

    def error(self, message):
        # In the words the tools have always used.
        key, _, what = message[len("argument "):].partition(": ") if message.startswith("argument ") \
            else ("", "", message)
        if what == "expected one argument":
            message = "%s needs a value" % key
        elif what.startswith("ignored explicit argument"):
            message = "%s takes no value" % key
        elif what:
            message = "%s: %s" % (key, what)
        elif message.startswith("the following arguments are required: "):
            message = "missing " + message.split(": ", 1)[1]
        raise UsageError(message)


class _Help(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        raise HelpRequested()


def _converter(convert):
    """convert, its ValueError shown as the usage error's message."""
    def option_value(value):
        try:
            return convert(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e))
    return option_value


def parse_options(args, spec):
    """{option: value} for args, by spec {option: (kind, default)}.

    kind is FLAG, a function that converts the value (ValueError: a usage
    error, its message shown), or [function] for a repeatable option whose
    values are collected in a list. `--opt value` and `--opt=value` both work;
    there are no positional arguments. -h/--help raises HelpRequested.
    """
    parser = _Parser(add_help=False, allow_abbrev=False)
    parser.add_argument("-h", "--help", nargs=0, action=_Help, default=argparse.SUPPRESS)
    for key, (kind, default) in spec.items():
        common = {"dest": key, "default": None if default is REQUIRED else default,
                  "required": default is REQUIRED}
        if kind == FLAG:
            parser.add_argument(key, action="store_true", **common)
        elif isinstance(kind, list):
            parser.add_argument(key, action="append", type=_converter(kind[0]), **common)
        else:
            parser.add_argument(key, type=_converter(kind), **common)
    opts, rest = parser.parse_known_args(list(args))
    if rest:
        arg = rest[0]
        raise UsageError("unknown option %s" % arg if arg.startswith("-") else "unexpected argument %r" % arg)
    return vars(opts)


def command_line(prog, usage, args, spec):
    """parse_options for a tool's main(): usage on stdout for --help (exit 0),
    on stderr after the error for a bad command line (exit 64)."""
    try:
        return parse_options(args, spec)
    except HelpRequested:
        sys.stdout.write(usage)
        raise SystemExit(0)
    except UsageError as e:
        sys.stderr.write("%s: %s\n%s" % (prog, e, usage))
        raise SystemExit(EX_USAGE)


def number(value):
    """An option's integer value."""
    try:
        return int(value)
    except ValueError:
        raise ValueError("%r is not a number" % value)


def path_value(value):
    """An option's path value: an empty one (an unset variable in a script)
    must not quietly mean the default directory."""
    if not value:
        raise ValueError("must not be empty")
    return value


def resume_target(value):
    """An option's session id or name value."""
    if not value:
        raise ValueError("must not be empty")
    return value


def session_id(value):
    """An option's session id value."""
    if not is_session_id(value):
        raise ValueError("%r is not a session id (lowercase UUID)" % value)
    return value


# Per command: its handler and its options.
COMMANDS = {
    "session": (cmd_session, {"--id": (session_id, None), "--resume": (resume_target, None),
                              "--pid": (number, REQUIRED), "--name": (str, ""),
                              "--force": (FLAG, False)}),
    "finish": (cmd_finish, {"--id": (session_id, REQUIRED), "--exit-code": (number, None)}),
    "config": (cmd_config, {}),
    "which-client": (cmd_which_client, {}),
}
USAGE = """usage: session_registry.py session (--id UUID | --resume ID|NAME) --pid PID [--name NAME] [--force]
       session_registry.py finish --id UUID [--exit-code N]
       session_registry.py config
       session_registry.py which-client

session       register a new session (--id) or reopen an ended one (--resume)
              for the launcher PID (capacity check, its directory, registry
              entry and active link), print its directory, claude_home, the
              directory to start in and the client (each NUL-terminated), then
              wait for one line on stdin, the client's exit code, and mark it
              ended (at end of input: ended, exit code unknown)
finish        mark a session ended and remove its active link
config        print the resolved configuration as JSON
which-client  print the client the launcher would run (exit 127: none)
"""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else None
    if command in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    if command not in COMMANDS:
        sys.stderr.write("session_registry.py: expected a command: %s\n%s" % (", ".join(COMMANDS), USAGE))
        return EX_USAGE
    handler, spec = COMMANDS[command]
    opts = command_line("session_registry.py " + argv[0], USAGE, argv[1:], spec)
    try:
        return handler(opts)
    except (RegistryError, LockTimeout) as e:
        warn(str(e))
        return EX_SOFTWARE
    except OSError as e:
        warn("%s: %s" % (argv[0], e))
        return EX_SOFTWARE
    except KeyboardInterrupt:
        return 128 + 2


if __name__ == "__main__":
    sys.exit(main())
