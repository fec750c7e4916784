//! The `local` connection: the same commands, as child processes, no SSH.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::{Counter, Output, RemoteCommand, TransportError};

#[derive(Default)]
pub struct LocalTransport {
    pub counter: Counter,
}

impl LocalTransport {
    pub async fn exec(
        &self,
        command: &RemoteCommand,
        stdin: Vec<u8>,
    ) -> Result<Output, TransportError> {
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
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let feed = async move {
            // A child that exits early closes its stdin; what it said matters more.
            let _ = pipe.write_all(&stdin).await;
            drop(pipe);
        };
        let (_, output) = tokio::join!(feed, child.wait_with_output());
        let output = output.map_err(|err| TransportError::Exec(format!("{program}: {err}")))?;
        Ok(Output {
            code: output.status.code(),
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }
}
