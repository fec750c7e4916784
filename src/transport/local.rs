//! The `local` connection: the same commands, as child processes, no SSH;
//! and, behind `lxc-attach`, the `lxc` connection (see `wrap`).

use std::process::Stdio;

use super::wrap::Wrap;
use super::{Child, Counter, Exchange, RemoteCommand, TransportError};

#[derive(Default)]
pub struct LocalTransport {
    pub counter: Counter,
    /// Put before every command (see `wrap`): `lxc-attach -n NAME --`, sudo
    /// or su.
    pub wrap: Option<Wrap>,
}

impl LocalTransport {
    pub fn spawn(&self, command: &RemoteCommand) -> Result<Exchange<'_>, TransportError> {
        let prefix = self.wrap.as_ref().map_or(&[][..], |w| &w.prefix[..]);
        let command = command.wrapped(prefix);
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
            .map_err(|err| {
                let why = format!("cannot run {program}: {err}");
                match &self.wrap {
                    Some(wrap) => TransportError::NotEntered(wrap.explain_spawn(&why)),
                    None => TransportError::Exec(why),
                }
            })?;
        // A command that could not start did not run.
        self.counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (stdin, stdout, stderr) = (
            child.stdin.take().expect("stdin is piped"),
            child.stdout.take().expect("stdout is piped"),
            child.stderr.take().expect("stderr is piped"),
        );
        Ok(Exchange::new(stdin, stdout, stderr, Child::Local(child)).entering(self.wrap.as_ref()))
    }
}
