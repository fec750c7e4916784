//! The `local` connection: the same commands, as child processes, no SSH.

use std::process::Stdio;

use super::{Child, Counter, Exchange, RemoteCommand, TransportError};

#[derive(Default)]
pub struct LocalTransport {
    pub counter: Counter,
}

impl LocalTransport {
    pub fn spawn(&self, command: &RemoteCommand) -> Result<Exchange<'_>, TransportError> {
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
