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
peak memory, and checks the targets of the speed issue. With --profile (and
Linux `perf` installed) it also records one more run of each command with
`perf record -a` and prints where that CPU time went, by process name.

    cargo build --release && python3 bench/bench.py [--hosts 1,10,50] [--runs 5] [--kex ALG] [--profile]

Nothing here touches your ~/.ssh or ~/.claude: every host's HOME is in a
temporary directory, and ssh reads only the generated config.
"""
import argparse
import getpass
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SSHD = "/usr/sbin/sshd"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BENCH_USER = "csdbench"


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
    subprocess.run([sbin("userdel"), BENCH_USER], stderr=subprocess.DEVNULL)
    home = os.path.join(lab_dir, "userhome")
    subprocess.run([sbin("useradd"), "--password", "*", "--no-create-home", "--home-dir", home, "--shell", "/bin/bash", BENCH_USER],
                   check=True)
    os.makedirs(home)
    shutil.chown(home, BENCH_USER, BENCH_USER)
    return BENCH_USER


class Lab:
    def __init__(self, max_hosts, kex, user, isolate=True):
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
        self.ports = [free_port() for _ in range(max_hosts if self.isolated else 1)]
        with open(os.path.join(d, "sshd_config"), "w") as f:
            f.write("\n".join([
                "ListenAddress 127.0.0.1",
                "HostKey %s/hostkey" % d, "AuthorizedKeysFile %s/authorized_keys" % d,
                "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
                "StrictModes no", "PidFile none", "MaxStartups 1000", "MaxSessions 30",
                "PermitRootLogin prohibit-password", "LogLevel ERROR",
                "Subsystem sftp internal-sftp", ""]))
        with open(os.path.join(d, "hostkey.pub")) as f:
            key = " ".join(f.read().split()[:2])
        with open(os.path.join(d, "known_hosts"), "w") as f:
            f.writelines("[127.0.0.1]:%d %s\n" % (port, key) for port in self.ports)
        lines = ["Host *", "  UserKnownHostsFile %s/known_hosts" % d, "  GlobalKnownHostsFile /dev/null",
                 "  IdentityFile %s/id" % d, "  IdentitiesOnly yes", "  BatchMode yes"]
        if kex:
            lines.append("  KexAlgorithms %s" % kex)
        self.ssh_config = os.path.join(d, "ssh_config")
        with open(self.ssh_config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.sshds, self.sshd_pids = [], []
        try:
            self.start_sshds()
        except BaseException:
            self.close()
            raise
        self.max_hosts = max_hosts
        self.skeleton = os.path.join(d, "skeleton")  # readable by the login user, unlike the checkout may be
        shutil.copytree(os.path.join(ROOT, "bench", "skeleton"), self.skeleton)

    def inventory(self, n):
        path = os.path.join(self.dir, "inventory-%d.yml" % n)
        lines = ["all:", "  hosts:"]
        for i in range(n):
            home = self.home(i)
            os.makedirs(home, exist_ok=True)
            if self.made_user:
                shutil.chown(home, self.user, self.user)
            lines += ["    host%d:" % i, "      ansible_host: 127.0.0.1", "      ansible_port: %d" % self.port(i),
                      "      ansible_user: %s" % self.user,
                      "      environment:", "        HOME: %s" % home]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start_sshds(self):
        namespace = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"] if self.isolated else []
        log = open(os.path.join(self.dir, "sshd.log"), "w")
        for port in self.ports:
            self.sshds.append(subprocess.Popen(
                namespace + [SSHD, "-D", "-e", "-f", os.path.join(self.dir, "sshd_config"), "-o", "Port=%d" % port],
                stderr=log))
        self.sshd_pids = [self.listener(proc.pid) for proc in self.sshds]
        for port in self.ports:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.02)

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

    def port(self, i):
        return self.ports[i % len(self.ports)]

    def home(self, i):
        return os.path.join(self.dir, "homes", "host%d" % i)

    def wipe(self, n):
        for i in range(n):
            shutil.rmtree(os.path.join(self.home(i), ".claude"), ignore_errors=True)

    def close(self):
        for sshd in self.sshds:
            # unshare ignores SIGTERM while it waits; its --kill-child takes
            # the namespace's sshd (and anything left in it) along.
            sshd.kill() if self.isolated else sshd.terminate()
        for sshd in self.sshds:
            sshd.wait()
        if self.made_user:
            subprocess.run([sbin("userdel"), self.user], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


def cpu_seconds():
    """CPU time the whole machine has spent busy since boot (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def measured(command, lab):
    """(wall seconds, (machine CPU seconds, hosts' CPU seconds), csdeploy's
    JSON report or None)."""
    before = cpu_seconds(), lab.hosts_cpu_seconds()
    elapsed, doc = command()
    return elapsed, (cpu_seconds() - before[0], lab.hosts_cpu_seconds() - before[1]), doc


def profiled(command, out_dir, name):
    """Runs command under `perf record -a`; returns [(process name, CPU ms)]."""
    data = os.path.join(out_dir, "perf-%s.data" % name)
    perf = subprocess.Popen(["perf", "record", "-q", "-a", "-e", "task-clock", "-F", "2000", "-o", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # perf is recording once its buffers are mapped
    command()
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
    """Wall time, output and peak RSS (KiB) of one command."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    elapsed = time.monotonic() - start
    # communicate() reaped it; RUSAGE_CHILDREN's maxrss is the largest child so far.
    return elapsed, proc.returncode, out, err


def peak_rss_kib(argv, env=None):
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.execvpe(argv[0], argv, env or os.environ)
    _, status, usage = os.wait4(pid, 0)
    return usage.ru_maxrss


def parallel_ssh(lab, n, command, what):
    """Wall time of `command` run on n hosts at once with plain ssh."""
    start = time.monotonic()
    procs = [subprocess.Popen(["ssh", "-F", lab.ssh_config, "-p", str(lab.port(i)), "%s@127.0.0.1" % lab.user,
                               command(i)], stdin=subprocess.DEVNULL) for i in range(n)]
    codes = [p.wait() for p in procs]
    elapsed = time.monotonic() - start
    if any(codes):
        sys.exit("%s: ssh failed: %s (see %s/sshd.log)" % (what, codes, lab.dir))
    return elapsed, None


def floor(lab, n):
    return parallel_ssh(lab, n, lambda i: "true", "floor")


def skeleton(lab, n, launcher="launcher"):
    """bench/skeleton on every host: the processes a verification starts, each
    doing nothing (see skeleton/verifier.py)."""
    # The interpreter as csdeploy's agent finds it: the platform python first.
    verifier = 'for p in /usr/bin/python3 python3; do command -v "$p" >/dev/null && exec "$p" -I -S %s %s; done' % (
        shlex.quote(os.path.join(lab.skeleton, "verifier.py")), launcher)
    return parallel_ssh(lab, n, lambda i: "env HOME=%s /bin/sh -c %s" % (
        shlex.quote(lab.home(i)), shlex.quote(verifier)), "skeleton")


EXTRA_ARGS = []


def csdeploy(binary, lab, inventory, *args):
    argv = [binary] + list(args) + EXTRA_ARGS + ["-i", inventory, "--ssh-config", lab.ssh_config, "--format", "json"]
    env = dict(os.environ, CI="1")
    elapsed, code, out, err = timed(argv, env)
    if code != 0:
        sys.exit("%s failed (%d): %s" % (" ".join(args), code, err.decode()[-2000:]))
    return elapsed, json.loads(out)


def ansible(lab, inventory):
    argv = ["ansible-playbook", "-i", inventory, os.path.join(ROOT, "bench", "ansible-push.yml")]
    # Ansible at its best: its own connection reuse, pipelining, 50 forks.
    env = dict(os.environ, ANSIBLE_FORKS="50", ANSIBLE_PIPELINING="True",
               ANSIBLE_SSH_ARGS="-F %s -o ControlMaster=auto -o ControlPersist=60s" % lab.ssh_config)
    elapsed, code, out, err = timed(argv, env)
    if code != 0:
        sys.exit("ansible failed: %s" % out.decode()[-2000:])
    return elapsed, None


def pyinfra(lab, inventory, n):
    inv = os.path.join(lab.dir, "pyinfra_inventory_%d.py" % n)
    with open(inv, "w") as f:
        f.write("hosts = [\n")
        for i in range(n):
            f.write("    ('host%d', {'ssh_hostname': '127.0.0.1', 'ssh_port': %d, 'ssh_user': %r, 'ssh_key': %r,"
                    " 'ssh_known_hosts_file': %r, 'home': %r}),\n"
                    % (i, lab.port(i), lab.user, lab.dir + "/id", lab.dir + "/known_hosts", lab.home(i)))
        f.write("]\n")
    argv = ["pyinfra", "-y", "--parallel", "50", inv, os.path.join(ROOT, "bench", "pyinfra_deploy.py")]
    elapsed, code, out, err = timed(argv)
    if code != 0:
        sys.exit("pyinfra failed: %s" % (out + err).decode()[-2000:])
    return elapsed, None


def median_phases(documents):
    phases = {}
    for doc in documents:
        for host in doc["hosts"]:
            for key, value in host.get("phases", {}).items():
                phases.setdefault(key, []).append(value)
    return {k: statistics.median(v) for k, v in phases.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", default="1,10,50")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kex", help="KexAlgorithms for both the floor and csdeploy (e.g. curve25519-sha256)")
    parser.add_argument("--other-runs", type=int, default=1,
                        help="runs of ansible-playbook and pyinfra (slow), after their warm-up")
    parser.add_argument("--csdeploy-args", default="", help="extra csdeploy flags, e.g. '--ssh-mux process'")
    parser.add_argument("--user", help="log in as this user (default: yours; as root, a throwaway user)")
    parser.add_argument("--one-sshd", action="store_true",
                        help="one sshd for all simulated hosts instead of one per host, each in its own PID namespace")
    parser.add_argument("--csdeploy", default=os.path.join(ROOT, "target", "release", "csdeploy"))
    parser.add_argument("--profile", action="store_true",
                        help="one more run of each command under `perf record -a`: CPU by process name")
    args = parser.parse_args()
    if args.profile and not shutil.which("perf"):
        sys.exit("--profile needs Linux perf (Debian: apt-get install linux-perf)")
    if not os.access(args.csdeploy, os.X_OK):
        sys.exit("%s not found: run `cargo build --release` first" % args.csdeploy)
    sizes = [int(n) for n in args.hosts.split(",")]
    EXTRA_ARGS.extend(args.csdeploy_args.split())
    lab = Lab(max(sizes), args.kex, args.user, isolate=not args.one_sshd)
    extra = [name for name in ("ansible-playbook", "pyinfra") if shutil.which(name)]
    print("csdeploy benchmark: %d runs each (4× at 1 host) after a warm-up, %s on 127.0.0.1 as %s, kex %s, %d cores%s"
          % (args.runs, "one sshd per host, each in its own PID namespace" if lab.isolated
             else "one sshd for all hosts (no PID namespaces: --one-sshd, not root, or not allowed here)",
             lab.user, args.kex or "OpenSSH default", os.cpu_count(),
             "" if extra else "; ansible-playbook and pyinfra not installed"))
    results = []
    try:
        for n in sizes:
            inventory = lab.inventory(n)
            commands = [
                ("floor", lambda: floor(lab, n)),
                ("push-first", lambda: (lab.wipe(n), csdeploy(args.csdeploy, lab, inventory, "push"))[1]),
                ("push-rerun", lambda: csdeploy(args.csdeploy, lab, inventory, "push")),
                ("verify", lambda: csdeploy(args.csdeploy, lab, inventory, "verify")),
                ("skeleton", lambda: skeleton(lab, n)),
                ("skeleton-no-helper", lambda: skeleton(lab, n, "launcher-without-helper")),
            ]
            if "ansible-playbook" in extra:
                commands.append(("ansible", lambda: (lab.wipe(n), ansible(lab, inventory))[1]))
            if "pyinfra" in extra:
                commands.append(("pyinfra", lambda: (lab.wipe(n), pyinfra(lab, inventory, n))[1]))
            times = {name: [] for name, _ in commands}
            cpu = {name: [] for name, _ in commands}
            docs = {name: [] for name, _ in commands}
            others = ("ansible", "pyinfra")
            # One host takes ~0.3 s a command, where one scheduling hiccup of
            # this shared machine is a tenth of it: four times the runs there.
            runs = args.runs * 4 if n == 1 else args.runs
            for run in range(runs + 1):
                for name, command in commands:
                    if name in others and run > args.other_runs:
                        continue
                    elapsed, busy, doc = measured(command, lab)
                    if run > 0:
                        times[name].append(elapsed)
                        cpu[name].append(busy)
                        if doc:
                            docs[name].append(doc)
            profiles = {}
            if args.profile:
                for name, command in commands:
                    if name not in others:
                        profiles[name] = profiled(command, lab.dir, "%s-%d" % (name, n))
            rerun_cmds = {d["hosts"][0]["remote_commands"] for d in docs["push-rerun"]}
            lab.wipe(n)
            env = dict(os.environ, CI="1")
            base = [args.csdeploy, "push", "-i", inventory, "--ssh-config", lab.ssh_config, "--format", "json"]
            rss_first = peak_rss_kib(base, env)
            rss_rerun = peak_rss_kib(base, env)
            med = {name: statistics.median(v) for name, v in times.items()}
            med_cpu = {name: tuple(statistics.median(x[k] for x in v) for k in (0, 1)) for name, v in cpu.items() if v}
            results.append((n, med, {k: median_phases(v) for k, v in docs.items()}, max(rss_first, rss_rerun),
                            rerun_cmds, med_cpu, profiles))
    finally:
        lab.close()

    print()
    names = list(results[0][1].keys())
    print("| hosts | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for n, med, *_ in results:
        cells = []
        for name in names:
            ratio = med[name] / med["floor"]
            cells.append("%.3f s" % med[name] + ("" if name == "floor" else " (%.2f×)" % ratio))
        print("| %d | %s |" % (n, " | ".join(cells)))
    print()
    print("Median CPU time per command (s), and per host beyond the floor (ms): of the whole machine, and of")
    print("the hosts alone (sshd and everything it started; on a real fleet that runs on the hosts' own cores):")
    for n, _, _, _, _, med_cpu, _ in results:
        for k, where in ((0, "machine"), (1, "hosts")):
            base = med_cpu["floor"][k]
            print("  %3d hosts %-8s" % (n, where) + "  ".join(
                "%s %.2f" % (name, v[k]) + ("" if name == "floor" else " (%+.0f)" % ((v[k] - base) * 1000 / n))
                for name, v in med_cpu.items()))
    print()
    print("Median per host phase (ms): connect = SSH handshake and ControlMaster start")
    for n, _, phases, rss, rerun_cmds, _, _ in results:
        for name in ("push-first", "push-rerun", "verify"):
            p = phases.get(name, {})
            print("  %3d hosts %-10s connect %5.0f  gather %5.0f  apply %5.0f" % (
                n, name, p.get("connect_ms", 0), p.get("gather_ms", 0), p.get("apply_ms", 0)))
        print("  %3d hosts csdeploy peak RSS %.1f MB; push rerun remote commands per host %s" % (
            n, rss / 1024, sorted(rerun_cmds)))
    for n, _, _, _, _, _, profiles in results:
        for name, rows in profiles.items():
            total = sum(ms for _, ms in rows)
            top = ", ".join("%s %.0f" % (comm, ms) for comm, ms in rows[:10])
            print("  %3d hosts %-10s CPU %.0f ms by process: %s" % (n, name, total, top))
    print()
    failures = []
    for n, med, _, rss, *_ in results:
        f = med["floor"]
        if n == 50:
            targets = [("push rerun <= 1.15x floor", med["push-rerun"] <= 1.15 * f),
                       ("push first <= 1.30x floor", med["push-first"] <= 1.30 * f),
                       ("verify <= floor + 1.5 s", med["verify"] <= f + 1.5),
                       ("peak RSS <= 30 MB", rss <= 30 * 1024)]
        elif n == 1:
            targets = [("push first <= floor + 60 ms", med["push-first"] <= f + 0.060),
                       ("push rerun <= floor + 60 ms", med["push-rerun"] <= f + 0.060)]
        else:
            targets = []
        if n == 50:
            print("verify at %d hosts: floor + %.2f s, of which the skeleton (processes doing nothing) takes %.2f s,"
                  " %.2f s of it the sessions' registry helpers" % (n, med["verify"] - f, med["skeleton"] - f,
                                                                      med["skeleton"] - med["skeleton-no-helper"]))
        for label, ok in targets:
            print("target %-32s at %2d hosts: %s" % (label, n, "met" if ok else "MISSED"))
            if not ok:
                failures.append(label)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
