//! How commands reach a host: over one multiplexed SSH connection, or as
//! local processes for `ansible_connection: local`. Both take the same
//! [`RemoteCommand`], so the engine never knows which it is talking to.
//! A container (`lxc`, `pct`) or another user (`become`) is a prefix put
//! before every command's argv by either transport (`wrap`), proven by the
//! marker its last layer writes, which the exchange reads first.

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

/// The most of a command's stdout csdeploy reads: gather's old contents
/// under --diff (up to 1 MiB a file), apply's replies (64 KiB of output a
/// command) and a verification's checks fit many times over. More is a host
/// gone wrong, and reading all of it from many hosts could exhaust the
/// controller.
pub const STDOUT_LIMIT: usize = 64 << 20;
/// The longest the way in (lxc-attach, pct, sudo, su) may take to write
/// its marker: what it needs on a machine loaded many times over
/// (measured: over 30 s at a load of 160 on 2 cores), short of waiting
/// out `--timeout` on a container that never answers; the host is then
/// unreachable, not failed.
const ENTRY_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The most of a command's stderr kept; the rest is read and dropped.
pub const STDERR_LIMIT: usize = 1 << 20;

type Writer<'a> = std::pin::Pin<Box<dyn AsyncWrite + Send + 'a>>;
type Reader<'a> = std::pin::Pin<Box<dyn AsyncRead + Send + 'a>>;

/// A running command, spoken with over its stdin and stdout while its
/// stderr is collected aside. One exchange is one remote command.
pub struct Exchange<'a> {
    stdin: Option<Writer<'a>>,
    stdout: Reader<'a>,
    /// Read from stdout, not yet taken.
    buffer: Vec<u8>,
    read: usize,
    eof: bool,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
    /// Taken when a failed entry waited for the command's exit.
    child: Option<Child<'a>>,
    /// The way in whose marker ([`wrap::ENTERED`]) is still to be read:
    /// nothing is sent, nothing returned, before it.
    entry: Option<&'a wrap::Wrap>,
    /// Why the host could not be entered, once it is known.
    refused: Option<String>,
}

pub(crate) enum Child<'a> {
    Local(tokio::process::Child),
    Ssh {
        child: openssh::Child<&'a openssh::Session>,
        session: &'a openssh::Session,
        _channel: tokio::sync::SemaphorePermit<'a>,
    },
}

impl<'a> Exchange<'a> {
    pub(crate) fn new(
        stdin: impl AsyncWrite + Send + 'a,
        stdout: impl AsyncRead + Send + 'a,
        mut stderr: impl AsyncRead + Unpin + Send + 'static,
        child: Child<'a>,
    ) -> Exchange<'a> {
        let stderr = tokio::spawn(async move {
            let mut kept = Vec::new();
            let _ = (&mut stderr)
                .take(STDERR_LIMIT as u64)
                .read_to_end(&mut kept)
                .await;
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            kept
        });
        Exchange {
            stdin: Some(Box::pin(stdin)),
            stdout: Box::pin(stdout),
            buffer: Vec::new(),
            read: 0,
            eof: false,
            stderr,
            child: Some(child),
            entry: None,
            refused: None,
        }
    }

    /// This exchange's command runs behind `wrap` (if any), whose marker
    /// must come first on stdout.
    pub(crate) fn entering(mut self, wrap: Option<&'a wrap::Wrap>) -> Exchange<'a> {
        self.entry = wrap;
        self
    }

    /// Reads the entry marker, if one is due. If stdout ends first, a layer
    /// of the way in failed: the command's exit and stderr say which, and
    /// the host could not be entered.
    async fn enter(&mut self) -> Result<(), TransportError> {
        if let Some(why) = &self.refused {
            return Err(TransportError::NotEntered(why.clone()));
        }
        let Some(wrap) = self.entry else {
            return Ok(());
        };
        self.entry = None;
        match tokio::time::timeout(ENTRY_LIMIT, self.take_until(wrap::ENTERED)).await {
            Ok(Ok(Some(_))) => return Ok(()),
            Ok(Ok(None)) => {}
            Ok(Err(err)) => return Err(err),
            Err(_) => {
                let why = format!(
                    "entering the host took more than {} s (lxc-attach, pct, sudo or su did \
                     not answer): is the container frozen, the node overloaded, or su run by \
                     a login other than root, waiting for a password csdeploy never types?",
                    ENTRY_LIMIT.as_secs()
                );
                self.refused = Some(why.clone());
                return Err(TransportError::NotEntered(why));
            }
        }
        self.close().await;
        let stderr = std::mem::replace(&mut self.stderr, tokio::spawn(async { Vec::new() }));
        let code = match self.child.take() {
            Some(child) => wait(child).await?,
            None => None,
        };
        let why = wrap.explain(code, &stderr.await.unwrap_or_default());
        self.refused = Some(why.clone());
        Err(TransportError::NotEntered(why))
    }

    /// Writes to the command's stdin, reading its stdout meanwhile (a
    /// command may answer before it reads all, or never read). A command
    /// that exited early closed its stdin; what it said (read next) matters
    /// more than the broken pipe.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.enter().await?;
        let Some(stdin) = &mut self.stdin else {
            return Ok(());
        };
        let mut written = 0;
        while written < bytes.len() {
            tokio::select! {
                n = stdin.write(&bytes[written..]) => match n {
                    Ok(n) if n > 0 => written += n,
                    _ => {
                        self.stdin = None;
                        return Ok(());
                    }
                },
                more = fill(&mut self.stdout, &mut self.buffer, &mut self.read), if !self.eof => {
                    self.eof = !more?;
                }
            }
        }
        if stdin.flush().await.is_err() {
            self.stdin = None;
        }
        Ok(())
    }

    /// Closes the command's stdin: EOF ends it.
    pub async fn close(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.shutdown().await;
        }
    }

    /// Reads more of stdout; false at its end.
    async fn fill(&mut self) -> Result<bool, TransportError> {
        if self.eof {
            return Ok(false);
        }
        let more = fill(&mut self.stdout, &mut self.buffer, &mut self.read).await?;
        self.eof = !more;
        Ok(more)
    }

    /// Stdout up to `delimiter` (which is consumed, not returned); None if
    /// stdout ends first.
    pub async fn read_until(
        &mut self,
        delimiter: &[u8],
    ) -> Result<Option<Vec<u8>>, TransportError> {
        self.enter().await?;
        self.take_until(delimiter).await
    }

    async fn take_until(&mut self, delimiter: &[u8]) -> Result<Option<Vec<u8>>, TransportError> {
        let mut searched = 0;
        loop {
            if let Some(at) = self.buffer[searched..]
                .windows(delimiter.len())
                .position(|w| w == delimiter)
            {
                let at = searched + at;
                let rest = self.buffer.split_off(at + delimiter.len());
                let mut taken = std::mem::replace(&mut self.buffer, rest);
                taken.truncate(at);
                return Ok(Some(taken));
            }
            searched = self.buffer.len().saturating_sub(delimiter.len());
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// The next `size` bytes of stdout; None if it ends first.
    pub async fn read_exact(&mut self, size: usize) -> Result<Option<Vec<u8>>, TransportError> {
        self.enter().await?;
        while self.buffer.len() < size {
            if !self.fill().await? {
                return Ok(None);
            }
        }
        let rest = self.buffer.split_off(size);
        Ok(Some(std::mem::replace(&mut self.buffer, rest)))
    }

    /// Ends an exchange whose answer is complete: closes stdin and, over
    /// ssh, lets the command end on its own instead of waiting the round
    /// trip its exit status takes to come back (the one round trip a rerun
    /// would otherwise cost beyond ssh's own). A local command is waited
    /// for, which costs nothing: its output then.
    pub async fn release(mut self) -> Result<Option<Output>, TransportError> {
        self.close().await;
        match self.child {
            Some(Child::Ssh { .. }) => Ok(None),
            _ => self.finish().await.map(Some),
        }
    }

    /// Ends the exchange: closes stdin, reads (and drops) what stdout still
    /// holds, and waits for the command's exit.
    pub async fn finish(mut self) -> Result<Output, TransportError> {
        self.enter().await?;
        self.close().await;
        while self.fill().await? {
            self.buffer.clear();
        }
        let stderr = std::mem::replace(&mut self.stderr, tokio::spawn(async { Vec::new() }));
        let child = self
            .child
            .take()
            .ok_or_else(|| TransportError::Exec("the command was already waited for".into()))?;
        let code = wait(child).await?;
        Ok(Output {
            code,
            stderr: stderr.await.unwrap_or_default(),
        })
    }
}

/// Waits for `child`'s exit: its code, None when killed by a signal.
async fn wait(child: Child<'_>) -> Result<Option<i32>, TransportError> {
    match child {
        Child::Local(mut child) => Ok(child
            .wait()
            .await
            .map_err(|err| TransportError::Exec(err.to_string()))?
            .code()),
        Child::Ssh { child, session, .. } => match child.wait().await {
            Ok(status) => Ok(status.code()),
            // The mux protocol cannot tell a dropped connection from a
            // killed remote process; the master can.
            Err(err @ (openssh::Error::RemoteProcessTerminated | openssh::Error::Disconnected)) => {
                Err(match session.check().await {
                    Err(lost) => TransportError::Lost(ssh::chain(&lost)),
                    Ok(()) => {
                        TransportError::Exec(format!("{}: killed by a signal?", ssh::chain(&err)))
                    }
                })
            }
            Err(err) => Err(TransportError::Exec(ssh::chain(&err))),
        },
    }
}

/// Reads more of `stdout` into `buffer`, `read` counting it against
/// [`STDOUT_LIMIT`]; false at its end. A pipe that fails just ends: the
/// command's exit then says why.
async fn fill(
    stdout: &mut Reader<'_>,
    buffer: &mut Vec<u8>,
    read: &mut usize,
) -> Result<bool, TransportError> {
    buffer.reserve(64 << 10);
    let n = stdout.read_buf(buffer).await.unwrap_or(0);
    *read += n;
    if *read > STDOUT_LIMIT {
        return Err(TransportError::Exec(format!(
            "the host sent more than {} MiB on stdout; a csdeploy step never does",
            STDOUT_LIMIT >> 20
        )));
    }
    Ok(n > 0)
}

#[derive(Debug, Clone)]
pub struct Output {
    /// None when the process was killed by a signal.
    pub code: Option<i32>,
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
    /// A layer of the way in (`lxc-attach`, `pct`, sudo, su) failed before
    /// the command ran: the host cannot be reached, and this says why.
    #[error("{0}")]
    NotEntered(String),
}

pub enum Transport {
    Ssh(ssh::SshTransport),
    Local(local::LocalTransport),
}

impl Transport {
    pub async fn connect(host: &Host, options: &SshOptions) -> Result<Transport, TransportError> {
        let mut transport = match &host.connection {
            Connection::Local | Connection::Lxc { .. } => {
                Transport::Local(local::LocalTransport::default())
            }
            Connection::Ssh(target) => {
                Transport::Ssh(ssh::SshTransport::connect(target, options).await?)
            }
            Connection::Pct { node, .. } => Transport::Ssh(pool::connect(node, options).await?),
        };
        let wrap = wrap::Wrap::for_host(host);
        match &mut transport {
            Transport::Ssh(t) => t.wrap = wrap,
            Transport::Local(t) => t.wrap = wrap,
        }
        Ok(transport)
    }

    /// Starts `command`, to be spoken with; one spawn is one remote command.
    pub async fn spawn(&self, command: &RemoteCommand) -> Result<Exchange<'_>, TransportError> {
        match self {
            Transport::Ssh(t) => t.spawn(command).await,
            Transport::Local(t) => t.spawn(command),
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

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn cat() -> RemoteCommand {
        RemoteCommand {
            env: Vec::new(),
            argv: vec!["cat".into()],
        }
    }

    /// Behind a way in, the marker is read first and never shown; the
    /// command then speaks as it would alone, at one command.
    #[test]
    fn an_entered_command_speaks_after_the_marker_at_one_command() {
        let transport = local::LocalTransport {
            wrap: Some(wrap::Wrap::with_prefix(&[
                "/bin/sh",
                "-c",
                wrap::ENTER_SCRIPT,
            ])),
            ..Default::default()
        };
        run(async {
            let mut exchange = transport.spawn(&cat()).unwrap();
            exchange.send(b"hello\n").await.unwrap();
            assert_eq!(exchange.read_until(b"\n").await.unwrap().unwrap(), b"hello");
            assert_eq!(exchange.finish().await.unwrap().code, Some(0));
        });
        assert_eq!(transport.counter.load(Ordering::Relaxed), 1);
    }

    /// A layer that fails before the marker: not entered, explained, and
    /// nothing sent to it (the agent is no password for su); every later
    /// call says the same.
    #[test]
    fn a_chain_that_ends_before_the_marker_is_not_entered() {
        // Whatever reaches its stdin in its second of life shows on stderr.
        let failing =
            r#"echo "lxc-attach: web: Failed to get init pid" >&2; timeout 1 cat >&2; exit 1"#;
        let transport = local::LocalTransport {
            wrap: Some(wrap::Wrap::with_prefix(&["/bin/sh", "-c", failing, "sh"])),
            ..Default::default()
        };
        run(async {
            let mut exchange = transport.spawn(&cat()).unwrap();
            let err = exchange.send(b"secret\n").await.unwrap_err();
            let TransportError::NotEntered(why) = err else {
                panic!("{err:?}");
            };
            assert!(
                why.contains("lxc-start -n web") && why.contains("Failed to get init pid"),
                "{why}"
            );
            assert!(!why.contains("secret"), "{why}");
            assert!(matches!(
                exchange.read_until(b"\n").await,
                Err(TransportError::NotEntered(again)) if again == why
            ));
            assert!(matches!(
                exchange.finish().await,
                Err(TransportError::NotEntered(_))
            ));
        });
    }

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
