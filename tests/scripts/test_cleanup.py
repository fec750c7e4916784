"""cleanup-sessions.py: what it removes, and above all what it must never touch."""
import json
import os
import shutil
import subprocess
import random
import threading
import time

import pytest

from conftest import registry_helper_of, snapshot, start_time, wait_for


def exists(env, sid):
    return os.path.isdir(env.sdir(sid))


def removed_ids(result):
    return {r["id"]: r["reason"] for r in result["removed"]}


def kept_ids(result):
    return {r["id"]: r["reason"] for r in result["kept"]}


def proc_gone(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return True
    return data[data.rfind(b")") + 2:].split()[0] == b"Z"


# ---------------------------------------------------------------- what it removes

def test_removes_orphaned_empty_and_old_sessions(env):
    keep = env.make_session(history=b"x\n")
    empty = env.make_session(history=b"")
    no_history = env.make_session(history=None)
    orphan = env.make_session(history=b"", registered=False)
    old = env.make_session(history=b"x\n", age_days=10)
    result = env.clean_json()
    assert removed_ids(result) == {empty: "empty", no_history: "empty", orphan: "orphaned"}
    assert kept_ids(result) == {keep: "has-history", old: "has-history"}
    assert result["dry_run"] is False
    assert removed_ids(env.clean_json("--days", "5")) == {old: "old"}
    assert env.session_ids() == [keep]
    assert set(env.read_registry()["sessions"]) == {keep}


def _work_of_an_older_launcher(env, age_days=0):
    """A session dir as a launcher without a registry left it: history and a transcript."""
    sid = env.make_session(history=b'{"display":"real work"}\n', registered=False)
    projects = os.path.join(env.sdir(sid), "projects", "-home-u")
    os.makedirs(projects)
    with open(os.path.join(projects, "0306f14b-c4b6-4b41-bb8e-c3da2f735f24.jsonl"), "w") as f:
        f.write("{}\n")
    if age_days:
        old = time.time() - age_days * 86400
        for root, dirs, files in os.walk(env.sdir(sid)):
            for name in dirs + files:
                os.utime(os.path.join(root, name), (old, old))
        os.utime(env.sdir(sid), (old, old))
    return sid


@pytest.mark.parametrize("args", [[], ["--days", "0"], ["--dry-run", "--days", "0"]])
def test_orphan_holding_work_survives_the_registry_being_created(env, args):
    # Sessions from before the registry existed: the first launch creates it,
    # without entries for them. Being unregistered is no reason to lose them.
    with_history = _work_of_an_older_launcher(env, age_days=30)
    transcript_only = env.make_session(history=None, registered=False)
    projects = os.path.join(env.sdir(transcript_only), "projects", "-srv")
    os.makedirs(projects)
    with open(os.path.join(projects, "x.jsonl"), "w") as f:
        f.write("{}\n")
    empty_orphan = env.make_session(history=b"", registered=False)
    assert not os.path.exists(env.registry)
    assert env.run().returncode == 0                    # the registry is created now
    assert os.path.exists(env.registry)
    before = snapshot(env.sdir(with_history))

    result = env.clean_json(*args)
    assert kept_ids(result)[with_history] == "orphaned-has-history"
    assert kept_ids(result)[transcript_only] == "orphaned-has-history"
    assert removed_ids(result).get(empty_orphan) == "orphaned"
    assert snapshot(env.sdir(with_history)) == before
    assert exists(env, transcript_only)
    text = env.clean(*args)
    assert text.returncode == 0
    assert with_history.encode() not in text.stdout
    assert ("--session %s" % with_history).encode() in text.stderr   # how to remove it on purpose
    # Only asking for it by name removes it.
    if "--dry-run" not in args:
        assert removed_ids(env.clean_json("--session", with_history)) == {with_history: "requested"}
        assert not exists(env, with_history)


def test_sessions_survive_a_damaged_registry_being_moved_away(env):
    # The cleaner refuses a damaged registry and says to repair it or move it
    # away; doing the latter must not turn every session into deletable orphans.
    assert env.run("--name", "important-work").returncode == 0
    (sid,) = env.session_ids()
    with open(env.registry, "a") as f:
        f.write("garbage")
    assert env.clean().returncode == 2
    os.rename(env.registry, os.path.join(env.tmp, "registry.broken"))
    assert env.run("--name", "next").returncode == 0    # a fresh registry, without sid
    assert sid not in env.read_registry()["sessions"]
    result = env.clean_json("--days", "0")
    assert kept_ids(result)[sid] == "orphaned-has-history"
    assert exists(env, sid)
    assert env.list_json()[sid]["state"] == "orphaned"


def test_headless_session_with_transcript_is_not_empty(env):
    # `claude -p` writes projects/<cwd>/<id>.jsonl and never history.jsonl.
    headless = env.make_session(history=None)
    transcript = os.path.join(env.sdir(headless), "projects", "-home-u-work")
    os.makedirs(transcript)
    with open(os.path.join(transcript, "0306f14b-c4b6-4b41-bb8e-c3da2f735f24.jsonl"), "w") as f:
        f.write('{"type":"user"}\n')
    truly_empty = env.make_session(history=None)
    result = env.clean_json()
    assert removed_ids(result) == {truly_empty: "empty"}
    assert kept_ids(result) == {headless: "has-history"}
    assert exists(env, headless)


def test_session_option_removes_exactly_that_session(env):
    target = env.make_session(history=b"history worth keeping\n")
    other = env.make_session(history=b"")            # would be removed by a normal run
    result = env.clean_json("--session", target)
    assert result["removed"] == [{"id": target, "reason": "requested", "dir": env.sdir(target)}]
    assert not exists(env, target) and exists(env, other)
    assert set(env.read_registry()["sessions"]) == {other}
    again = env.clean("--session", target)
    assert again.returncode == 1 and b"no session" in again.stderr
    assert env.clean("--session", "not-a-uuid").returncode == 64
    assert env.clean("--days", "-1").returncode == 64


def test_session_option_takes_several_ids_and_refuses_only_the_live_one(env):
    first = env.make_session(history=b"a\n")
    second = env.make_session(history=b"b\n")
    untouched = env.make_session(history=b"")
    go = os.path.join(env.tmp, "go")
    p = env.launch(STUB_WAIT=go)
    live = env.running_session(p, known=(first, second, untouched))
    r = env.clean("--json", "--session", first, "--session", live, "--session", second)
    assert r.returncode == 1 and ("not removing %s" % live).encode() in r.stderr
    assert removed_ids(json.loads(r.stdout)) == {first: "requested", second: "requested"}
    assert not exists(env, first) and not exists(env, second)
    assert exists(env, live) and exists(env, untouched)
    open(go, "w").close()
    assert p.wait(timeout=30) == 0


def test_no_sessions_dir_is_not_an_error(env):
    shutil.rmtree(env.sessions)  # push made it; a host may lose it
    r = env.clean("--json")
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"removed": [], "kept": [], "dry_run": False, "credentials_rescued": []}
    assert not os.path.exists(env.sessions)


# ---------------------------------------------------------------- live sessions are never deleted

def test_live_session_never_deleted_whatever_else_holds(env):
    go = os.path.join(env.tmp, "go")
    p = env.launch(STUB_WAIT=go, STUB_NO_HISTORY=1)   # empty while it runs
    sid = env.running_session(p)
    # Make it look as deletable as possible: empty, inactive for a year, and
    # missing from the registry (only the entry of a *dead* launcher is evidence).
    year = time.time() - 365 * 86400
    for name in os.listdir(env.sdir(sid)):
        os.utime(os.path.join(env.sdir(sid), name), (year, year))
    os.utime(env.sdir(sid), (year, year))
    for args in ([], ["--days", "0"], ["--dry-run", "--days", "0"]):
        result = env.clean_json(*args)
        assert sid not in removed_ids(result)
        assert kept_ids(result)[sid] == "live"
    refused = env.clean("--session", sid)
    assert refused.returncode == 1 and b"live" in refused.stderr
    assert exists(env, sid)

    env.write_registry({})                             # entry lost while it runs
    result = env.clean_json("--days", "0")
    assert kept_ids(result)[sid] == "in-use"          # its client still uses the dir
    assert env.clean("--session", sid).returncode == 1
    assert exists(env, sid)

    open(go, "w").close()
    assert p.wait(timeout=20) == 0


def test_pid_reuse_does_not_make_a_session_live(env):
    me = os.getpid()
    reused = env.make_session(history=b"", status="active", pid=me, pid_start=start_time(me) + 1)
    live = env.make_session(history=b"", status="active", pid=me, pid_start=start_time(me))
    rows = env.list_json()
    assert (rows[reused]["state"], rows[live]["state"]) == ("ended", "active")
    result = env.clean_json()
    assert removed_ids(result) == {reused: "empty"}
    assert kept_ids(result) == {live: "live"}


def test_cleaner_racing_concurrent_launches_never_deletes_a_live_session(env):
    env.write_conf("max_sessions=0\n")
    go = os.path.join(env.tmp, "go")
    stop = threading.Event()
    runs, failures, removals, planted = [], [], {}, []

    def cleaner_loop():
        while not stop.is_set():
            # An orphan in each round proves the cleaner really deletes things.
            planted.append(env.make_session(history=b"", registered=False))
            began = time.monotonic()
            r = env.clean("--json", "--days", "0")   # as aggressive as it gets
            runs.append((began, time.monotonic()))
            if r.returncode != 0:
                failures.append(r.stderr.decode())
                continue
            for item in json.loads(r.stdout)["removed"]:
                removals[item["id"]] = item["reason"]

    def clients_running():
        return sum(os.path.exists(os.path.join(env.sdir(sid), "client.pid"))
                   for sid in env.session_ids())

    thread = threading.Thread(target=cleaner_loop)
    thread.start()
    procs = []
    try:
        first_launch = time.monotonic()
        for _ in range(20):
            # Each client looks empty until it is released, then must still be
            # able to write into its directory (it exits 99 otherwise).
            procs.append(env.launch(STUB_NO_HISTORY=1, STUB_LATE_HISTORY=1, STUB_WAIT=go,
                                    STUB_SLEEP="%.2f" % random.uniform(0, 0.3)))
            time.sleep(random.uniform(0, 0.05))
        last_launch = time.monotonic()
        # (A launcher exiting this early has failed: stop waiting, report below.)
        wait_for(lambda: clients_running() == 20 or any(p.poll() is not None for p in procs),
                 timeout=40, what="20 clients")
        # However slow the machine, the cleaner sweeps the running sessions a few times...
        seen = len(runs)
        wait_for(lambda: len(runs) >= seen + 3, timeout=40, what="3 cleaner runs")
        # ...and keeps sweeping while they end.
        open(go, "w").close()
        codes = [p.wait(timeout=40) for p in procs]
    finally:
        stop.set()
        thread.join(timeout=40)

    assert failures == []
    assert any(began < last_launch and ended > first_launch for began, ended in runs), \
        "no cleaner run overlapped the launches"
    assert codes == [0] * 20, [p.stderr.read().decode() for p in procs]
    assert set(planted) <= set(removals), "planted orphans were not removed"
    # Every launch registered: its entry is still there (ended), or the cleaner
    # removed the session after its launcher ended.
    registered = env.read_registry()["sessions"]
    assert all(entry["status"] == "ended" for entry in registered.values())
    launched_and_removed = set(removals) - set(planted)
    assert not set(registered) & launched_and_removed
    assert len(set(registered) | launched_and_removed) == 20


# ---------------------------------------------------------------- crashed launchers

def assert_orphaned_client_protected_until_it_ends(env, sid, client, go):
    """The client of a dead launcher still runs in its directory: the cleaner
    keeps the session (in use) until the client ends, then removes it whole."""
    assert kept_ids(env.clean_json("--days", "0"))[sid] == "in-use"
    assert env.clean("--session", sid).returncode == 1
    assert exists(env, sid)

    open(go, "w").close()
    wait_for(lambda: proc_gone(client), what="orphaned client to exit")
    assert env.list_json()[sid]["state"] == "ended"
    result = env.clean_json("--session", sid)
    assert removed_ids(result) == {sid: "requested"}
    assert not exists(env, sid)
    assert sid not in env.read_registry()["sessions"]
    assert not os.path.lexists(os.path.join(env.active, sid))


def test_kill9_launcher_leaves_entry_list_and_cleaner_handle(env):
    # Only the launcher dies: its registry helper sees its stdin end and closes
    # the entry (exit code unknown); the client it started still runs.
    go = os.path.join(env.tmp, "go")
    p = env.launch(STUB_WAIT=go)
    sid = env.running_session(p)
    helper = registry_helper_of(sid)
    assert helper is not None
    with open(os.path.join(env.sdir(sid), "client.pid")) as f:
        client = int(f.read())
    p.kill()
    p.wait()
    wait_for(lambda: proc_gone(helper), what="registry helper to close the entry")
    entry = env.read_registry()["sessions"][sid]
    assert (entry["status"], entry["exit_code"]) == ("ended", None)
    assert entry["ended"] is not None
    assert not os.path.lexists(os.path.join(env.active, sid))
    assert env.list_json()[sid]["state"] == "ended"

    assert_orphaned_client_protected_until_it_ends(env, sid, client, go)


def test_kill9_of_launcher_and_its_helper_leaves_entry_list_and_cleaner_handle(env):
    # Nothing is left to close the entry (a crash, an OOM kill of both): the
    # registry still says active, the link is stale, yet nobody treats the
    # session as live.
    go = os.path.join(env.tmp, "go")
    p = env.launch(STUB_WAIT=go)
    sid = env.running_session(p)
    helper = registry_helper_of(sid)
    with open(os.path.join(env.sdir(sid), "client.pid")) as f:
        client = int(f.read())
    os.kill(helper, 9)
    p.kill()
    # Not reaped yet: a zombie launcher is not alive either.
    wait_for(lambda: proc_gone(p.pid), what="launcher to become a zombie")
    assert os.path.exists("/proc/%d" % p.pid)
    assert env.list_json()[sid]["state"] == "ended"
    p.wait()
    assert env.read_registry()["sessions"][sid]["status"] == "active"   # never closed
    assert os.path.islink(os.path.join(env.active, sid))                 # stale link
    assert env.list_json()[sid]["state"] == "ended"

    assert_orphaned_client_protected_until_it_ends(env, sid, client, go)


def test_kill9_of_launcher_and_client_is_cleaned_by_a_normal_run(env):
    p = env.launch(STUB_NO_HISTORY=1, STUB_SLEEP=30)
    sid = env.running_session(p)
    with open(os.path.join(env.sdir(sid), "client.pid")) as f:
        client = int(f.read())
    p.kill()
    p.wait()
    os.kill(client, 9)
    wait_for(lambda: proc_gone(client), what="client to die")
    assert env.list_json()[sid]["state"] == "ended"
    assert removed_ids(env.clean_json()) == {sid: "empty"}
    assert not exists(env, sid) and not os.path.lexists(os.path.join(env.active, sid))
    assert env.read_registry()["sessions"] == {}


# ---------------------------------------------------------------- no registry

def test_without_registry_an_active_link_protects_and_nothing_is_orphaned(env):
    linked = env.make_session(history=b"", registered=False)
    os.symlink(env.sdir(linked), os.path.join(env.active, linked))
    empty = env.make_session(history=b"", registered=False)
    with_history = env.make_session(history=b"x\n", registered=False)
    assert not os.path.exists(env.registry)
    result = env.clean_json()
    assert removed_ids(result) == {empty: "empty"}
    assert kept_ids(result) == {linked: "active-link", with_history: "has-history"}
    assert env.clean("--session", linked).returncode == 1
    assert exists(env, linked) and exists(env, with_history)
    assert not os.path.exists(env.registry)             # the cleaner does not invent one


def test_active_link_with_dead_registered_launcher_is_stale(env):
    sid = env.make_session(history=b"", status="active")
    os.symlink(env.sdir(sid), os.path.join(env.active, sid))
    assert removed_ids(env.clean_json()) == {sid: "empty"}
    assert not os.path.lexists(os.path.join(env.active, sid))


# ---------------------------------------------------------------- corrupt registry

# A hand-edited entry whose fields have other types than the launcher writes.
WRONG_TYPES = [b'"started": 1700000000', b'"name": ["a"]', b'"ended": {}', b'"exit_code": "0"',
               b'"exit_code": true', b'"host": 5', b'"boot_id": 1', b'"dir": false']


@pytest.mark.parametrize("content", [
    b"{not json", b"", b"[]", b'{"version": 2, "sessions": {}}',
    b'{"version": 1, "sessions": {"11111111-2222-4333-8444-555555555555": 5}}',
    b'{"version": 1, "sessions": {"11111111-2222-4333-8444-555555555555": {"status": "ended"}}}',
] + [b'{"version": 1, "sessions": {"11111111-2222-4333-8444-555555555555": {"pid": 1, "pid_start": 1, '
       b'"status": "ended", %s}}}' % field for field in WRONG_TYPES],
    ids=["garbage", "empty-file", "list", "version", "entry-not-object", "entry-without-pid"]
    + ["wrong-type-" + f.split(b'"')[1].decode() for f in WRONG_TYPES])
def test_unparseable_registry_deletes_nothing_and_exits_2(env, content):
    env.make_session(history=b"", registered=False)
    env.make_session(history=b"x\n", registered=False, age_days=30)
    with open(env.registry, "wb") as f:
        f.write(content)
    before = snapshot(env.sessions)
    for args in ([], ["--days", "0"], ["--dry-run"], ["--json"],
                 ["--session", env.session_ids()[0]]):
        r = env.clean(*args)
        assert r.returncode == 2, args
        assert b".registry" in r.stderr and b"refusing" in r.stderr
        assert r.stdout == b""
    after = snapshot(env.sessions)
    after.pop(".registry.lock", None)
    before.pop(".registry.lock", None)
    assert after == before


# ---------------------------------------------------------------- what is never a candidate

def test_planted_symlink_is_never_followed(env):
    outside = os.path.join(env.tmp, "precious")
    os.makedirs(os.path.join(outside, "sub"))
    with open(os.path.join(outside, "sub", "data"), "w") as f:
        f.write("keep me")
    outside_file = os.path.join(env.tmp, "precious-file")
    with open(outside_file, "w") as f:
        f.write("keep me too")
    env.write_registry({})
    # UUID-named symlinks in sessions/: to a directory and to a file.
    dir_link = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    file_link = "aaaaaaaa-bbbb-4ccc-8ddd-ffffffffffff"
    os.symlink(outside, os.path.join(env.sessions, dir_link))
    os.symlink(outside_file, os.path.join(env.sessions, file_link))
    # An orphaned real session holding links to the outside: rmtree must remove
    # the links, not what they point to.
    orphan = env.make_session(history=b"", registered=False)
    os.symlink(outside, os.path.join(env.sdir(orphan), "link-to-dir"))
    os.symlink(outside_file, os.path.join(env.sdir(orphan), "link-to-file"))
    nested = os.path.join(env.sdir(orphan), "projects", "deep", "deeper")
    os.makedirs(nested)
    os.symlink(outside, os.path.join(nested, "link-to-dir"))
    os.symlink(os.path.join(outside, "sub", "data"), os.path.join(nested, "link-to-data"))
    outside_before = snapshot(outside)

    result = env.clean_json("--days", "0")
    assert removed_ids(result) == {orphan: "orphaned"}
    assert not os.path.lexists(env.sdir(orphan))
    assert env.clean("--session", dir_link).returncode == 1
    assert snapshot(outside) == outside_before
    with open(outside_file) as f:
        assert f.read() == "keep me too"
    assert os.readlink(os.path.join(env.sessions, dir_link)) == outside
    assert os.readlink(os.path.join(env.sessions, file_link)) == outside_file


def test_non_session_entries_are_never_touched(env):
    registered = env.make_session(history=b"x\n")
    os.symlink(env.sdir(registered), os.path.join(env.active, "foreign-link"))
    os.makedirs(os.path.join(env.sessions, "notes"))
    os.makedirs(os.path.join(env.sessions, "AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE"))
    os.makedirs(os.path.join(env.sessions, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee.bak"))
    with open(os.path.join(env.sessions, "aaaaaaaa-bbbb-4ccc-8ddd-000000000000"), "w") as f:
        f.write("a file with a session name")
    with open(os.path.join(env.sessions, "README"), "w") as f:
        f.write("hi")
    orphan = env.make_session(history=b"", registered=False)
    env.clean("--json")                                 # creates the lock file
    orphan2 = env.make_session(history=b"", registered=False)
    before = snapshot(env.sessions)

    result = env.clean_json("--days", "0")
    assert removed_ids(result) == {orphan2: "orphaned", registered: "old"}
    assert orphan not in env.session_ids()
    after = snapshot(env.sessions)
    gone = {k for k in before if k not in after}
    assert all(k.startswith((orphan2, registered)) for k in gone), gone
    changed = {k for k in after if before.get(k) != after[k]}
    # Only the registry (entry removed) and the two directories' parents change.
    assert changed <= {".registry", "active"}, changed
    assert os.path.islink(os.path.join(env.active, "foreign-link"))
    assert os.path.isfile(os.path.join(env.sessions, ".registry.lock"))


def test_registry_untouched_when_nothing_registered_is_removed(env):
    keep = env.make_session(history=b"x\n")
    env.make_session(history=b"", registered=False)
    before = os.stat(env.registry)
    with open(env.registry, "rb") as f:
        content = f.read()
    env.clean_json()
    after = os.stat(env.registry)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    with open(env.registry, "rb") as f:
        assert f.read() == content
    assert env.session_ids() == [keep]


# ---------------------------------------------------------------- dry run

@pytest.mark.parametrize("args", [[], ["--days", "5"], ["--days", "0"]])
def test_dry_run_lists_exactly_what_the_real_run_removes(env, args):
    go = os.path.join(env.tmp, "go")
    p = env.launch(STUB_WAIT=go)
    live = env.running_session(p)
    env.make_session(history=b"x\n")                                   # recent, kept
    env.make_session(history=b"x\n", age_days=10)                       # old with --days 5
    env.make_session(history=b"")                                       # empty
    env.make_session(history=b"x\n", registered=False)                  # orphaned
    crashed = env.make_session(history=b"", status="active")            # dead launcher
    os.symlink(env.sdir(crashed), os.path.join(env.active, crashed))
    missing = env.make_session(history=b"")
    os.rename(env.sdir(missing), os.path.join(env.tmp, "moved-away"))   # entry without dir

    before = snapshot(env.sessions)
    dry = env.clean_json("--dry-run", *args)
    assert dry["dry_run"] is True
    assert snapshot(env.sessions) == before
    text = env.clean("--dry-run", *args)
    assert text.returncode == 0
    assert sorted(text.stdout.decode().splitlines()) == sorted(
        "would remove %s (%s) %s" % (r["id"], r["reason"], r["dir"]) for r in dry["removed"])

    real = env.clean_json(*args)
    key = lambda r: r["id"]  # noqa: E731
    assert sorted(real["removed"], key=key) == sorted(dry["removed"], key=key)
    assert sorted(real["kept"], key=key) == sorted(dry["kept"], key=key)
    assert dry["removed"], "the scenario must remove something"
    assert missing in removed_ids(real) and crashed in removed_ids(real)
    assert live not in removed_ids(real) and exists(env, live)
    for r in real["removed"]:
        assert not exists(env, r["id"])
        assert r["id"] not in env.read_registry()["sessions"]
    for r in real["kept"]:
        assert exists(env, r["id"])
    open(go, "w").close()
    assert p.wait(timeout=20) == 0


def _cleaner_module():
    import importlib.util

    from conftest import FILES
    spec = importlib.util.spec_from_file_location("cleanup_sessions", os.path.join(FILES, "cleanup-sessions.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_remove_tree_never_follows_a_symlink_even_one_swapped_in(tmp_path, monkeypatch):
    cleaner = _cleaner_module()
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "data").write_text("keep")
    before = snapshot(str(outside))

    # The path itself is a symlink: refused, nothing removed.
    os.symlink(str(outside), str(tmp_path / "link"))
    with pytest.raises(OSError):
        cleaner.remove_tree(str(tmp_path / "link"))
    assert snapshot(str(outside)) == before

    # A directory that becomes a symlink between the listing and the descent
    # (the listing is made to say "directory"): the descent fails, the target
    # is untouched.
    victim = tmp_path / "victim"
    victim.mkdir()
    os.symlink(str(outside), str(victim / "was-a-dir"))
    real_scandir = os.scandir

    class Lying:
        def __init__(self, entry):
            self.name = entry.name

        def is_dir(self, follow_symlinks=True):
            return True

    class Listing:
        def __init__(self, fd):
            self.entries = [Lying(e) for e in real_scandir(fd)]

        def __enter__(self):
            return iter(self.entries)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(cleaner.os, "scandir", Listing)
    with pytest.raises(OSError):
        cleaner.remove_tree(str(victim))
    monkeypatch.undo()
    assert snapshot(str(outside)) == before

    # A normal tree with links to the outside at every depth goes entirely.
    tree = tmp_path / "tree"
    (tree / "a" / "b" / "c").mkdir(parents=True)
    (tree / "a" / "file").write_text("x")
    os.symlink(str(outside), str(tree / "a" / "b" / "c" / "out"))
    os.symlink(str(outside / "sub" / "data"), str(tree / "data-link"))
    cleaner.remove_tree(str(tree))
    assert not os.path.lexists(str(tree))
    assert snapshot(str(outside)) == before


# ---------------------------------------------------------------- sessions/ and active/ are ours

def _other_apps_jobs(env):
    """Another program's directory with UUID-named entries that look like sessions."""
    jobs = os.path.join(env.tmp, "other-app", "jobs")
    for sid in ("aaaaaaaa-1111-4111-8111-111111111111", "bbbbbbbb-1111-4111-8111-111111111111"):
        os.makedirs(os.path.join(jobs, sid))
    with open(os.path.join(jobs, "aaaaaaaa-1111-4111-8111-111111111111", "output.bin"), "w") as f:
        f.write("result")
    os.symlink("/etc/hostname", os.path.join(jobs, "cccccccc-1111-4111-8111-111111111111"))
    return jobs


@pytest.mark.parametrize("args", [[], ["--dry-run"], ["--days", "0"],
                                  ["--session", "bbbbbbbb-1111-4111-8111-111111111111"]])
def test_symlinked_sessions_dir_is_refused(env, args):
    jobs = _other_apps_jobs(env)
    shutil.rmtree(env.sessions)
    os.symlink(jobs, env.sessions)                 # ~/.claude/sessions -> elsewhere
    before = snapshot(jobs)
    r = env.clean(*args)
    assert r.returncode == 3, r.stderr
    assert b"is a symlink" in r.stderr and env.sessions.encode() in r.stderr
    assert r.stdout == b""
    assert snapshot(jobs) == before
    # The same through --sessions-dir, with a trailing slash too.
    for given in (env.sessions, env.sessions + "/"):
        r = env.clean("--sessions-dir", given, *args)
        assert r.returncode == 3, (given, r.stderr)
    assert snapshot(jobs) == before


def test_symlinked_active_dir_is_refused(env):
    assert env.run(STUB_NO_HISTORY=1).returncode == 0   # an empty session: would be removed
    (sid,) = env.session_ids()
    other = os.path.join(env.tmp, "other")
    os.makedirs(other)
    os.symlink("/etc/hostname", os.path.join(other, sid))   # someone else's entry of that name
    os.rmdir(env.active)
    os.symlink(other, env.active)
    before = snapshot(env.sessions)
    for args in ([], ["--dry-run"], ["--session", sid]):
        r = env.clean(*args)
        assert r.returncode == 3, r.stderr
        assert b"active" in r.stderr and b"is a symlink" in r.stderr
    assert os.readlink(os.path.join(other, sid)) == "/etc/hostname"
    assert snapshot(env.sessions) == before
    assert exists(env, sid)


def test_removal_goes_through_descriptors_that_never_follow_a_symlink(tmp_path):
    # Even if active/ became a symlink after the check: apply() fails rather
    # than unlink an entry in the directory it leads to.
    cleaner = _cleaner_module()
    sessions = tmp_path / "sessions"
    sid = "aaaaaaaa-1111-4111-8111-111111111111"
    (sessions / sid).mkdir(parents=True)
    other = tmp_path / "other"
    other.mkdir()
    os.symlink("/etc/hostname", str(other / sid))
    os.symlink(str(other), str(sessions / "active"))
    with pytest.raises(OSError):
        cleaner.apply(str(sessions), None, [{"id": sid, "reason": "empty", "dir": str(sessions / sid)}])
    assert os.path.islink(str(other / sid))
    assert (sessions / sid).is_dir()


# ---------------------------------------------------------------- command line

def test_a_session_named_twice_is_removed_once(env):
    target = env.make_session(history=b"x\n")
    other = env.make_session(history=b"y\n")
    r = env.clean("--json", "--session", target, "--session", target, "--session=" + target)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["removed"] == [{"id": target, "reason": "requested", "dir": env.sdir(target)}]
    assert not exists(env, target) and exists(env, other)
    assert set(env.read_registry()["sessions"]) == {other}


@pytest.mark.parametrize("days", ["nan", "NaN", "inf", "-inf", "infinity", "1e400", "x", ""])
def test_days_must_be_a_finite_number(env, days):
    sid = env.make_session(history=b"x\n", age_days=100)
    for args in (["--days", days], ["--days", days, "--dry-run"], ["--days=" + days]):
        r = env.clean(*args)
        assert r.returncode == 64, (args, r.stderr)
        assert b"--days" in r.stderr and b"usage:" in r.stderr
    assert exists(env, sid)
    assert removed_ids(env.clean_json("--days", "1")) == {sid: "old"}


@pytest.mark.parametrize("tool", ["cleanup-sessions.py", "claude-session-list"])
def test_empty_sessions_dir_option_is_a_usage_error(env, tool):
    sid = env.make_session(history=b"")             # a normal run of the cleaner removes it
    for args in (["--sessions-dir", ""], ["--sessions-dir="]):
        r = env.tool(tool, *args)
        assert r.returncode == 64, r.stderr
        assert b"--sessions-dir" in r.stderr and b"empty" in r.stderr
        assert r.stdout == b""
    assert exists(env, sid)


# ---------------------------------------------------------------- PID namespaces

def _can_unshare_pid():
    try:
        r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def test_a_cleaner_in_another_pid_namespace_never_removes_a_live_session(env):
    if not _can_unshare_pid():
        pytest.skip("cannot create a PID namespace here (unshare --pid needs privileges)")
    go = os.path.join(env.tmp, "go")
    p = env.launch(STUB_NO_HISTORY=1, STUB_LATE_HISTORY=1, STUB_WAIT=go)   # empty while it runs
    sid = env.running_session(p)
    assert env.read_registry()["sessions"][sid]["pid_ns"] == os.readlink("/proc/self/ns/pid")
    # Its own /proc: neither the launcher nor the client is visible from there.
    cleaner = os.path.join(env.bindir, "cleanup-sessions.py")
    for args in (["--json", "--days", "0"], ["--json", "--session", sid]):
        r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", cleaner] + args,
                           env=env.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        result = json.loads(r.stdout)
        assert sid not in removed_ids(result), r.stderr
        assert kept_ids(result)[sid] == "live"
        assert exists(env, sid)
    open(go, "w").close()
    assert p.wait(timeout=20) == 0                  # 99 if its directory had vanished


def test_entries_from_another_pid_namespace_count_as_live_until_ended_or_rebooted(env):
    foreign = "pid:[1]"                              # no namespace has inode 1
    live = env.make_session(history=b"", status="active")
    ended = env.make_session(history=b"", status="ended")
    rebooted = env.make_session(history=b"", status="active")
    legacy = env.make_session(history=b"", status="active")   # no pid_ns: judged by our /proc
    reg = env.read_registry()
    for sid in (live, ended, rebooted):
        reg["sessions"][sid]["pid_ns"] = foreign
    reg["sessions"][live]["boot_id"] = open("/proc/sys/kernel/random/boot_id").read().strip()
    reg["sessions"][rebooted]["boot_id"] = "00000000-0000-4000-8000-000000000000"
    env.write_registry(reg["sessions"])

    assert {sid: row["state"] for sid, row in env.list_json().items()} == {
        live: "active", ended: "ended", rebooted: "ended", legacy: "ended"}
    result = env.clean_json("--days", "0")
    assert kept_ids(result) == {live: "live"}
    assert removed_ids(result) == {ended: "empty", rebooted: "empty", legacy: "empty"}
    assert env.clean("--session", live).returncode == 1
    # It counts against max_sessions like any live session.
    env.write_conf("max_sessions=1\n")
    assert env.run().returncode == 75
