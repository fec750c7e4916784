//! Test lab: throw-away sshd servers on 127.0.0.1, simulated hosts (one HOME
//! directory each), an inventory, a client ssh_config, and a runner for the
//! csdeploy binary.
//!
//! ```ignore
//! let lab = Lab::new().hosts(2).local(true).build();
//! let out = lab.csdeploy(&["push", "--format", "json"]).assert_exit(0);
//! let json = out.json();
//! assert_eq!(host(&json, "host1")["status"], "changed");
//! ```
//!
//! Nothing here touches the real `~/.claude` or `~/.ssh`: every HOME (remote
//! hosts, the local host and the csdeploy controller process) lives inside the
//! lab's temp dir, and ssh is always driven by the lab's own `ssh_config`
//! (`-F`), known_hosts and client key.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SSHD: &str = "/usr/sbin/sshd";
/// Upper bound for a single csdeploy invocation before the test gives up.
pub const CSDEPLOY_TIMEOUT: Duration = Duration::from_secs(60);

/// Repository root (where Cargo.toml lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `playbooks/files/<name>` of the repository: the reference content push installs.
pub fn playbook_file(name: &str) -> PathBuf {
    repo_root().join("playbooks/files").join(name)
}

/// The user tests log in as (the current user).
pub fn current_user() -> String {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        let out = Command::new("id").arg("-un").output().expect("run id -un");
        assert!(out.status.success(), "id -un failed");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
    .clone()
}

/// Uid of the test process.
pub fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .expect("stat /proc/self")
        .uid()
}

/// Permission bits (e.g. 0o755) of a path, panicking with the path when missing.
pub fn mode_of(path: &Path) -> u32 {
    let md =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    md.permissions().mode() & 0o7777
}

/// Quote a string as a YAML (JSON-compatible) double-quoted scalar.
pub fn yq(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A unique token for marker files etc.
pub fn unique(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}-{}-{n}-{nanos}", std::process::id())
}

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn keygen(path: &Path, comment: &str) -> String {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
    );
    let pubkey = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    // "ssh-ed25519 AAAA... comment" -> keep type and key.
    pubkey
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A port on 127.0.0.1 where nothing listens (bound once, then released).
pub fn closed_port() -> u16 {
    free_port()
}

fn sshd_supports_per_source_penalties() -> bool {
    // OpenSSH >= 9.8 penalises misbehaving sources; harmless to disable in the
    // lab, but older versions reject the keyword.
    static V: OnceLock<bool> = OnceLock::new();
    *V.get_or_init(|| {
        let out = Command::new(SSHD).arg("-V").output();
        let text = match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(_) => return false,
        };
        let Some(rest) = text.split("OpenSSH_").nth(1) else {
            return false;
        };
        let ver: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut it = ver.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (maj, min) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        (maj, min) >= (9, 8)
    })
}

/// One running `sshd -D -e` listening on 127.0.0.1:port.
pub struct Sshd {
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl Sshd {
    fn start(dir: &Path, idx: usize, host_key: &Path, authorized_keys: &Path) -> Sshd {
        if current_uid() == 0 {
            // Privilege separation directory, needed when sshd runs as root.
            let _ = std::fs::create_dir_all("/run/sshd");
            let _ = std::fs::set_permissions("/run/sshd", std::fs::Permissions::from_mode(0o755));
        }
        let mut last_err = String::new();
        for _attempt in 0..10 {
            let port = free_port();
            let config = dir.join(format!("sshd_config.{idx}"));
            let log = dir.join(format!("sshd.{idx}.log"));
            let mut cfg = String::new();
            writeln!(cfg, "Port {port}").unwrap();
            writeln!(cfg, "ListenAddress 127.0.0.1").unwrap();
            writeln!(cfg, "HostKey {}", host_key.display()).unwrap();
            writeln!(cfg, "AuthorizedKeysFile {}", authorized_keys.display()).unwrap();
            for line in [
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "UsePAM no",
                "StrictModes no",
                "PidFile none",
                "MaxStartups 200",
                "MaxSessions 30",
                "PermitRootLogin prohibit-password",
                "LogLevel ERROR",
                "UseDNS no",
                "PrintMotd no",
                "X11Forwarding no",
            ] {
                writeln!(cfg, "{line}").unwrap();
            }
            for sftp in [
                "/usr/lib/openssh/sftp-server",
                "/usr/libexec/sftp-server",
                "/usr/lib/ssh/sftp-server",
            ] {
                if Path::new(sftp).exists() {
                    writeln!(cfg, "Subsystem sftp {sftp}").unwrap();
                    break;
                }
            }
            if sshd_supports_per_source_penalties() {
                writeln!(cfg, "PerSourcePenalties no").unwrap();
            }
            std::fs::write(&config, cfg).unwrap();
            let logf = std::fs::File::create(&log).unwrap();
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(logf))
                .spawn()
                .expect("spawn sshd");
            match wait_for_ssh_banner(&mut child, port) {
                Ok(()) => {
                    return Sshd {
                        port,
                        config,
                        log,
                        child,
                    };
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = format!(
                        "{e}; sshd log: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        panic!("could not start sshd: {last_err}");
    }

    /// The listening sshd's pid: its children are the connections it serves.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// sshd's stderr so far (LogLevel ERROR).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `port` answers with an SSH banner from our child (or the child dies).
fn wait_for_ssh_banner(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("sshd exited early: {st}"));
        }
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut buf = [0u8; 8];
            if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-2.0-" {
                // Somebody else might have grabbed the port in the race; make
                // sure our sshd is still alive.
                if child.try_wait().map_err(|e| e.to_string())?.is_none() {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("sshd on port {port} did not come up"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One simulated host of the inventory.
#[derive(Clone, Debug)]
pub struct HostInfo {
    pub name: String,
    /// `None` for `ansible_connection: local`.
    pub port: Option<u16>,
    /// HOME exported on the target (via the inventory `environment`).
    pub home: PathBuf,
    pub reachable: bool,
}

pub struct LabBuilder {
    hosts: usize,
    servers: usize,
    local: bool,
    unreachable: Vec<String>,
    known_hosts: bool,
    host_vars: Vec<(String, String, String)>,
}

impl Lab {
    /// Start describing a lab; see [`LabBuilder`].
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> LabBuilder {
        LabBuilder {
            hosts: 0,
            servers: 1,
            local: false,
            unreachable: Vec::new(),
            known_hosts: true,
            host_vars: Vec::new(),
        }
    }
}

impl LabBuilder {
    /// Number of ssh hosts `host1..hostN` (all 127.0.0.1, each its own HOME).
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }
    /// Number of separate sshd servers; hostN runs on server (N-1) % servers.
    pub fn servers(mut self, n: usize) -> Self {
        assert!(n >= 1);
        self.servers = n;
        self
    }
    /// Add `local: {ansible_connection: local, environment: {HOME: <lab>/homes/local}}`.
    pub fn local(mut self, yes: bool) -> Self {
        self.local = yes;
        self
    }
    /// Add an ssh host pointing at a closed port of 127.0.0.1.
    pub fn unreachable(mut self, name: &str) -> Self {
        self.unreachable.push(name.to_string());
        self
    }
    /// Whether known_hosts holds the servers' host keys (default true); false
    /// leaves known_hosts empty.
    pub fn known_hosts(mut self, yes: bool) -> Self {
        self.known_hosts = yes;
        self
    }

    /// Extra inventory variable for one host; `yaml_value` is written verbatim
    /// (use [`yq`] for strings).
    pub fn host_var(mut self, host: &str, key: &str, yaml_value: &str) -> Self {
        self.host_vars
            .push((host.to_string(), key.to_string(), yaml_value.to_string()));
        self
    }

    pub fn build(self) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("csdeploy-lab-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let ctl_home = root.join("controller-home");
        std::fs::create_dir_all(&ctl_home).unwrap();
        let host_key = root.join("ssh_host_ed25519_key");
        let client_key = root.join("client_key");
        let authorized_keys = root.join("authorized_keys");
        let known_hosts = root.join("known_hosts");
        let ssh_config = root.join("ssh_config");
        let inventory = root.join("inventory.yml");

        let needs_sshd = self.hosts > 0;
        let mut host_pub = String::new();
        let mut servers = Vec::new();
        if needs_sshd {
            host_pub = keygen(&host_key, "csdeploy-lab-host");
            let client_pub = keygen(&client_key, "csdeploy-lab-client");
            std::fs::write(&authorized_keys, format!("{client_pub}\n")).unwrap();
            for i in 0..self.servers.min(self.hosts) {
                servers.push(Sshd::start(&root, i, &host_key, &authorized_keys));
            }
        }

        let mut kh = String::new();
        if self.known_hosts {
            for s in &servers {
                writeln!(kh, "[127.0.0.1]:{} {}", s.port, host_pub).unwrap();
            }
        }
        std::fs::write(&known_hosts, kh).unwrap();

        let cfg = format!(
            "Host *\n  UserKnownHostsFile \"{}\"\n  GlobalKnownHostsFile /dev/null\n  IdentityFile \"{}\"\n  IdentitiesOnly yes\n  BatchMode yes\n  ConnectTimeout 10\n",
            known_hosts.display(),
            client_key.display()
        );
        std::fs::write(&ssh_config, cfg).unwrap();

        let mut hosts = Vec::new();
        for i in 1..=self.hosts {
            let name = format!("host{i}");
            let home = root.join("homes").join(&name);
            std::fs::create_dir_all(&home).unwrap();
            let port = servers[(i - 1) % servers.len()].port;
            hosts.push(HostInfo {
                name,
                port: Some(port),
                home,
                reachable: true,
            });
        }
        for name in &self.unreachable {
            let home = root.join("homes").join(name);
            std::fs::create_dir_all(&home).unwrap();
            hosts.push(HostInfo {
                name: name.clone(),
                port: Some(closed_port()),
                home,
                reachable: false,
            });
        }
        if self.local {
            let home = root.join("homes").join("local");
            std::fs::create_dir_all(&home).unwrap();
            hosts.push(HostInfo {
                name: "local".into(),
                port: None,
                home,
                reachable: true,
            });
        }

        let lab = Lab {
            dir,
            root,
            ctl_home,
            servers,
            hosts,
            host_vars: self.host_vars,
            inventory,
            ssh_config,
            known_hosts,
            client_key,
        };
        lab.write_inventory(&lab.default_inventory());
        lab
    }
}

pub struct Lab {
    dir: tempfile::TempDir,
    pub root: PathBuf,
    /// HOME of the csdeploy process itself.
    pub ctl_home: PathBuf,
    pub servers: Vec<Sshd>,
    pub hosts: Vec<HostInfo>,
    /// (host, key, yaml value) added to that host's inventory entry.
    pub host_vars: Vec<(String, String, String)>,
    pub inventory: PathBuf,
    pub ssh_config: PathBuf,
    pub known_hosts: PathBuf,
    pub client_key: PathBuf,
}

impl Lab {
    pub fn host_info(&self, name: &str) -> &HostInfo {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in lab"))
    }
    /// HOME of a simulated host.
    pub fn home(&self, name: &str) -> PathBuf {
        self.host_info(name).home.clone()
    }
    /// Default claude_home of a simulated host: `<HOME>/.claude`.
    pub fn claude_home(&self, name: &str) -> PathBuf {
        self.home(name).join(".claude")
    }
    pub fn port(&self, name: &str) -> u16 {
        self.host_info(name).port.expect("local host has no port")
    }
    /// Names of the reachable ssh hosts.
    pub fn ssh_hosts(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|h| h.port.is_some() && h.reachable)
            .map(|h| h.name.clone())
            .collect()
    }

    /// YAML of one host entry (indented for `all.hosts`), e.g. to build custom inventories.
    pub fn host_entry_yaml(&self, h: &HostInfo, indent: usize) -> String {
        let pad = " ".repeat(indent);
        let mut s = String::new();
        writeln!(s, "{pad}{}:", h.name).unwrap();
        match h.port {
            Some(port) => {
                writeln!(s, "{pad}  ansible_host: 127.0.0.1").unwrap();
                writeln!(s, "{pad}  ansible_port: {port}").unwrap();
                writeln!(s, "{pad}  ansible_user: {}", yq(&current_user())).unwrap();
            }
            None => writeln!(s, "{pad}  ansible_connection: local").unwrap(),
        }
        writeln!(s, "{pad}  environment:").unwrap();
        writeln!(s, "{pad}    HOME: {}", yq(&h.home.display().to_string())).unwrap();
        for (host, key, value) in &self.host_vars {
            if *host == h.name {
                writeln!(s, "{pad}  {key}: {value}").unwrap();
            }
        }
        s
    }

    /// The inventory the lab writes by default: every host under `all.hosts`.
    pub fn default_inventory(&self) -> String {
        let mut s = String::from("all:\n  hosts:\n");
        for h in &self.hosts {
            s.push_str(&self.host_entry_yaml(h, 4));
        }
        s
    }

    /// Replace the lab's inventory file.
    pub fn write_inventory(&self, text: &str) {
        std::fs::write(&self.inventory, text).unwrap();
    }

    /// Write a file (e.g. a playbook) under the lab dir; returns its absolute path.
    pub fn write_file(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `args`, then `-i <inventory> --ssh-config <ssh_config>`.
    fn with_lab_files(&self, args: &[&str]) -> Vec<String> {
        let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        full.push("-i".into());
        full.push(self.inventory.display().to_string());
        // `inventory` reads no ssh config: it never connects.
        if args.first() != Some(&"inventory") {
            full.push("--ssh-config".into());
            full.push(self.ssh_config.display().to_string());
        }
        full
    }

    /// A directory of links to every command of /usr/local/bin, /usr/bin and
    /// /bin except those `excluded` names: a PATH on which they cannot be
    /// found, whatever the machine has installed.
    pub fn path_without(&self, what: &str, excluded: impl Fn(&str) -> bool) -> PathBuf {
        let farm = self.root.join(format!("path-without-{what}"));
        std::fs::create_dir_all(&farm).unwrap();
        for dir in ["/usr/local/bin", "/usr/bin", "/bin"] {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name();
                if excluded(&name.to_string_lossy()) {
                    continue;
                }
                let link = farm.join(&name);
                if !link.exists() {
                    let _ = std::os::unix::fs::symlink(e.path(), &link);
                }
            }
        }
        farm
    }

    /// Run csdeploy with `args`, then `-i <inventory>` and (for the commands
    /// that connect) `--ssh-config <ssh_config>`.
    pub fn csdeploy(&self, args: &[&str]) -> Out {
        self.csdeploy_raw(&self.with_lab_files(args))
    }

    /// Like `csdeploy`, with `env` added; `meanwhile` gets csdeploy's pid, in
    /// a thread of its own, while csdeploy runs (to signal it, say).
    pub fn csdeploy_meanwhile(
        &self,
        args: &[&str],
        env: &[(&str, &Path)],
        meanwhile: impl FnOnce(u32) + Send + 'static,
    ) -> Out {
        let args = self.with_lab_files(args);
        let mut cmd = self.command(&args);
        cmd.envs(env.iter().copied());
        run_with_timeout(cmd, args, CSDEPLOY_TIMEOUT, Some(Box::new(meanwhile)))
    }

    /// Run csdeploy with exactly `args` (lab environment, nothing appended).
    pub fn csdeploy_raw<S: AsRef<str>>(&self, args: &[S]) -> Out {
        self.csdeploy_via(&[], args)
    }

    /// Like `csdeploy_raw`, started through the command `wrapper` (its
    /// arguments, then csdeploy's path and `args`), e.g. `sh -c '...; exec "$@"' sh`.
    pub fn csdeploy_via<S: AsRef<str>>(&self, wrapper: &[&str], args: &[S]) -> Out {
        let args: Vec<String> = args.iter().map(|s| s.as_ref().to_string()).collect();
        run_with_timeout(
            self.command_via(wrapper, &args),
            args,
            CSDEPLOY_TIMEOUT,
            None,
        )
    }

    fn command(&self, args: &[String]) -> Command {
        self.command_via(&[], args)
    }

    fn command_via(&self, wrapper: &[&str], args: &[String]) -> Command {
        let bin = env!("CARGO_BIN_EXE_csdeploy");
        let mut cmd = match wrapper.split_first() {
            None => Command::new(bin),
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(bin);
                cmd
            }
        };
        cmd.args(args)
            .current_dir(&self.root)
            .env("CI", "1")
            .env("HOME", &self.ctl_home)
            .env("NO_COLOR", "1")
            .env_remove("CSDEPLOY_INVENTORY")
            .env_remove("CSDEPLOY_SSH_CONFIG")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null());
        cmd
    }

    /// Plain `ssh` to a lab host with the lab's client config (harness self-check).
    pub fn ssh(&self, host: &str, remote_cmd: &str) -> std::process::Output {
        let h = self.host_info(host);
        Command::new("ssh")
            .arg("-F")
            .arg(&self.ssh_config)
            .args(["-o", "StrictHostKeyChecking=yes", "-p"])
            .arg(h.port.expect("ssh host").to_string())
            .arg(format!("{}@127.0.0.1", current_user()))
            .arg(remote_cmd)
            .env("HOME", &self.ctl_home)
            .stdin(Stdio::null())
            .output()
            .expect("spawn ssh")
    }

    /// Overwrite known_hosts so every server is listed with a *different*
    /// (freshly generated) key: a host key mismatch.
    pub fn spoof_known_hosts(&self) {
        let other = self.root.join(unique("other_host_key"));
        let other_pub = keygen(&other, "not-the-real-host-key");
        let mut kh = String::new();
        for s in &self.servers {
            writeln!(kh, "[127.0.0.1]:{} {}", s.port, other_pub).unwrap();
        }
        std::fs::write(&self.known_hosts, kh).unwrap();
    }

    /// Concatenated sshd logs (for failure messages).
    pub fn sshd_logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| s.log_text())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

type Meanwhile = Box<dyn FnOnce(u32) + Send>;

fn run_with_timeout(
    mut cmd: Command,
    args: Vec<String>,
    timeout: Duration,
    meanwhile: Option<Meanwhile>,
) -> Out {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn csdeploy (is the binary built?)");
    if let Some(meanwhile) = meanwhile {
        let pid = child.id();
        std::thread::spawn(move || meanwhile(pid));
    }
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    // A leftover grandchild (e.g. an ssh master) may hold the pipes open; do
    // not wait forever for EOF.
    let stdout = join_with_deadline(t_out, Duration::from_secs(5));
    let stderr = join_with_deadline(t_err, Duration::from_secs(5));
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let out = Out {
        args,
        code,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed,
    };
    if timed_out {
        panic!("csdeploy timed out after {timeout:?}\n{out}");
    }
    out
}

fn join_with_deadline(h: std::thread::JoinHandle<Vec<u8>>, d: Duration) -> Vec<u8> {
    let start = Instant::now();
    while !h.is_finished() {
        if start.elapsed() > d {
            return b"<output pipe still held open by a leftover process>".to_vec();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    h.join().unwrap()
}

/// Result of one csdeploy invocation.
pub struct Out {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "csdeploy {:?}\nexit code: {} ({:?})\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.args, self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

impl Out {
    #[track_caller]
    pub fn assert_exit(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{self}");
        self
    }

    /// Parse stdout as exactly one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        match serde_json::from_str(&self.stdout) {
            Ok(v) => v,
            Err(e) => panic!("stdout is not exactly one JSON document: {e}\n{self}"),
        }
    }

    /// stdout + stderr.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// The `hosts[]` entry of a JSON report for host `name`.
#[track_caller]
pub fn host<'a>(json: &'a Value, name: &str) -> &'a Value {
    let Some(hosts) = json["hosts"].as_array() else {
        panic!("report has no hosts array:\n{json:#}")
    };
    match hosts.iter().find(|h| h["host"] == name) {
        Some(h) => h,
        None => panic!("host {name} missing from report:\n{json:#}"),
    }
}

/// Tasks of a host entry.
#[track_caller]
pub fn tasks(host: &Value) -> &Vec<Value> {
    match host["tasks"].as_array() {
        Some(t) => t,
        None => panic!("host has no tasks array:\n{host:#}"),
    }
}

/// The task named `name` in a host entry.
#[track_caller]
pub fn task<'a>(host: &'a Value, name: &str) -> &'a Value {
    match tasks(host).iter().find(|t| t["name"] == name) {
        Some(t) => t,
        None => panic!("task {name:?} missing:\n{host:#}"),
    }
}

/// Integer field as u64, with a readable failure.
#[track_caller]
pub fn num(v: &Value, key: &str) -> u64 {
    match v[key].as_u64() {
        Some(n) => n,
        None => panic!("{key} is not an unsigned integer in:\n{v:#}"),
    }
}

#[test]
fn harness_plain_ssh_reaches_both_servers() {
    let lab = Lab::new()
        .hosts(2)
        .servers(2)
        .local(true)
        .unreachable("dead")
        .build();
    assert_eq!(lab.servers.len(), 2);
    assert_ne!(lab.port("host1"), lab.port("host2"));
    for h in ["host1", "host2"] {
        let out = lab.ssh(h, "echo hello-$USER");
        assert!(
            out.status.success(),
            "plain ssh to {h} failed: {}\nsshd: {}",
            String::from_utf8_lossy(&out.stderr),
            lab.sshd_logs()
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("hello-{}", current_user())
        );
    }
    let inv = std::fs::read_to_string(&lab.inventory).unwrap();
    assert!(inv.contains("ansible_connection: local"), "{inv}");
    assert!(inv.contains("dead:"), "{inv}");
    assert!(TcpStream::connect(("127.0.0.1", lab.port("dead"))).is_err());
}

#[test]
fn harness_empty_known_hosts_is_rejected_by_plain_ssh() {
    let lab = Lab::new().hosts(1).known_hosts(false).build();
    let out = lab.ssh("host1", "true");
    assert!(
        !out.status.success(),
        "ssh with empty known_hosts should fail under strict checking"
    );
}

/// Diagnostic, not part of the suite: where a lab's time goes
/// (`cargo nextest run --test it harness_timing_probe --run-ignored only --no-capture`).
#[test]
#[ignore]
fn harness_timing_probe() {
    let t = Instant::now();
    let lab = Lab::new().hosts(1).local(true).build();
    eprintln!("build: {:?}", t.elapsed());
    for _ in 0..3 {
        let t = Instant::now();
        let o = lab.ssh("host1", "true");
        eprintln!("ssh: {:?} {}", t.elapsed(), o.status);
    }
    for _ in 0..3 {
        let o = lab.csdeploy(&["push", "--format", "json"]);
        let phases = serde_json::from_str::<Value>(&o.stdout)
            .map(|j| j["hosts"][0]["phases"].to_string())
            .unwrap_or_default();
        eprintln!("push: {:?} rc={} host phases: {phases}", o.elapsed, o.code);
    }
    let o = lab.csdeploy(&["push", "--host", "local", "--format", "json"]);
    eprintln!("push local: {:?} rc={}", o.elapsed, o.code);
}
