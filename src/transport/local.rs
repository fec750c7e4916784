//! The `local` connection: the same commands, as child processes, no SSH;
//! and, behind `lxc-attach`, the `lxc` connection (see `wrap`).

use std::process::Stdio;

use super::{Child, Counter, Exchange, RemoteCommand, TransportError};

#[derive(Default)]
pub struct LocalTransport {
    pub counter: Counter,
    /// Put before every command (see `wrap`): `lxc-attach -n NAME --`, sudo.
    pub wrap: Vec<String>,
}

impl LocalTransport {
    pub fn spawn(&self, command: &RemoteCommand) -> Result<Exchange<'_>, TransportError> {
        let command = command.wrapped(&self.wrap);
        self.counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (program, args) = command
            .argv
            .split_first()
            .ok_or_else(|| TransportError::Exec("empty command".into()))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| TransportError::Exec(format!("cannot run {program}: {err}")))?;
        let (stdin, stdout, stderr) = (
            child.stdin.take().expect("stdin is piped"),
            child.stdout.take().expect("stdout is piped"),
            child.stderr.take().expect("stderr is piped"),
        );
        Ok(Exchange::new(stdin, stdout, stderr, Child::Local(child)))
    }
}
