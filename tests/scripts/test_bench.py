"""The speed benchmark (bench/bench.py) runs and prints its table, and its
skeleton starts exactly the processes it stands for.

Only that it works is checked here, at one host and one run of each command
with the debug build: its numbers are for bench runs on a quiet machine, not
for a test (see the README's Speed section).
"""
import importlib.util
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time

from conftest import REPO, csdeploy_binary, python_shim, python_starts

BENCH = os.path.join(REPO, "bench", "bench.py")
SKELETON = os.path.join(REPO, "bench", "skeleton")
RELAY = os.path.join(REPO, "bench", "relay.py")
COMMANDS = ["floor", "push-first", "push-rerun", "verify", "skeleton", "skeleton-no-helper"]


def test_bench_prints_every_command_with_its_ratio_to_the_floor():
    proc = subprocess.run([sys.executable, BENCH, "--hosts", "1", "--runs", "1", "--tools", "csdeploy,skeleton",
                           "--csdeploy", csdeploy_binary()],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
    # 1 is "a target missed", which a debug build on a loaded machine may.
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "| hosts | %s |" % " | ".join(COMMANDS) in lines, proc.stdout + proc.stderr
    row = [line for line in lines if line.startswith("| 1 |")]
    assert len(row) == 1, proc.stdout
    cells = [cell.strip() for cell in row[0].strip("|").split("|")][1:]
    assert len(cells) == len(COMMANDS)
    assert cells[0].endswith(" s") and all(cell.endswith("×)") for cell in cells[1:]), row
    assert any(line.startswith("target push first <= floor + 60 ms") for line in lines), proc.stdout
    for target in ("verify <= floor + 120 ms (#14)", "verify's controller CPU <= floor's + 10 ms a host (#14)"):
        assert re.search(r"^target %s +at 1 hosts: (met|MISSED)$" % re.escape(target), proc.stdout, re.M), proc.stdout
    assert re.search(r"^target hosts' CPU per verify <= 1\.25x baseline's \(#14\) +at 1 hosts: "
                     r"not measured \(give --baseline-csdeploy\)$", proc.stdout, re.M), proc.stdout


def test_bench_measures_a_baseline_csdeploy_beside_todays():
    # Today's build as its own baseline: only that the command runs and the
    # growth target gets a verdict (the same code may still miss it by noise).
    proc = subprocess.run([sys.executable, BENCH, "--hosts", "1", "--runs", "1", "--tools", "csdeploy",
                           "--csdeploy", csdeploy_binary(), "--baseline-csdeploy", csdeploy_binary()],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert "| hosts | floor | push-first | push-rerun | verify | verify-baseline |" in proc.stdout, proc.stdout
    assert re.search(r"^target hosts' CPU per verify <= 1\.25x baseline's \(#14\) +at 1 hosts: (met|MISSED)$",
                     proc.stdout, re.M), proc.stdout
    assert "FAILED hosts" not in proc.stdout, proc.stdout


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_results(n, **changes):
    """One host count's results as bench.main makes them, every #14 target
    met by far; `changes` sets medians: a command's wall seconds, or
    cpu_COMMAND=(machine, hosts) CPU seconds, or rss=KiB."""
    floor = 4.0 if n == 50 else 0.25
    r = {"n": n, "med": {"floor": floor, "push-first": floor, "push-rerun": floor, "verify": floor},
         "cpu": {"floor": (2.0, 1.0), "verify": (2.0 + 0.05 * n, 1.0 + 0.05 * n),
                 "verify-baseline": (2.0 + 0.05 * n, 1.0 + 0.05 * n)},
         "rss": {"push-first": 10 * 1024}, "slowest": {}}
    for key, value in changes.items():
        if key.startswith("cpu_"):
            r["cpu"][key[4:].replace("_", "-")] = value
        elif key == "rss":
            r["rss"]["push-first"] = value
        else:
            r["med"][key.replace("_", "-")] = value
    return r


def verdict(r, label):
    found = dict(load_bench().targets(r, None))
    assert label in found, found
    return found[label]


EPSILON = 0.001  # a thousandth of a second, or of a ratio


def test_targets_of_issue_14_turn_missed_just_past_their_bounds():
    # The floor is 4 s at 50 hosts and 0.25 s at 1; CPU of the floor: machine
    # 2 s, hosts 1 s (controller 1 s), so a host's share beyond it is (x - that) / n.
    cases = [
        (50, "push rerun <= 1.05x floor (#14)", lambda x: {"push_rerun": 4.0 * (1.05 + x)}),
        (50, "push first <= 1.10x floor (#14)", lambda x: {"push_first": 4.0 * (1.10 + x)}),
        (50, "peak RSS <= 30 MB (#14)", lambda x: {"rss": 30 * 1024 * (1 + x)}),
        (1, "verify <= floor + 120 ms (#14)", lambda x: {"verify": 0.25 + 0.120 + x}),
        # Hosts 1 + 0.1 a host; controller 1 + (10 ms + x) a host.
        (50, "verify's controller CPU <= floor's + 10 ms a host (#14)",
         lambda x: {"cpu_verify": (1.0 + 5.0 + 1.0 + 50 * (0.010 + x), 1.0 + 5.0)}),
        (1, "verify's controller CPU <= floor's + 10 ms a host (#14)",
         lambda x: {"cpu_verify": (1.0 + 0.1 + 1.0 + 0.010 + x, 1.0 + 0.1)}),
        # The baseline's hosts: 80 ms a host beyond the floor; 1.25 times that is 100 ms.
        (50, "hosts' CPU per verify <= 1.25x baseline's (#14)",
         lambda x: {"cpu_verify_baseline": (9.0, 1.0 + 50 * 0.080), "cpu_verify": (9.0, 1.0 + 50 * (0.100 + x))}),
        (1, "hosts' CPU per verify <= 1.25x baseline's (#14)",
         lambda x: {"cpu_verify_baseline": (2.0, 1.0 + 0.080), "cpu_verify": (2.0, 1.0 + 0.100 + x)}),
    ]
    for n, label, change in cases:
        assert verdict(synthetic_results(n, **change(-EPSILON)), label) is True, (n, label)
        assert verdict(synthetic_results(n, **change(+EPSILON)), label) is False, (n, label)


def test_growth_target_is_not_measured_without_a_baseline():
    r = synthetic_results(1)
    del r["cpu"]["verify-baseline"]
    assert verdict(r, "hosts' CPU per verify <= 1.25x baseline's (#14)") is None


def test_bench_rtt_mode_reports_the_delay_it_got_and_round_trips():
    proc = subprocess.run([sys.executable, BENCH, "--hosts", "1", "--runs", "1", "--tools", "csdeploy", "--rtt", "20ms",
                           "--csdeploy", csdeploy_binary()],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    seen = re.search(r"^relay, asked 20 ms a round trip: a byte's round trip ([0-9.]+) ms median \(min ([0-9.]+),",
                     proc.stdout, re.M)
    assert seen, proc.stdout
    assert float(seen.group(2)) >= 20.0, "the relay delivered a round trip early: %s" % seen.group(0)
    assert "| hosts | floor | push-first | push-rerun | verify | floor-direct | verify-direct |" in proc.stdout
    assert re.search(r"^ +1 hosts: push-first [+-][0-9.]+, push-rerun [+-][0-9.]+, verify [+-][0-9.]+,", proc.stdout,
                     re.M), proc.stdout
    for target in ("push first <= floor + 1 RTT", "push rerun <= floor + 1 RTT", "verify <= floor + 1 RTT + own work"):
        assert re.search(r"^target %s +at 1 hosts, RTT 20 ms: (met|MISSED)$" % re.escape(target), proc.stdout,
                         re.M), proc.stdout


class Relay:
    """bench/relay.py in front of a listening socket of the test's."""

    def __init__(self, rtt_ms):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.server.settimeout(60)
        self.proc = subprocess.Popen([sys.executable, RELAY, "--rtt-ms", str(rtt_ms),
                                      str(self.server.getsockname()[1])],
                                     stdout=subprocess.PIPE, universal_newlines=True)
        listen, target = self.proc.stdout.readline().split()
        assert int(target) == self.server.getsockname()[1]
        assert self.proc.stdout.readline() == "ready\n"
        self.port = int(listen)

    def close(self):
        self.proc.terminate()
        self.proc.wait()
        self.server.close()


def receive(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "end of stream after %d of %d bytes" % (len(data), size)
        data += chunk
    return data


def test_relay_delivers_nothing_before_half_the_rtt_each_way():
    # Lower bounds only, which a correct relay cannot miss however loaded the
    # machine is (its clock and ours are both CLOCK_MONOTONIC); how close to
    # the asked delay it gets is what bench.py measures and prints.
    relay = Relay(400)
    try:
        client = socket.create_connection(("127.0.0.1", relay.port), timeout=60)
        connected = time.monotonic()
        server, _ = relay.server.accept()
        accepted = time.monotonic()
        assert accepted - connected >= 0.2, "the server saw the connection %.3f s after the client" % (
            accepted - connected)
        server.settimeout(60)
        sent = time.monotonic()
        client.sendall(b"ping")
        assert receive(server, 4) == b"ping"
        assert time.monotonic() - sent >= 0.2, "client to server in less than rtt/2"
        sent = time.monotonic()
        server.sendall(b"pong")
        assert receive(client, 4) == b"pong"
        assert time.monotonic() - sent >= 0.2, "server to client in less than rtt/2"
        client.shutdown(socket.SHUT_WR)
        sent = time.monotonic()
        assert server.recv(1) == b"", "end of stream is relayed"
        assert time.monotonic() - sent >= 0.2, "end of stream in less than rtt/2"
        client.close()
        server.close()
    finally:
        relay.close()


def test_relay_keeps_every_byte_in_order_both_ways():
    relay = Relay(20)
    try:
        client = socket.create_connection(("127.0.0.1", relay.port), timeout=60)
        server, _ = relay.server.accept()
        server.settimeout(60)
        up = bytes(range(256)) * 8192  # 2 MiB, many chunks on the way
        down = up[::-1]
        writers = [threading.Thread(target=client.sendall, args=(up,)),
                   threading.Thread(target=server.sendall, args=(down,))]
        for w in writers:
            w.start()
        assert receive(server, len(up)) == up
        assert receive(client, len(down)) == down
        for w in writers:
            w.join()
        client.close()
        server.close()
    finally:
        relay.close()


def run_skeleton(skeleton, tmp_path, *args):
    """Runs skeleton/verifier.py; returns it and the python3 starts it caused."""
    path, records = python_shim(str(tmp_path))
    env = dict(os.environ, HOME=str(tmp_path), PATH=path)
    proc = subprocess.run([sys.executable, "-I", "-S", os.path.join(skeleton, "verifier.py")] + list(args), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    return proc, python_starts(records)


def test_skeleton_runs_two_sessions_each_with_its_python_helper(tmp_path):
    proc, starts = run_skeleton(SKELETON, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert len(starts) == 2 and all("sys.stdin.readline()" in s for s in starts), \
        "one registry helper per session, 2 sessions: %s" % starts


def test_skeleton_fails_when_a_session_fails(tmp_path):
    broken = str(tmp_path / "skeleton")
    shutil.copytree(SKELETON, broken)
    client = os.path.join(broken, "client")
    with open(client, "w") as f:
        f.write("#!/bin/sh\nexit 3\n")
    os.chmod(client, stat.S_IRWXU)
    proc, _starts = run_skeleton(broken, tmp_path)
    assert proc.returncode == 1, proc.stderr


def test_skeleton_without_helper_starts_no_python(tmp_path):
    proc, starts = run_skeleton(SKELETON, tmp_path, "launcher-without-helper")
    assert proc.returncode == 0, proc.stderr
    assert starts == [], "no registry helper was to start"
