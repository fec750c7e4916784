//! The `local` connection: the same commands, as child processes, no SSH;
//! and, behind `lxc-attach`, the `lxc` connection (see `wrap`).

use std::process::Stdio;

use super::{Counter, Output, RemoteCommand, TransportError};

#[derive(Default)]
pub struct LocalTransport {
    pub counter: Counter,
    /// Put before every command (see `wrap`): `lxc-attach -n NAME --`, sudo.
    pub wrap: Vec<String>,
}

impl LocalTransport {
    pub async fn exec(
        &self,
        command: &RemoteCommand,
        stdin: Vec<u8>,
    ) -> Result<Output, TransportError> {
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
        let (pipe_in, pipe_out, pipe_err) = (
            child.stdin.take().expect("stdin is piped"),
            child.stdout.take().expect("stdout is piped"),
            child.stderr.take().expect("stderr is piped"),
        );
        let (stdout, stderr) = super::exchange(pipe_in, stdin, pipe_out, pipe_err).await?;
        let status = child
            .wait()
            .await
            .map_err(|err| TransportError::Exec(format!("{program}: {err}")))?;
        Ok(Output {
            code: status.code(),
            stdout,
            stderr,
        })
    }
}
