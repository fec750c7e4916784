//! How commands reach a host: over one multiplexed SSH connection, or as
//! local processes for `ansible_connection: local`. Both take the same
//! [`RemoteCommand`], so the engine never knows which it is talking to.
//! A container (`lxc`, `pct`) or another user (`become`) is a prefix put
//! before every command's argv by either transport (`wrap`).

pub mod local;
pub mod pool;
pub mod ssh;
pub mod wrap;

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::host::{Connection, Host};

/// A command to run on a host: environment assignments plus argv. It becomes
/// a shell line only inside the SSH transport, with every word quoted.
#[derive(Debug, Clone)]
pub struct RemoteCommand {
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
}

impl RemoteCommand {
    /// The line a remote login shell runs: `env 'K=V' ... argv...`, quoted.
    pub fn shell_line(&self) -> Result<String, crate::quote::NulByte> {
        let assignments: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut words: Vec<&str> = Vec::new();
        if !assignments.is_empty() {
            words.push("env");
            words.extend(assignments.iter().map(String::as_str));
        }
        words.extend(self.argv.iter().map(String::as_str));
        crate::quote::join(words)
    }

    /// This command behind `prefix` (`lxc-attach -n NAME --`, `sudo -n -H
    /// -u USER --`, ...): the environment then travels as `env K=V` words
    /// after the prefix, since the programs of a prefix do not pass theirs on.
    pub fn wrapped(&self, prefix: &[String]) -> Cow<'_, RemoteCommand> {
        if prefix.is_empty() {
            return Cow::Borrowed(self);
        }
        let mut argv = prefix.to_vec();
        if !self.env.is_empty() {
            argv.push("env".into());
            argv.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        }
        argv.extend(self.argv.iter().cloned());
        Cow::Owned(RemoteCommand {
            env: Vec::new(),
            argv,
        })
    }
}

/// The most of a step's stdout csdeploy reads: gather's old contents under
/// --diff (up to 1 MiB a file), apply's replies (64 KiB of output a command)
/// and a verification's checks fit many times over. More is a host gone
/// wrong, and reading all of it from many hosts could exhaust the controller.
pub const STDOUT_LIMIT: usize = 64 << 20;
/// The most of a step's stderr kept; the rest is read and dropped.
pub const STDERR_LIMIT: usize = 1 << 20;

/// Reads a command's stdin feed, stdout and stderr together. Stdout past
/// [`STDOUT_LIMIT`] is an error; stderr past [`STDERR_LIMIT`] is cut. A pipe
/// that fails just ends: waiting for the process then says why.
pub async fn exchange(
    mut stdin: impl AsyncWrite + Unpin,
    input: Vec<u8>,
    stdout: impl AsyncRead + Unpin,
    stderr: impl AsyncRead + Unpin,
) -> Result<(Vec<u8>, Vec<u8>), TransportError> {
    let feed = async move {
        // A command that exits early closes its stdin; what it said matters more.
        let _ = stdin.write_all(&input).await;
        let _ = stdin.shutdown().await;
    };
    let read_out = async move {
        let mut out = Vec::new();
        let _ = stdout
            .take(STDOUT_LIMIT as u64 + 1)
            .read_to_end(&mut out)
            .await;
        out
    };
    let read_err = async move {
        let mut stderr = stderr;
        let mut kept = Vec::new();
        let _ = (&mut stderr)
            .take(STDERR_LIMIT as u64)
            .read_to_end(&mut kept)
            .await;
        let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
        kept
    };
    let ((), out, err) = tokio::join!(feed, read_out, read_err);
    if out.len() > STDOUT_LIMIT {
        return Err(TransportError::Exec(format!(
            "the host sent more than {} MiB on stdout; a csdeploy step never does",
            STDOUT_LIMIT >> 20
        )));
    }
    Ok((out, err))
}

#[derive(Debug, Clone)]
pub struct Output {
    /// None when the process was killed by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyChecking {
    #[default]
    Strict,
    AcceptNew,
}

/// Settings shared by every SSH connection of a run.
#[derive(Debug, Clone)]
pub struct SshOptions {
    pub host_key_checking: HostKeyChecking,
    /// Passed to ssh as `-F`.
    pub config_file: Option<std::path::PathBuf>,
    /// Where control sockets live: short, private, removed when the run ends.
    pub control_dir: std::path::PathBuf,
    /// Speak the mux protocol natively (default), or run `ssh -S` per command.
    pub native_mux: bool,
    pub connect_timeout: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Exec(String),
    /// The connection dropped while a command ran.
    #[error("{0}")]
    Lost(String),
}

pub enum Transport {
    Ssh(ssh::SshTransport),
    Local(local::LocalTransport),
}

impl Transport {
    pub async fn connect(host: &Host, options: &SshOptions) -> Result<Transport, TransportError> {
        let transport = match &host.connection {
            Connection::Local | Connection::Lxc { .. } => {
                Transport::Local(local::LocalTransport::default())
            }
            Connection::Ssh(target) => {
                Transport::Ssh(ssh::SshTransport::connect(target, options).await?)
            }
            Connection::Pct { node, .. } => Transport::Ssh(pool::connect(node, options).await?),
        };
        wrap::settle(transport, host, options).await
    }

    pub async fn exec(
        &self,
        command: &RemoteCommand,
        stdin: Vec<u8>,
    ) -> Result<Output, TransportError> {
        match self {
            Transport::Ssh(t) => t.exec(command, stdin).await,
            Transport::Local(t) => t.exec(command, stdin).await,
        }
    }

    /// How many commands this transport has run on its host.
    pub fn commands_run(&self) -> usize {
        match self {
            Transport::Ssh(t) => t.counter.load(Ordering::Relaxed),
            Transport::Local(t) => t.counter.load(Ordering::Relaxed),
        }
    }

    pub async fn close(self) -> Result<(), TransportError> {
        match self {
            Transport::Ssh(t) => t.close().await,
            Transport::Local(_) => Ok(()),
        }
    }
}

/// Counts commands; shared by both transports.
pub type Counter = AtomicUsize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_line_quotes_every_word() {
        let cmd = RemoteCommand {
            env: vec![("HOME".into(), "/tmp/a b;$(x)".into())],
            argv: vec!["python3".into(), "-c".into(), "print('hi')".into()],
        };
        let line = cmd.shell_line().unwrap();
        assert_eq!(
            shlex::split(&line).unwrap(),
            ["env", "HOME=/tmp/a b;$(x)", "python3", "-c", "print('hi')"]
        );
    }
}
