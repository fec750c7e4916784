//! Real LXC containers for the tests, and a Proxmox-like node to reach
//! them through.
//!
//! A [`Container`] is a system container started with Debian's `lxc`
//! tools from a rootfs built here, without any network or download: the
//! machine's `/usr` bind-mounted read-only (Debian merges `/bin`, `/sbin`,
//! `/lib` and `/lib64` into it, so python3, bash and coreutils are there),
//! its own `/etc` with a root and session users, each with a home, and no
//! network device (`lxc.net.0.type = empty`). It is named by a numeric id,
//! as Proxmox VE names its containers, so that `pct exec ID` and
//! `lxc-attach -n ID` both reach it. Dropping it stops and removes it, also
//! when a test fails; one left by a killed test run is swept by the next.
//!
//! A [`Node`] is a second sshd on loopback, sharing the [`Lab`]'s keys and
//! known_hosts, whose sessions find a `pct` shim first on PATH: it accepts
//! Proxmox's own argument form (`pct exec VMID -- COMMAND...`) and runs
//! what the real `pct exec` runs, `lxc-attach -n VMID -- COMMAND...`.
//!
//! Where containers cannot run (not root, no `lxc-start`, a kernel that
//! refuses), [`Container::start`] says why and the tests skip, unless
//! `CSDEPLOY_IT_CONTAINERS=required` (set by scripts/test as root), where
//! that is a failure.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Lab, SSHD, current_uid};

const LXC_PATH: &str = "/var/lib/lxc";
/// Marks a container directory as one of these tests', with the test
/// process's pid, so that a later run can remove it once that pid is gone.
const MARKER: &str = "csdeploy-test-pid";

/// A session user inside the container.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub uid: u32,
}

pub struct Container {
    /// The container's name: a Proxmox-style numeric id.
    pub name: String,
    pub dir: PathBuf,
    pub users: Vec<User>,
}

/// Why containers cannot run here, or `None` where they can (checked once
/// per test with the real tools, not guessed).
fn unable() -> Option<String> {
    if current_uid() != 0 {
        return Some("LXC system containers need root; these tests run as another user".into());
    }
    for tool in ["lxc-start", "lxc-attach", "lxc-stop", "lxc-wait"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "`{tool}` is not installed (Debian: apt install lxc; scripts/test does)"
            ));
        }
    }
    None
}

/// Says why the calling test skips (it then returns), unless these tests
/// are required here (`CSDEPLOY_IT_CONTAINERS=required`): then it fails.
pub fn skip(why: &str) {
    if std::env::var("CSDEPLOY_IT_CONTAINERS").as_deref() == Ok("required") {
        panic!("required here (CSDEPLOY_IT_CONTAINERS=required), but: {why}");
    }
    eprintln!("skipped: {why}");
}

fn skip_or_fail(why: String) -> Option<Container> {
    skip(&format!("this machine cannot run LXC containers: {why}"));
    None
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Removes containers left by test runs that were killed before their
/// guards could.
fn sweep_leftovers() {
    let Ok(entries) = std::fs::read_dir(LXC_PATH) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = std::fs::read_to_string(entry.path().join(MARKER)) else {
            continue;
        };
        if !Path::new("/proc").join(pid.trim()).exists() {
            remove(&entry.file_name().to_string_lossy(), &entry.path());
        }
    }
}

fn remove(name: &str, dir: &Path) {
    let _ = Command::new("lxc-stop")
        .args(["-n", name, "-k"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    // /usr is bind-mounted inside the container's own mount namespace
    // only; never remove through a rootfs where it shows.
    let usr = dir.join("rootfs/usr");
    let empty = std::fs::read_dir(&usr).map_or(true, |mut d| d.next().is_none());
    if empty {
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl Container {
    /// Builds and starts a container with the session users `users`
    /// (uids from 1500), or says why it cannot (see [`skip_or_fail`]).
    pub fn start(users: &[&str]) -> Option<Container> {
        if let Some(why) = unable() {
            return skip_or_fail(why);
        }
        sweep_leftovers();
        let container = match Container::create(users) {
            Ok(c) => c,
            Err(why) => return skip_or_fail(why),
        };
        match container.boot() {
            Ok(()) => Some(container),
            Err(why) => skip_or_fail(why),
        }
    }

    /// Builds a container without starting it (a stopped container).
    pub fn create(users: &[&str]) -> Result<Container, String> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let (name, dir) = loop {
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = 800_000_000 + (std::process::id() % 100_000) * 1000 + n % 1000;
            let dir = Path::new(LXC_PATH).join(id.to_string());
            match std::fs::create_dir_all(Path::new(LXC_PATH))
                .and_then(|()| std::fs::create_dir(&dir))
            {
                Ok(()) => break (id.to_string(), dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
            }
        };
        std::fs::write(dir.join(MARKER), std::process::id().to_string())
            .map_err(|e| e.to_string())?;
        let users: Vec<User> = users
            .iter()
            .enumerate()
            .map(|(i, u)| User {
                name: u.to_string(),
                uid: 1500 + i as u32,
            })
            .collect();
        let container = Container { name, dir, users };
        container
            .build_rootfs()
            .map_err(|e| format!("building the rootfs: {e}"))?;
        Ok(container)
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// A session user's home, as seen from this machine.
    pub fn home(&self, user: &str) -> PathBuf {
        self.rootfs().join("home").join(user)
    }

    pub fn uid(&self, user: &str) -> u32 {
        self.users
            .iter()
            .find(|u| u.name == user)
            .unwrap_or_else(|| panic!("no user {user} in the container"))
            .uid
    }

    fn build_rootfs(&self) -> std::io::Result<()> {
        let root = self.rootfs();
        for d in [
            "usr", "etc", "tmp", "var/tmp", "proc", "sys", "dev", "run", "root", "home",
        ] {
            std::fs::create_dir_all(root.join(d))?;
        }
        for d in ["tmp", "var/tmp"] {
            std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o1777))?;
        }
        // As on any system: the session users may not enter root's home.
        std::fs::set_permissions(root.join("root"), std::fs::Permissions::from_mode(0o700))?;
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            std::os::unix::fs::symlink(target, root.join(link))?;
        }
        let (mut passwd, mut group, mut shadow) = (
            String::from("root:x:0:0:root:/root:/bin/sh\n"),
            String::from("root:x:0:\n"),
            String::from("root:*:19000:0:99999:7:::\n"),
        );
        for u in &self.users {
            let home = root.join("home").join(&u.name);
            std::fs::create_dir(&home)?;
            std::os::unix::fs::chown(&home, Some(u.uid), Some(u.uid))?;
            writeln!(passwd, "{0}:x:{1}:{1}::/home/{0}:/bin/sh", u.name, u.uid).unwrap();
            writeln!(group, "{}:x:{}:", u.name, u.uid).unwrap();
            writeln!(shadow, "{}:!:19000:0:99999:7:::", u.name).unwrap();
        }
        let etc = root.join("etc");
        std::fs::write(etc.join("passwd"), passwd)?;
        std::fs::write(etc.join("group"), group)?;
        std::fs::write(etc.join("shadow"), shadow)?;
        std::fs::set_permissions(etc.join("shadow"), std::fs::Permissions::from_mode(0o640))?;
        // su's PAM stack and what it reads, as the machine has them.
        for (from, optional) in [
            ("/etc/pam.d", false),
            ("/etc/security", true),
            ("/etc/nsswitch.conf", true),
            ("/etc/login.defs", true),
            ("/etc/environment", true),
        ] {
            if Path::new(from).exists() {
                run(Command::new("cp").args(["-a", from]).arg(&etc))
                    .map_err(std::io::Error::other)?;
            } else if !optional {
                return Err(std::io::Error::other(format!("{from} is missing")));
            }
        }
        let config = format!(
            "lxc.uts.name = {name}\n\
             lxc.rootfs.path = dir:{rootfs}\n\
             lxc.net.0.type = empty\n\
             lxc.mount.entry = /usr usr none bind,ro 0 0\n\
             lxc.mount.auto = proc:mixed sys:ro\n\
             lxc.autodev = 1\n\
             lxc.pty.max = 64\n\
             lxc.apparmor.profile = unconfined\n\
             lxc.init.cmd = /usr/bin/sleep infinity\n",
            name = self.name,
            rootfs = root.display(),
        );
        std::fs::write(self.dir.join("config"), config)
    }

    fn boot(&self) -> Result<(), String> {
        let log = self.dir.join("start.log");
        let started = run(Command::new("lxc-start")
            .args(["-n", &self.name, "-l", "INFO", "-o"])
            .arg(&log))
        .and_then(|_| {
            run(Command::new("lxc-wait").args(["-n", &self.name, "-s", "RUNNING", "-t", "20"]))
        });
        started.map(|_| ()).map_err(|e| {
            format!(
                "{e}\nlxc-start log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    }

    /// Stops the container (it stays, stopped).
    pub fn stop(&self) {
        run(Command::new("lxc-stop").args(["-n", &self.name, "-k"])).unwrap();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        remove(&self.name, &self.dir);
    }
}

/// A Proxmox-like node: an sshd on loopback reached with the lab's keys,
/// whose sessions have `pct` (a shim, see the module docs) on PATH, or,
/// `with_pct(false)`, only what the machine has (no pct: csdeploy falls
/// back to `lxc-attach`).
pub struct Node {
    pub port: u16,
    /// The shim's record of every `pct` call: its first three arguments.
    pub pct_log: PathBuf,
    pub sshd_log: PathBuf,
    child: Child,
}

const PCT_SHIM: &str = r#"#!/bin/sh
# A stand-in for Proxmox VE's pct in the tests: only `pct exec VMID --
# COMMAND...`, run as the real one runs it (`lxc-attach -n VMID --
# COMMAND...`, after checking that the container is configured here).
log=${0%/*}/pct.log
printf '%s %s %s\n' "$1" "$2" "$3" >>"$log"
[ "$1" = exec ] || { echo "pct shim: only exec is supported" >&2; exit 255; }
vmid=$2
[ "$3" = -- ] || { echo "400 too many arguments" >&2; exit 255; }
shift 3
[ $# -gt 0 ] || { echo "missing command" >&2; exit 255; }
[ -f "/var/lib/lxc/$vmid/config" ] || {
  echo "Configuration file 'nodes/pve/lxc/$vmid.conf' does not exist" >&2; exit 2; }
exec lxc-attach -n "$vmid" -- "$@"
"#;

impl Node {
    pub fn start(lab: &Lab, with_pct: bool) -> Node {
        let dir = lab.root.join(crate::harness::unique("node"));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let pct_log = bin.join("pct.log");
        if with_pct {
            let shim = bin.join("pct");
            std::fs::write(&shim, PCT_SHIM).unwrap();
            std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let host_key = lab.root.join("ssh_host_ed25519_key");
        let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        let sshd_log = dir.join("sshd.log");
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = dir.join("sshd_config");
            let mut cfg = String::new();
            writeln!(cfg, "Port {port}\nListenAddress 127.0.0.1").unwrap();
            writeln!(cfg, "HostKey {}", host_key.display()).unwrap();
            writeln!(
                cfg,
                "AuthorizedKeysFile {}",
                lab.root.join("authorized_keys").display()
            )
            .unwrap();
            writeln!(
                cfg,
                "SetEnv PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                bin.display()
            )
            .unwrap();
            // INFO: one "Accepted publickey" line per connection.
            for line in [
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PidFile none",
                "MaxSessions 30",
                "PermitRootLogin prohibit-password",
                "LogLevel INFO",
                "UseDNS no",
                "PrintMotd no",
            ] {
                writeln!(cfg, "{line}").unwrap();
            }
            std::fs::write(&config, cfg).unwrap();
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&sshd_log).unwrap())
                .spawn()
                .expect("spawn sshd");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut up = false;
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if up {
                let mut known = std::fs::read_to_string(&lab.known_hosts).unwrap();
                writeln!(known, "[127.0.0.1]:{port} {}", host_pub.join(" ")).unwrap();
                std::fs::write(&lab.known_hosts, known).unwrap();
                return Node {
                    port,
                    pct_log,
                    sshd_log,
                    child,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "the node's sshd did not start: {}",
            std::fs::read_to_string(&sshd_log).unwrap_or_default()
        );
    }

    /// How many ssh connections the node accepted.
    pub fn logins(&self) -> usize {
        std::fs::read_to_string(&self.sshd_log)
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }

    /// The `pct` shim's path (the node's sessions find it on PATH).
    pub fn shim(&self) -> PathBuf {
        self.pct_log.with_file_name("pct")
    }

    pub fn pct_calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.pct_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
