//! SSH through the openssh crate: one ControlMaster per host, commands as
//! channels over its mux protocol, spoken natively by default (no ssh
//! process per command; `--ssh-mux process` runs `ssh -S` each, for
//! comparison).
//!
//! The master honours the user's ssh config (or `--ssh-config`), agent and
//! ProxyJump, checks host keys strictly unless told otherwise, and persists
//! for a bounded idle time only, never forever.

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use std::num::NonZeroUsize;
use std::sync::Arc;
use tokio::sync::Semaphore;

use super::{Child, Counter, Exchange, HostKeyChecking, RemoteCommand, SshOptions, TransportError};
use crate::host::SshTarget;

/// sshd's MaxSessions defaults to 10; stay under it.
pub const MAX_CHANNELS: usize = 8;
/// How often the master asks the host whether it is there when it has
/// heard nothing (ssh's ServerAliveInterval; 3 unanswered: ServerAliveCountMax):
/// a link gone silent in the handshake or between steps is given up after
/// 15 s, not left to hang.
const SERVER_ALIVE_SECONDS: u64 = 5;
/// A master left behind by a crash exits after this long idle.
const PERSIST_SECONDS: usize = 60;

pub struct SshTransport {
    /// Shared with the other containers of a Proxmox node (`pool`).
    session: Arc<Session>,
    channels: Arc<Semaphore>,
    pub counter: Counter,
    /// Put before every command (see `wrap`): the node script that runs
    /// `pct exec VMID --`, sudo or su.
    pub wrap: Option<super::wrap::Wrap>,
    lease: Option<super::pool::Lease>,
}

impl SshTransport {
    pub async fn connect(
        target: &SshTarget,
        options: &SshOptions,
    ) -> Result<SshTransport, TransportError> {
        Ok(SshTransport {
            session: Arc::new(Self::open_session(target, options).await?),
            channels: Arc::new(Semaphore::new(MAX_CHANNELS)),
            counter: Counter::default(),
            wrap: None,
            lease: None,
        })
    }

    /// A transport over a node's master that other hosts share.
    pub fn pooled(shared: super::pool::Shared, lease: super::pool::Lease) -> SshTransport {
        SshTransport {
            session: shared.session,
            channels: shared.channels,
            counter: Counter::default(),
            wrap: None,
            lease: Some(lease),
        }
    }

    /// Connects a master to `target`: the user's ssh config, agent and
    /// keys, host keys checked as `options` say.
    pub async fn open_session(
        target: &SshTarget,
        options: &SshOptions,
    ) -> Result<Session, TransportError> {
        let mut builder = SessionBuilder::default();
        builder
            .known_hosts_check(match options.host_key_checking {
                HostKeyChecking::Strict => KnownHosts::Strict,
                HostKeyChecking::AcceptNew => KnownHosts::Add,
            })
            .control_directory(&options.control_dir)
            .control_persist(ControlPersist::IdleFor(
                NonZeroUsize::new(PERSIST_SECONDS).expect("non-zero"),
            ))
            .connect_timeout(options.connect_timeout)
            .server_alive_interval(std::time::Duration::from_secs(SERVER_ALIVE_SECONDS));
        if let Some(port) = target.port {
            builder.port(port);
        }
        if let Some(user) = &target.user {
            builder.user(user.clone());
        }
        if let Some(key) = &target.key_file {
            // ssh's own "Identity file ... not accessible" is only a warning,
            // and the host's "Permission denied (publickey)" would hide it.
            let path = match key.strip_prefix("~/") {
                Some(rest) => {
                    std::path::Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(rest)
                }
                None => std::path::PathBuf::from(key),
            };
            if let Err(err) = std::fs::metadata(&path) {
                return Err(TransportError::Connect(format!(
                    "the key file {key} (ansible_ssh_private_key_file) cannot be read on this machine: {err}. \
                     Point ansible_ssh_private_key_file at the private key, or leave it out to use your ssh \
                     agent and ssh config"
                )));
            }
            builder.keyfile(key);
        }
        // Dropped once connected: the master has read it.
        let mut host_config = None;
        if !target.ssh_options.is_empty() {
            let file = crate::ssh_args::write_host_config(
                &target.host,
                &target.ssh_options,
                options.config_file.as_deref(),
                &options.control_dir,
            )
            .map_err(TransportError::Connect)?;
            builder.config_file(file.path());
            host_config = Some(file);
        } else if let Some(config) = &options.config_file {
            builder.config_file(config);
        }
        let connected = if options.native_mux {
            builder.connect_mux(&target.host).await
        } else {
            builder.connect(&target.host).await
        };
        let session = connected.map_err(|err| {
            TransportError::Connect(explain(target, options.config_file.as_deref(), &err))
        });
        drop(host_config);
        session
    }

    pub async fn spawn(&self, command: &RemoteCommand) -> Result<Exchange<'_>, TransportError> {
        let line = command
            .wrapped(self.wrap.as_ref().map_or(&[][..], |w| &w.prefix[..]))
            .shell_line()
            .map_err(|err| TransportError::Exec(err.to_string()))?;
        let channel = self
            .channels
            .acquire()
            .await
            .expect("semaphore is never closed");
        self.counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut child = self
            .session
            .raw_command(line)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|err| TransportError::Exec(chain(&err)))?;
        let (stdin, stdout, stderr) = (
            child.stdin().take().expect("stdin is piped"),
            child.stdout().take().expect("stdout is piped"),
            child.stderr().take().expect("stderr is piped"),
        );
        let child = Child::Ssh {
            child,
            session: &self.session,
            _channel: channel,
        };
        Ok(Exchange::new(stdin, stdout, stderr, child).entering(self.wrap.as_ref()))
    }

    pub async fn close(self) -> Result<(), TransportError> {
        let shared = super::pool::Shared {
            session: self.session,
            channels: self.channels,
        };
        match self.lease {
            Some(lease) => lease.release(shared).await,
            None => match Arc::try_unwrap(shared.session) {
                Ok(session) => close_session(session).await,
                Err(_) => Ok(()),
            },
        }
    }
}

/// Ends a master csdeploy started.
pub async fn close_session(session: Session) -> Result<(), TransportError> {
    session
        .close()
        .await
        .map_err(|err| TransportError::Exec(chain(&err)))
}

/// Ends every ssh master csdeploy started under `control_dir`: one whose
/// connect was cut short (an interrupt while it was still in its handshake,
/// or before its session was closed) would otherwise live on, authenticated,
/// until ControlPersist runs out. The masters are found by their control
/// socket's path on their command line (`ssh -S <dir>/.../master -M ...`);
/// only our own processes can be read, and only those are signalled.
pub fn end_masters(control_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let needle = control_dir.as_os_str().as_encoded_bytes();
    let me = std::process::id().to_string();
    let pids: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()) && *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let mut args = cmdline.split(|&b| b == 0);
                args.next().is_some_and(|prog| prog.ends_with(b"ssh"))
                    && args.any(|arg| arg.starts_with(needle))
            })
        })
        .collect();
    if !pids.is_empty() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .args(&pids)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The name a run's control directory starts with: `csd<pid>-`, so that a
/// later run can tell whether the run that made it still lives.
pub fn control_dir_prefix() -> String {
    format!("csd{}-", std::process::id())
}

/// Ends the masters, and removes the control directories, of runs killed
/// (`kill -9`, the OOM killer) before they could: a `csd<pid>-…` directory
/// of ours under `parent` whose pid no longer runs. Such a master keeps its
/// authenticated connection, and any remote step still on it, until
/// ControlPersist runs out; such a directory would stay forever.
pub fn sweep_stale_control_dirs(parent: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, _)) = name
            .to_str()
            .and_then(|n| n.strip_prefix("csd"))
            .and_then(|rest| rest.split_once('-'))
        else {
            continue;
        };
        if pid.is_empty()
            || !pid.bytes().all(|b| b.is_ascii_digit())
            || std::path::Path::new("/proc").join(pid).exists()
        {
            continue;
        }
        let path = entry.path();
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() && Some(md.uid()) == me => {
                end_masters(&path);
                let _ = std::fs::remove_dir_all(&path);
            }
            _ => {}
        }
    }
}

pub(super) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(cause_text.trim());
        }
        source = cause.source();
    }
    text
}

/// The connection error, with what to do about it when ssh's own words don't say.
fn explain(target: &SshTarget, config: Option<&std::path::Path>, err: &openssh::Error) -> String {
    let mut text = chain(err);
    if text.ends_with("(os error 2)") {
        // ssh gave up before it opened its log (`-E`), so the error is the
        // missing log's; ssh's own reason is what `ssh -G` says.
        text = ssh_refusal(target, config).unwrap_or(text);
    }
    let host = &target.host;
    if text.contains("HOST IDENTIFICATION HAS CHANGED")
        || text.contains("has changed and you have requested strict checking")
    {
        // Never a how-to-trust hint here: that is what an attacker would want.
        format!(
            "{text}\nhint: the host key of {host} has CHANGED since it was recorded: someone may be in between, \
             or the host was reinstalled. Compare the fingerprint above with the host's real key by another way \
             (its console, its administrator); only then remove the old key with the `ssh-keygen -R` line ssh \
             gives. csdeploy never accepts a changed key, with any option."
        )
    } else if text.contains("Connection to ") && text.contains("timed out")
        || text.contains("not responding")
    {
        format!(
            "{text}\nhint: {host} stopped answering in the middle of ssh's handshake (3 keep-alives, \
             {SERVER_ALIVE_SECONDS} s apart, got no answer): the link went silent (a dropped VPN or \
             route) or the host is too loaded to answer"
        )
    } else if text.contains("Host key verification failed") {
        let port = target.port.map(|p| format!("-p {p} ")).unwrap_or_default();
        format!(
            "{text}\nhint: the host key of {host} is unknown. Check its fingerprint, \
             then add it to your known_hosts file (~/.ssh/known_hosts unless your ssh config's UserKnownHostsFile \
             says otherwise) with `ssh-keyscan {port}{host} >> ~/.ssh/known_hosts`, or run once with \
             `--host-key-checking accept-new` to trust it on first use."
        )
    } else {
        text
    }
}

/// What ssh itself says of `target`'s settings (an invalid user name, a
/// bad config line), asked with `ssh -G`, which connects nowhere.
fn ssh_refusal(target: &SshTarget, config: Option<&std::path::Path>) -> Option<String> {
    let mut ssh = std::process::Command::new("ssh");
    ssh.arg("-G");
    if let Some(config) = config {
        ssh.arg("-F").arg(config);
    }
    if let Some(port) = target.port {
        ssh.arg("-p").arg(port.to_string());
    }
    if let Some(user) = &target.user {
        ssh.arg("-l").arg(user);
    }
    let out = ssh
        .arg("--")
        .arg(&target.host)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    (!out.status.success() && !said.is_empty()).then(|| format!("ssh refused the settings: {said}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_says_why_it_refused_before_it_opened_its_log() {
        let target = SshTarget {
            host: "127.0.0.1".into(),
            port: Some(1),
            user: Some("a'b;c".into()),
            key_file: None,
            ssh_options: Vec::new(),
        };
        let said = ssh_refusal(&target, None).expect("ssh refuses that user name");
        assert!(said.contains("invalid characters"), "{said}");
        let fine = SshTarget {
            user: Some("someone".into()),
            ..target
        };
        assert_eq!(ssh_refusal(&fine, None), None);
    }

    #[test]
    fn only_directories_of_runs_that_are_gone_are_swept() {
        let parent = tempfile::tempdir().unwrap();
        // A pid above any pid_max: that run is gone.
        let gone = parent.path().join("csd999999999-abc123");
        let ours = parent
            .path()
            .join(format!("{}abc123", control_dir_prefix()));
        // Not ours to judge: another naming, a file, no pid.
        let others = ["csdAbC123", "csd-abc", "csd12x-abc", "other999999999-x"];
        std::fs::create_dir(&gone).unwrap();
        std::fs::write(gone.join("master"), "").unwrap();
        std::fs::create_dir(&ours).unwrap();
        for name in others {
            std::fs::create_dir(parent.path().join(name)).unwrap();
        }
        std::fs::write(parent.path().join("csd999999998-file"), "").unwrap();
        sweep_stale_control_dirs(parent.path());
        assert!(!gone.exists(), "a dead run's directory stays");
        assert!(ours.exists(), "a live run's directory went");
        for name in others.iter().chain(&["csd999999998-file"]) {
            assert!(parent.path().join(name).exists(), "{name} went");
        }
    }
}
