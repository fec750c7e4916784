#!/usr/bin/env python3
"""csdeploy's speed, measured against the SSH floor in the same run.

Simulates N hosts on loopback, each a real OpenSSH sshd of its own on its own
port with generated keys (the test harness's set-up), each in its own PID
namespace with its own /proc when run as root (so that a host sees only its
own processes, as a real one does; --one-sshd for a single shared sshd),
each host its own inventory entry, HOME and SSH connection; and for each N
measures, alternating the commands, after a warm-up round:

  floor        N parallel `ssh ... true` with the ssh config csdeploy uses
  push-first   csdeploy push on wiped hosts
  push-rerun   csdeploy push with nothing to change
  verify       csdeploy verify
  verify-baseline  the verify of an older csdeploy (--baseline-csdeploy), after
               an untimed push of its own: what today's verify costs the hosts
               against it
  skeleton     the processes a verification starts on each host, each doing
               nothing (bench/skeleton, plain ssh like the floor): what the
               design of the session tools costs before any work is done
  skeleton-no-helper  the same with launchers that start no registry helper:
               the difference is what one Python process per session costs
  ansible      ansible-playbook with bench/ansible-push.yml, first run (only if
               installed; pipelining and ControlPersist on, 50 forks)
  pyinfra      pyinfra with bench/pyinfra_deploy.py, first run (only if installed)

It prints medians, each one's ratio to the floor, the median CPU time the
whole machine spent on each command (every process: ssh, sshd, the remote
steps, csdeploy; on loopback the hosts share the controller's cores, so on a
2-core machine wall time follows CPU time), the median per-phase times
csdeploy reports (connect = the SSH handshake, gather, apply), csdeploy's own
peak memory, and checks the targets of the speed issues (#14's budget among
them), each printed as met, MISSED, or not measured. With --profile (and
Linux `perf` installed) it also records one more run of each command with
`perf record -a` and prints where that CPU time went, by process name.

    cargo build --release && python3 bench/bench.py [--hosts 1,10,50] [--runs 5] [--kex ALG] [--profile]
        [--baseline-csdeploy OLDER/target/release/csdeploy]

Nothing here touches your ~/.ssh or ~/.claude: every host's HOME is in a
temporary directory, and ssh reads only the generated config.
"""
import argparse
import collections
import getpass
import json
import os
import random
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SSHD = "/usr/sbin/sshd"


def free_ports(n, avoid=()):
    """n distinct free ports on 127.0.0.1, below the kernel's ephemeral range:
    there no outgoing connection (ours or another program's) takes one as its
    source port between this check and sshd's bind, and asking the kernel for
    port 0 n times would repeat one (at 200 hosts, about one run in two)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    held, ports = [], []
    first = max(1024, low - 20000)
    # From a random place in that range, so that two benches at once seldom
    # pick the same ports (start_sshds copes when they do).
    start = random.randrange(first, low)
    try:
        for port in list(range(start, low)) + list(range(first, start)):
            if len(ports) == n:
                break
            if port in avoid:
                continue
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)
            ports.append(port)
    finally:
        for s in held:
            s.close()
    if len(ports) < n:
        sys.exit("only %d free ports below %d for %d hosts" % (len(ports), low, n))
    return ports


def raise_nofile():
    """Soft descriptor limit to the hard one: 500 hosts' ssh clients, relay
    connections and Popen pipes need more than the usual 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# A user of its own per bench process: two benches at once (a test suite's
# beside a measurement) each deleted and re-created one shared `csdbench`,
# leaving the other's logins with a HOME that no longer existed.
BENCH_USER = "csdbench%d" % os.getpid()


def can_unshare():
    """Whether this process may give an sshd its own PID namespace and /proc
    (root, util-linux, and a container that allows it)."""
    if os.getuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "true"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


def sbin(name):
    """An administration command, also when PATH lacks the sbin directories."""
    return shutil.which(name) or os.path.join("/usr/sbin", name)


def make_user(lab_dir):
    """As root, log in as a throwaway user (unlocked, no password: key only)
    with an empty home: root's own
    login shell may do heavy work for every command (pyenv init in .bashrc
    costs ~230 ms here), which would be measured instead of SSH."""
    home = os.path.join(lab_dir, "userhome")
    subprocess.run([sbin("useradd"), "--password", "*", "--no-create-home", "--home-dir", home, "--shell", "/bin/bash", BENCH_USER],
                   check=True)
    os.makedirs(home)
    shutil.chown(home, BENCH_USER, BENCH_USER)
    return BENCH_USER


class Lab:
    def __init__(self, max_hosts, kex, user, isolate=True, rtt=None):
        self.dir = tempfile.mkdtemp(prefix="csd-bench-")
        os.chmod(self.dir, 0o755)
        self.made_user = user is None and os.getuid() == 0
        self.user = make_user(self.dir) if self.made_user else (user or getpass.getuser())
        d = self.dir
        for name in ("hostkey", "id"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, name)], check=True)
        shutil.copy(os.path.join(d, "id.pub"), os.path.join(d, "authorized_keys"))
        os.makedirs("/run/sshd", exist_ok=True)
        # One sshd per simulated host, each in its own PID namespace with its
        # own /proc when we may create one: a host then sees its own
        # processes only, as a real one does (the cleaner's in-use scan, the
        # liveness checks). Measured, one shared /proc cost no more CPU.
        self.isolated = isolate and can_unshare()
        self.ports = free_ports(max_hosts if self.isolated else 1)
        # MaxStartups: every host's connection may be mid-handshake at once
        # (the one sshd of --one-sshd has 500 of them at 500 hosts; sshd's
        # default, 10:30:100, drops them from the 11th on).
        with open(os.path.join(d, "sshd_config"), "w") as f:
            f.write("\n".join([
                "ListenAddress 127.0.0.1",
                "HostKey %s/hostkey" % d, "AuthorizedKeysFile %s/authorized_keys" % d,
                "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
                "StrictModes no", "PidFile none", "MaxStartups %d" % max(1000, 2 * max_hosts), "MaxSessions 30",
                "PermitRootLogin prohibit-password", "LogLevel ERROR",
                "Subsystem sftp internal-sftp", ""]))
        lines = ["Host *", "  UserKnownHostsFile %s/known_hosts" % d, "  GlobalKnownHostsFile /dev/null",
                 "  IdentityFile %s/id" % d, "  IdentitiesOnly yes", "  BatchMode yes"]
        if kex:
            lines.append("  KexAlgorithms %s" % kex)
        self.ssh_config = os.path.join(d, "ssh_config")
        with open(self.ssh_config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.sshds, self.sshd_pids = [], []
        self.rtt, self.relay, self.relay_ports, self.echo = rtt, None, {}, None
        try:
            self.start_sshds()
            if rtt is not None:
                self.start_relay(rtt)
            self.write_known_hosts()
        except BaseException:
            self.close()
            raise
        self.max_hosts = max_hosts
        self.skeleton = os.path.join(d, "skeleton")  # readable by the login user, unlike the checkout may be
        shutil.copytree(os.path.join(ROOT, "bench", "skeleton"), self.skeleton)

    def write_known_hosts(self):
        with open(os.path.join(self.dir, "hostkey.pub")) as f:
            key = " ".join(f.read().split()[:2])
        with open(os.path.join(self.dir, "known_hosts"), "w") as f:
            f.writelines("[127.0.0.1]:%d %s\n" % (port, key)
                         for port in self.ports + list(self.relay_ports.values()))

    def inventory(self, n, relayed=False):
        path = os.path.join(self.dir, "inventory-%d%s.yml" % (n, "-relayed" if relayed else ""))
        lines = ["all:", "  hosts:"]
        for i in range(n):
            home = self.home(i)
            os.makedirs(home, exist_ok=True)
            if self.made_user:
                shutil.chown(home, self.user, self.user)
            lines += ["    host%d:" % i, "      ansible_host: 127.0.0.1", "      ansible_port: %d" % self.port(i, relayed),
                      "      ansible_user: %s" % self.user,
                      "      environment:", "        HOME: %s" % home]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def spawn_sshd(self, port, log):
        namespace = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"] if self.isolated else []
        return subprocess.Popen(
            namespace + [SSHD, "-D", "-e", "-f", os.path.join(self.dir, "sshd_config"), "-o", "Port=%d" % port],
            stderr=log)

    def start_sshds(self):
        """Starts every sshd and waits until each accepts connections; one
        whose port was taken in the meantime (its sshd exits: "Address
        already in use") is started again on another port."""
        log = open(os.path.join(self.dir, "sshd.log"), "w")
        self.sshds = [self.spawn_sshd(port, log) for port in self.ports]
        deadline = time.monotonic() + 60 + 0.1 * len(self.ports)
        pending = list(range(len(self.ports)))
        while pending:
            for i in pending:
                while True:
                    if self.sshds[i].poll() is not None:
                        self.ports[i] = free_ports(1, avoid=set(self.ports))[0]
                        self.sshds[i] = self.spawn_sshd(self.ports[i], log)
                    try:
                        socket.create_connection(("127.0.0.1", self.ports[i]), timeout=1).close()
                        break
                    except OSError:
                        pass
                    if time.monotonic() > deadline:
                        sys.exit("sshd on port %d did not start (see %s/sshd.log)" % (self.ports[i], self.dir))
                    time.sleep(0.02)
            # Something answered on each port; but if another program took
            # one first, that was not our sshd, which has exited by now.
            time.sleep(0.2)
            pending = [i for i in pending if self.sshds[i].poll() is not None]
        self.sshd_pids = [self.listener(proc.pid) for proc in self.sshds]

    def start_relay(self, rtt):
        """bench/relay.py in front of every sshd and of an echo server whose
        round trip through it measures the delay the relay really adds."""
        self.echo = socket.socket()
        self.echo.bind(("127.0.0.1", 0))
        self.echo.listen(16)
        threading.Thread(target=echo_server, args=(self.echo,), daemon=True).start()
        targets = self.ports + [self.echo.getsockname()[1]]
        self.relay = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "relay.py"), "--rtt-ms",
                                       str(rtt * 1000)] + [str(p) for p in targets],
                                      stdout=subprocess.PIPE, universal_newlines=True)
        for line in self.relay.stdout:
            if line.strip() == "ready":
                break
            listen, target = (int(v) for v in line.split())
            self.relay_ports[target] = listen
        if len(self.relay_ports) != len(targets):
            sys.exit("relay.py did not start")

    def echo_round_trips(self, count=20):
        """Round-trip times (s) of one byte through the relay and back."""
        times = []
        with socket.create_connection(("127.0.0.1", self.relay_ports[self.echo.getsockname()[1]])) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(count):
                start = time.monotonic()
                s.sendall(b"x")
                if s.recv(1) != b"x":
                    sys.exit("relay.py lost a byte")
                times.append(time.monotonic() - start)
        return times

    def listener(self, pid):
        """The listening sshd of a Popen: itself, or unshare's one child."""
        if not self.isolated:
            return pid
        for _ in range(500):
            try:
                with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                    children = f.read().split()
            except OSError:
                children = []
            if children:
                return int(children[0])
            time.sleep(0.01)
        sys.exit("sshd did not start under unshare (see %s/sshd.log)" % self.dir)

    def hosts_cpu_seconds(self):
        """CPU time of the listening sshds and every process they have
        reaped (the connections, and so everything that ran on the hosts)."""
        ticks = 0
        for pid in self.sshd_pids:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        return ticks / os.sysconf("SC_CLK_TCK")

    def sessions_left(self):
        """How many processes the listening sshds still have: connections
        (and, in a PID namespace, where the sshd is init, orphans) not yet
        ended and reaped, whose CPU hosts_cpu_seconds does not count yet."""
        left = 0
        for pid in self.sshd_pids:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                left += len(f.read().split())
        return left

    def wait_for_sessions(self, timeout=10.0):
        """Waits until every session on the hosts has ended and been reaped:
        a host's sshd ends a moment after its client does, and its CPU would
        otherwise count for whatever is measured next. False if some are
        still there after timeout seconds."""
        deadline = time.monotonic() + timeout
        while self.sessions_left():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def port(self, i, relayed=False):
        port = self.ports[i % len(self.ports)]
        return self.relay_ports[port] if relayed else port

    def home(self, i):
        return os.path.join(self.dir, "homes", "host%d" % i)

    def wipe(self, n):
        for i in range(n):
            shutil.rmtree(os.path.join(self.home(i), ".claude"), ignore_errors=True)

    def close(self):
        if self.relay:
            self.relay.terminate()
            self.relay.wait()
        for sshd in self.sshds:
            # unshare ignores SIGTERM while it waits; its --kill-child takes
            # the namespace's sshd (and anything left in it) along.
            sshd.kill() if self.isolated else sshd.terminate()
        for sshd in self.sshds:
            sshd.wait()
        if self.made_user:
            # Its last sessions may take a moment to end after their sshd.
            for _ in range(20):
                if subprocess.run([sbin("userdel"), self.user], stderr=subprocess.DEVNULL).returncode in (0, 6):
                    break
                time.sleep(0.5)
        shutil.rmtree(self.dir, ignore_errors=True)


def echo_server(listener):
    """Sends back every byte it gets, one connection at a time."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                conn.sendall(data)


def cpu_seconds():
    """CPU time the whole machine has spent busy since boot (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Command(collections.namedtuple("Command", "name run needs leaves", defaults=(None, None))):
    """One command of a round. `run` is what is timed and whose CPU counts:
    it returns (wall seconds, csdeploy's JSON report or None, csdeploy's peak
    RSS in KiB or None). `needs` is the hosts' state it must start from
    (see Hosts; None: any), `leaves` the state it leaves them in (None: the
    one it found)."""
    __slots__ = ()


class Hosts:
    """What the simulated hosts hold: "wiped", "today" (today's csdeploy
    pushed), "baseline" (--baseline-csdeploy's push), "other" (Ansible's or
    pyinfra's), or None (not known). Before each command, `prepare` brings
    the hosts to the state it needs, untimed and outside its CPU count, so
    that every command is measured from the same start whatever ran before
    it (the baseline's deployed tools differ from today's)."""

    def __init__(self, lab, n, pushes):
        self.lab, self.n = lab, n
        self.pushes = pushes  # state -> the untimed push that makes it, on wiped hosts
        self.state = None

    def prepare(self, needs):
        if needs is None or needs == self.state:
            return
        self.lab.wipe(self.n)
        if needs in self.pushes:
            self.pushes[needs]()
        self.state = needs

    def ran(self, command):
        if command.leaves:
            self.state = command.leaves


def measured(command, lab, hosts):
    """(wall seconds, (machine CPU seconds, hosts' CPU seconds), csdeploy's
    JSON report or None, csdeploy's peak RSS in KiB or None) of command.run,
    from the hosts' state it needs."""
    hosts.prepare(command.needs)
    settled(lab, "before " + command.name)
    before = cpu_seconds(), lab.hosts_cpu_seconds()
    elapsed, doc, rss = command.run()
    settled(lab, "after " + command.name)
    busy = cpu_seconds() - before[0], lab.hosts_cpu_seconds() - before[1]
    hosts.ran(command)
    return elapsed, busy, doc, rss


def settled(lab, when):
    """Waits for the hosts' sessions to end (Lab.wait_for_sessions), so that
    a command's CPU is all of its own; says so when they do not."""
    if not lab.wait_for_sessions():
        print("hosts: %d processes of their sshds still running %s; their CPU counts for the next command"
              % (lab.sessions_left(), when), flush=True)


def profiled(command, hosts, out_dir, name):
    """Runs command under `perf record -a`; returns [(process name, CPU ms)]."""
    hosts.prepare(command.needs)
    data = os.path.join(out_dir, "perf-%s.data" % name)
    perf = subprocess.Popen(["perf", "record", "-q", "-a", "-e", "task-clock", "-F", "2000", "-o", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # perf is recording once its buffers are mapped
    command.run()
    hosts.ran(command)
    perf.send_signal(2)
    perf.wait()
    report = subprocess.run(["perf", "report", "-i", data, "--sort", "comm", "--stdio", "-F", "sample,comm"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True).stdout
    rows = []
    for line in report.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0].isdigit() and parts[1].strip() != "swapper":
            rows.append((parts[1].strip(), int(parts[0]) / 2.0))  # 2000 Hz: a sample is 0.5 ms
    return sorted(rows, key=lambda r: -r[1])


def timed(argv, env=None):
    """Wall time, exit code, output, error output and peak RSS (KiB) of one
    command: its own, from wait4, not its children's (csdeploy's ssh)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - start
        proc.returncode = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
        out.seek(0)
        err.seek(0)
        return elapsed, proc.returncode, out.read(), err.read(), usage.ru_maxrss


def parallel_ssh(lab, n, command, what, relayed):
    """Wall time of `command` run on n hosts at once with plain ssh."""
    start = time.monotonic()
    procs = [subprocess.Popen(["ssh", "-F", lab.ssh_config, "-p", str(lab.port(i, relayed)),
                               "%s@127.0.0.1" % lab.user, command(i)], stdin=subprocess.DEVNULL) for i in range(n)]
    codes = [p.wait() for p in procs]
    elapsed = time.monotonic() - start
    if any(codes):
        sys.exit("%s: ssh failed: %s (see %s/sshd.log)" % (what, codes, lab.dir))
    return elapsed, None, None


def floor(lab, n, relayed):
    return parallel_ssh(lab, n, lambda i: "true", "floor", relayed)


def skeleton(lab, n, relayed, launcher="launcher"):
    """bench/skeleton on every host: the processes a verification starts, each
    doing nothing (see skeleton/verifier.py)."""
    # The interpreter as csdeploy's agent finds it: the platform python first.
    verifier = 'for p in /usr/bin/python3 python3; do command -v "$p" >/dev/null && exec "$p" -I -S %s %s; done' % (
        shlex.quote(os.path.join(lab.skeleton, "verifier.py")), launcher)
    return parallel_ssh(lab, n, lambda i: "env HOME=%s /bin/sh -c %s" % (
        shlex.quote(lab.home(i)), shlex.quote(verifier)), "skeleton", relayed)


EXTRA_ARGS = []


def csdeploy(binary, lab, inventory, *args):
    argv = [binary] + list(args) + EXTRA_ARGS + ["-i", inventory, "--ssh-config", lab.ssh_config, "--format", "json"]
    env = dict(os.environ, CI="1")
    elapsed, code, out, err, rss = timed(argv, env)
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    # 1 (a host failed) and 3 (a host unreachable): kept and reported (at 500
    # hosts that is a finding, not a reason to lose the run); anything else
    # ends the bench.
    if code != 0 and (code not in (1, 3) or doc is None):
        sys.exit("%s failed (%d): %s%s" % (" ".join(args), code, err.decode()[-2000:], out.decode()[-2000:]))
    if code in (1, 3):
        failed = failures(doc)
        FAILED.append((" ".join(args), len(doc["hosts"]), failed))
        print("%s: %d of %d hosts failed, e.g. %s" % (" ".join(args), len(failed), len(doc["hosts"]),
                                                       "; ".join(failed[:3])), flush=True)
    return elapsed, doc, rss


FAILED = []  # (command, hosts, ["host: why", ...]) of every csdeploy run that had failed hosts


def failures(doc):
    """'host: why' for each failed host of a csdeploy JSON report."""
    failed = []
    for host in doc["hosts"]:
        if host.get("status") in ("ok", "changed", "pass"):
            continue
        why = host.get("error") or ""
        for check in host.get("checks", []):
            if check.get("status") == "fail":
                why += " %s: %s" % (check.get("id"), (check.get("detail") or check.get("actual") or "")[:200])
        for task in host.get("tasks", []):
            if task.get("status") == "failed":
                why += " %s: %s" % (task.get("name"), (task.get("msg") or "")[:200])
        failed.append("%s: %s" % (host.get("host"), why.strip() or host.get("status")))
    return failed


OTHER_FORKS = 50  # Ansible's forks and pyinfra's --parallel (--other-forks)


def ansible(binary, lab, inventory):
    argv = [binary, "-i", inventory, os.path.join(ROOT, "bench", "ansible-push.yml")]
    # Ansible at its best: its own connection reuse, pipelining, 50 forks.
    control = os.path.join(lab.dir, "ansible-cp")
    env = dict(os.environ, ANSIBLE_FORKS=str(OTHER_FORKS), ANSIBLE_PIPELINING="True",
               ANSIBLE_SSH_CONTROL_PATH_DIR=control,
               ANSIBLE_SSH_ARGS="-F %s -o ControlMaster=auto -o ControlPersist=60s" % lab.ssh_config)
    elapsed, code, out, err, _ = timed(argv, env)
    # Its masters would outlive it by 60 s, and the hosts' sessions with them,
    # whose CPU time would then count for whatever runs when they end.
    close_masters(lab, control)
    if code != 0:
        sys.exit("ansible failed: %s" % out.decode()[-2000:])
    return elapsed, None, None


def close_masters(lab, control):
    """Ends every ssh ControlMaster whose socket is in the directory control."""
    if not os.path.isdir(control):
        return
    procs = [subprocess.Popen(["ssh", "-F", lab.ssh_config, "-o", "ControlPath=" + os.path.join(control, name),
                               "-O", "exit", "master"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name in os.listdir(control)]
    for p in procs:
        p.wait()


def pyinfra(binary, lab, n, relayed):
    inv = os.path.join(lab.dir, "pyinfra_inventory_%d%s.py" % (n, "_relayed" if relayed else ""))
    with open(inv, "w") as f:
        f.write("hosts = [\n")
        for i in range(n):
            f.write("    ('host%d', {'ssh_hostname': '127.0.0.1', 'ssh_port': %d, 'ssh_user': %r, 'ssh_key': %r,"
                    " 'ssh_known_hosts_file': %r, 'home': %r}),\n"
                    % (i, lab.port(i, relayed), lab.user, lab.dir + "/id", lab.dir + "/known_hosts", lab.home(i)))
        f.write("]\n")
    argv = [binary, "-y", "--parallel", str(OTHER_FORKS), inv, os.path.join(ROOT, "bench", "pyinfra_deploy.py")]
    elapsed, code, out, err, _ = timed(argv)
    if code != 0:
        sys.exit("pyinfra failed: %s" % (out + err).decode()[-2000:])
    return elapsed, None, None


def median_phases(documents):
    phases = {}
    for doc in documents:
        for host in doc["hosts"]:
            for key, value in host.get("phases", {}).items():
                phases.setdefault(key, []).append(value)
    return {k: statistics.median(v) for k, v in phases.items()}


def slowest_host(documents):
    """(slowest host's ms, median host's ms) of the run whose slowest host
    is furthest above its median: a starved host shows here."""
    worst = None
    for doc in documents:
        times = [host["duration_ms"] for host in doc["hosts"]]
        pair = (max(times), statistics.median(times))
        if worst is None or pair[0] / max(pair[1], 1) > worst[0] / max(worst[1], 1):
            worst = pair
    return worst


def parse_rtt(text):
    """'100ms', '0.1s' or '100' (ms) -> seconds."""
    value = text.strip().lower()
    scale = 0.001
    if value.endswith("ms"):
        value = value[:-2]
    elif value.endswith("s"):
        value, scale = value[:-1], 1.0
    try:
        seconds = float(value) * scale
    except ValueError:
        raise argparse.ArgumentTypeError("--rtt %r: give a time such as 20ms or 0.1s" % text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError("--rtt %r: must be more than zero" % text)
    return seconds


TOOLS = ("csdeploy", "skeleton", "pyinfra", "ansible")


def find_tool(name):
    """ansible-playbook or pyinfra: on PATH, or in target/bench-venv (see
    docs/speed.md for how to install them there)."""
    venv = os.path.join(ROOT, "target", "bench-venv", "bin", name)
    return shutil.which(name) or (venv if os.access(venv, os.X_OK) else None)


def relay_check(lab, rtt):
    """The delay the relay really adds: a byte's round trip through it, and
    one `ssh true` through it against one without, in round trips."""
    echo = lab.echo_round_trips()
    ssh = {}
    for relayed in (False, True):
        ssh[relayed] = statistics.median(floor(lab, 1, relayed)[0] for _ in range(5))
    extra = (ssh[True] - ssh[False]) / rtt
    print("relay, asked %.0f ms a round trip: a byte's round trip %.1f ms median (min %.1f, max %.1f, %d of them);"
          " one `ssh true` %.3f s direct, %.3f s relayed: + %.1f round trips"
          % (rtt * 1000, statistics.median(echo) * 1000, min(echo) * 1000, max(echo) * 1000, len(echo),
             ssh[False], ssh[True], extra))
    return statistics.median(echo), extra


def main():
    global OTHER_FORKS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", default="1,10,50")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kex", help="KexAlgorithms for both the floor and csdeploy (e.g. curve25519-sha256)")
    parser.add_argument("--tools", help="comma-separated, of %s (default: all, pyinfra and ansible if installed)"
                        % ",".join(TOOLS))
    parser.add_argument("--rtt", type=parse_rtt,
                        help="put a link with this round-trip time (e.g. 20ms, 100ms) between the clients and the"
                        " hosts: bench/relay.py, a TCP relay delaying each byte by rtt/2 each way")
    parser.add_argument("--other-runs", type=int, default=1,
                        help="runs of ansible-playbook and pyinfra (slow), after their warm-up")
    parser.add_argument("--other-forks", type=int, default=OTHER_FORKS,
                        help="Ansible's forks and pyinfra's --parallel (default %(default)s)")
    parser.add_argument("--csdeploy-args", default="", help="extra csdeploy flags, e.g. '--ssh-mux process'")
    parser.add_argument("--user", help="log in as this user (default: yours; as root, a throwaway user)")
    parser.add_argument("--one-sshd", action="store_true",
                        help="one sshd for all simulated hosts instead of one per host, each in its own PID namespace")
    parser.add_argument("--csdeploy", default=os.path.join(ROOT, "target", "release", "csdeploy"))
    parser.add_argument("--baseline-csdeploy", metavar="PATH",
                        help="an older csdeploy build (#14 compares with a623089's) whose verify is measured beside"
                        " today's, as verify-baseline (after an untimed push of its own), for the target on the"
                        " hosts' CPU per verify")
    parser.add_argument("--profile", action="store_true",
                        help="one more run of each command under `perf record -a`: CPU by process name")
    args = parser.parse_args()
    if args.profile and not shutil.which("perf"):
        sys.exit("--profile needs Linux perf (Debian: apt-get install linux-perf)")
    if not os.access(args.csdeploy, os.X_OK):
        sys.exit("%s not found: run `cargo build --release` first" % args.csdeploy)
    if args.baseline_csdeploy and not os.access(args.baseline_csdeploy, os.X_OK):
        sys.exit("--baseline-csdeploy %s: not an executable" % args.baseline_csdeploy)
    tools = TOOLS if args.tools is None else [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        parser.error("--tools: unknown %s; choose from %s" % (", ".join(unknown), ",".join(TOOLS)))
    binaries = {"pyinfra": find_tool("pyinfra"), "ansible": find_tool("ansible-playbook")}
    missing = [t for t in ("pyinfra", "ansible") if t in tools and not binaries[t]]
    if missing and args.tools is not None:
        parser.error("--tools: %s not installed (on PATH or in target/bench-venv; see docs/speed.md)"
                     % ", ".join(missing))
    tools = [t for t in tools if t not in missing]
    sizes = [int(n) for n in args.hosts.split(",")]
    EXTRA_ARGS.extend(args.csdeploy_args.split())
    OTHER_FORKS = args.other_forks
    limit = raise_nofile()
    rtt = args.rtt
    relayed = rtt is not None
    lab = Lab(max(sizes), args.kex, args.user, isolate=not args.one_sshd, rtt=rtt)
    print("csdeploy benchmark: %d runs each (4× at 1 host) after a warm-up, %s on 127.0.0.1 as %s, kex %s, %d cores,"
          " %s, fd limit %d, tools %s%s"
          % (args.runs, "one sshd per host, each in its own PID namespace" if lab.isolated
             else "one sshd for all hosts (no PID namespaces: --one-sshd, not root, or not allowed here)",
             lab.user, args.kex or "OpenSSH default", os.cpu_count(),
             "RTT %.0f ms through bench/relay.py" % (rtt * 1000) if relayed else "loopback (no added RTT)",
             limit, ",".join(tools) or "none", "" if not missing else "; not installed: %s" % ", ".join(missing)))
    if args.baseline_csdeploy:
        print("baseline: %s, its verify measured as verify-baseline" % args.baseline_csdeploy)
    results = []
    try:
        relay_seen = relay_check(lab, rtt) if relayed else None
        for n in sizes:
            inventory = lab.inventory(n, relayed)
            hosts = Hosts(lab, n, {"today": lambda: csdeploy(args.csdeploy, lab, inventory, "push"),
                                   "baseline": lambda: csdeploy(args.baseline_csdeploy, lab, inventory, "push")})
            commands = [Command("floor", lambda: floor(lab, n, relayed))]
            if "csdeploy" in tools:
                commands += [
                    Command("push-first", lambda: csdeploy(args.csdeploy, lab, inventory, "push"), "wiped", "today"),
                    Command("push-rerun", lambda: csdeploy(args.csdeploy, lab, inventory, "push"), "today"),
                    Command("verify", lambda: csdeploy(args.csdeploy, lab, inventory, "verify"), "today"),
                ]
                if args.baseline_csdeploy:
                    # Its own deployment first (Hosts.prepare, untimed); the
                    # next command of today's that needs today's files gets
                    # them pushed again the same way.
                    commands.append(Command("verify-baseline",
                                            lambda: csdeploy(args.baseline_csdeploy, lab, inventory, "verify"),
                                            "baseline"))
            if "skeleton" in tools:
                commands += [Command("skeleton", lambda: skeleton(lab, n, relayed)),
                             Command("skeleton-no-helper",
                                     lambda: skeleton(lab, n, relayed, "launcher-without-helper"))]
            if relayed:
                # The same without the relay, in the same run: what the hosts'
                # own work costs (verify-direct - floor-direct), for the
                # verify target "floor + 1 round trip + the hosts' own work".
                direct = lab.inventory(n)
                commands.append(Command("floor-direct", lambda: floor(lab, n, False)))
                if "csdeploy" in tools:
                    commands.append(Command("verify-direct", lambda: csdeploy(args.csdeploy, lab, direct, "verify"),
                                            "today"))
            if "ansible" in tools:
                commands.append(Command("ansible", lambda: ansible(binaries["ansible"], lab, inventory),
                                        "wiped", "other"))
            if "pyinfra" in tools:
                commands.append(Command("pyinfra", lambda: pyinfra(binaries["pyinfra"], lab, n, relayed),
                                        "wiped", "other"))
            names = [command.name for command in commands]
            times = {name: [] for name in names}
            cpu = {name: [] for name in names}
            docs = {name: [] for name in names}
            rss = {name: [] for name in names}
            others = ("ansible", "pyinfra")
            # One host takes ~0.3 s a command, where one scheduling hiccup of
            # this shared machine is a tenth of it: four times the runs there.
            runs = args.runs * 4 if n == 1 else args.runs
            for run in range(runs + 1):
                for command in commands:
                    name = command.name
                    if name in others and run > args.other_runs:
                        continue
                    elapsed, busy, doc, peak = measured(command, lab, hosts)
                    if run > 0:
                        times[name].append(elapsed)
                        cpu[name].append(busy)
                        if doc:
                            docs[name].append(doc)
                        if peak:
                            rss[name].append(peak)
            profiles = {}
            if args.profile:
                for command in commands:
                    if command.name not in others:
                        profiles[command.name] = profiled(command, hosts, lab.dir, "%s-%d" % (command.name, n))
            med = {name: statistics.median(v) for name, v in times.items()}
            med_cpu = {name: tuple(statistics.median(x[k] for x in v) for k in (0, 1)) for name, v in cpu.items() if v}
            results.append({
                "n": n, "med": med, "cpu": med_cpu, "profiles": profiles,
                "phases": {k: median_phases(v) for k, v in docs.items()},
                "rss": {k: max(v) for k, v in rss.items() if v},
                "slowest": {k: slowest_host(v) for k, v in docs.items() if v},
                "rerun_cmds": sorted({d["hosts"][0]["remote_commands"] for d in docs.get("push-rerun", [])}),
                "first_cmds": sorted({d["hosts"][0]["remote_commands"] for d in docs.get("push-first", [])}),
            })
    finally:
        lab.close()
    return report(results, rtt, relay_seen)


# The commands of --baseline-csdeploy, an older csdeploy measured beside
# today's: not today's code, so none of today's targets but the growth one.
BASELINE_COMMANDS = ("verify-baseline",)

# CPU time of a command, from the bench's medians (machine, hosts) per command:
CPU_OF = {
    "machine": lambda machine, hosts: machine,  # every process of the machine
    "hosts": lambda machine, hosts: hosts,  # the sshds and all they started
    "controller": lambda machine, hosts: machine - hosts,  # csdeploy, its ssh, the rest
}


def cpu_of(r, name, where):
    """Median CPU seconds command `name` took, in `where` (a key of CPU_OF),
    in the results r of one host count."""
    return CPU_OF[where](*r["cpu"][name])


def cpu_per_host_beyond_floor(r, name, where):
    """CPU seconds per host that command `name` took beyond the floor's."""
    return (cpu_of(r, name, where) - cpu_of(r, "floor", where)) / r["n"]


def todays_peak_rss(r):
    """csdeploy's peak RSS (KiB) over today's commands, not the baseline's."""
    return max(v for name, v in r["rss"].items() if name not in BASELINE_COMMANDS)


# How a verdict of targets() is printed; None: a target needing a command
# this run did not have.
VERDICT_WORDS = {True: "met", False: "MISSED", None: "not measured (give --baseline-csdeploy)"}


def targets(r, rtt):
    """[(label, verdict)] for the results r of one host count and the
    --rtt (None: loopback); verdict True (met), False (missed) or None (not
    measured). Labels end with the issue that set the target, when #14."""
    n, med = r["n"], r["med"]
    f = med["floor"]
    found = []
    if "push-first" not in med:
        return found
    if rtt:
        own = med["verify-direct"] - med["floor-direct"]
        found += [("push first <= floor + 1 RTT", med["push-first"] <= f + rtt),
                  ("push rerun <= floor + 1 RTT", med["push-rerun"] <= f + rtt),
                  ("verify <= floor + 1 RTT + own work", med["verify"] <= f + rtt + own)]
    elif n >= 500:
        found += [("push rerun <= 1.05x floor", med["push-rerun"] <= 1.05 * f),
                  ("push first <= 1.10x floor", med["push-first"] <= 1.10 * f),
                  ("peak RSS <= 50 MB", todays_peak_rss(r) <= 50 * 1024)]
        found += [("slowest host <= 2x median, %s" % name, slow <= 2 * middle)
                  for name, (slow, middle) in r["slowest"].items() if name not in BASELINE_COMMANDS]
    elif n == 50:
        found += [("push rerun <= 1.05x floor (#14)", med["push-rerun"] <= 1.05 * f),
                  ("push first <= 1.10x floor (#14)", med["push-first"] <= 1.10 * f),
                  ("peak RSS <= 30 MB (#14)", todays_peak_rss(r) <= 30 * 1024),
                  ("verify <= floor + 1.5 s", med["verify"] <= f + 1.5)]
    elif n == 1:
        found += [("push first <= floor + 60 ms", med["push-first"] <= f + 0.060),
                  ("push rerun <= floor + 60 ms", med["push-rerun"] <= f + 0.060),
                  ("verify <= floor + 120 ms (#14)", med["verify"] <= f + 0.120)]
    if "verify" in med:
        found.append(("verify's controller CPU <= floor's + 10 ms a host (#14)",
                      cpu_per_host_beyond_floor(r, "verify", "controller") <= 0.010))
        found.append(("hosts' CPU per verify <= 1.25x baseline's (#14)", hosts_cpu_growth_ok(r)))
    return found


def hosts_cpu_growth_ok(r):
    """Whether the hosts' CPU per host beyond the floor of today's verify is
    within 1.25 times the baseline's (None: no baseline measured)."""
    if "verify-baseline" not in r["cpu"]:
        return None
    return (cpu_per_host_beyond_floor(r, "verify", "hosts")
            <= 1.25 * cpu_per_host_beyond_floor(r, "verify-baseline", "hosts"))


def report(results, rtt, relay_seen):
    print()
    names = list(results[0]["med"].keys())
    print("| hosts | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for r in results:
        med = r["med"]
        cells = []
        for name in names:
            ratio = med[name] / med["floor"]
            cells.append("%.3f s" % med[name] + ("" if name == "floor" else " (%.2f×)" % ratio))
        print("| %d | %s |" % (r["n"], " | ".join(cells)))
    if rtt:
        print()
        print("The same as floor + k round trips of %.0f ms (k = (time - floor) / RTT); verify's own work is"
              " verify-direct - floor-direct, the same commands without the relay:" % (rtt * 1000))
        for r in results:
            med = r["med"]
            cells = ["%s %+.1f" % (name, (med[name] - med["floor"]) / rtt) for name in names
                     if name not in ("floor", "floor-direct", "verify-direct")]
            if "verify-direct" in med:
                own = med["verify-direct"] - med["floor-direct"]
                cells.append("verify beyond its own work (%.2f s) %+.1f" % (own, (med["verify"] - med["floor"] - own) / rtt))
            print("  %3d hosts: %s" % (r["n"], ", ".join(cells)))
    print()
    print("Median CPU time per command (s), and per host beyond the floor (ms): of the whole machine, of the")
    print("hosts alone (sshd and everything it started; on a real fleet that runs on the hosts' own cores), and")
    print("of the controller (the machine's less the hosts': csdeploy, its ssh clients, and anything else running):")
    for r in results:
        for where in CPU_OF:
            print("  %3d hosts %-11s" % (r["n"], where) + "  ".join(
                "%s %.2f" % (name, cpu_of(r, name, where))
                + ("" if name == "floor" else " (%+.0f)" % (cpu_per_host_beyond_floor(r, name, where) * 1000))
                for name in r["cpu"]))
    if any(r["phases"].get("push-first") for r in results):
        print()
        print("Per host (ms, medians): connect = SSH handshake and ControlMaster start; slowest = the slowest host")
        print("of the run where it is furthest above the median host (a starved host shows there):")
    previous = None
    for r in results:
        n = r["n"]
        for name in ("push-first", "push-rerun", "verify", "verify-baseline"):
            p = r["phases"].get(name)
            if not p:
                continue
            slow, middle = r["slowest"][name]
            print("  %3d hosts %-15s connect %5.0f  gather %5.0f  apply %5.0f  host median %5.0f  slowest %5.0f"
                  " (%.2f× the median)" % (n, name, p.get("connect_ms", 0), p.get("gather_ms", 0),
                                           p.get("apply_ms", 0), middle, slow, slow / max(middle, 1)))
        if r["rss"]:
            peak = todays_peak_rss(r)
            growth = ""
            if previous:
                growth = "; %+.0f KiB per host over %d hosts" % ((peak - previous[1]) / (n - previous[0]), previous[0])
            print("  %3d hosts csdeploy peak RSS %.1f MB (%s)%s; remote commands per host: push first %s, rerun %s" % (
                n, peak / 1024, ", ".join("%s %.1f" % (k, v / 1024) for k, v in r["rss"].items()), growth,
                r["first_cmds"], r["rerun_cmds"]))
            previous = (n, peak)
    for r in results:
        for name, rows in r["profiles"].items():
            total = sum(ms for _, ms in rows)
            top = ", ".join("%s %.0f" % (comm, ms) for comm, ms in rows[:10])
            print("  %3d hosts %-10s CPU %.0f ms by process: %s" % (r["n"], name, total, top))
    print()
    failures = []
    for r in results:
        n, med = r["n"], r["med"]
        if n == 50 and not rtt and "skeleton" in med and "verify" in med:
            f = med["floor"]
            print("verify at %d hosts: floor + %.2f s, of which the skeleton (processes doing nothing) takes %.2f s,"
                  " %.2f s of it the sessions' registry helpers" % (n, med["verify"] - f, med["skeleton"] - f,
                                                                      med["skeleton"] - med["skeleton-no-helper"]))
        where = "at %d hosts" % n + (", RTT %.0f ms" % (rtt * 1000) if rtt else "")
        for label, verdict in targets(r, rtt):
            print("target %-56s %s: %s" % (label, where, VERDICT_WORDS[verdict]))
            if verdict is False:
                failures.append(label)
    for command, hosts, failed in FAILED:
        print("FAILED hosts: csdeploy %s, %d of %d hosts: %s" % (command, len(failed), hosts, "; ".join(failed[:5])))
    if FAILED:
        failures.append("failed hosts")
    if relay_seen and relay_seen[0] < rtt:
        print("relay: a round trip took %.1f ms, less than the %.0f ms asked: the relay is broken"
              % (relay_seen[0] * 1000, rtt * 1000))
        failures.append("relay")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
