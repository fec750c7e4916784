//! Runs host plans: hosts in parallel (at most `forks` at once), each in one
//! remote command (see `protocol`): the shell gathers the state of everything
//! the tasks touch, the controller decides, and only when something must
//! change does the same command start the agent, which applies every change,
//! file contents streamed to it. A failed or unreachable host never stops the
//! others; it only shows in its report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc::UnboundedSender, watch};

use crate::builtin;
use crate::events::{Event, HostReport, Phases, TaskResult, TaskStatus};
use crate::facts::{Facts, GatherReply, Probe};
use crate::modules::{Decision, Run};
use crate::plan::{HostPlan, PlannedTask};
use crate::protocol::{self, ApplyReply, Op};
use crate::transport::{Exchange, Output, RemoteCommand, SshOptions, Transport, TransportError};

#[derive(Debug, Clone)]
pub struct Options {
    pub check: bool,
    pub diff: bool,
    pub forks: usize,
    pub ssh: SshOptions,
    /// The longest one remote step may take; a verification's own waiting
    /// comes on top.
    pub timeout: Duration,
    /// Turns true when the run is interrupted: hosts stop where they are.
    pub interrupted: watch::Receiver<bool>,
}

/// Resolves once the run is interrupted (never, if it cannot be).
async fn interruption(mut interrupted: watch::Receiver<bool>) {
    if interrupted.wait_for(|&yes| yes).await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub type Events = UnboundedSender<Event>;

/// Runs every plan; the reports come back in plan order.
pub async fn run(plans: Vec<HostPlan>, options: Arc<Options>, events: Events) -> Vec<HostReport> {
    let forks = Arc::new(Semaphore::new(options.forks.max(1)));
    let handles: Vec<_> = plans
        .into_iter()
        .map(|plan| {
            let name = plan.host.name.clone();
            let (options, events, forks) = (options.clone(), events.clone(), forks.clone());
            let handle = tokio::spawn(async move {
                let interrupted = interruption(options.interrupted.clone());
                let _slot = tokio::select! {
                    slot = forks.acquire_owned() => slot.expect("semaphore is never closed"),
                    () = interrupted => {
                        let report = HostReport::new(&plan.host.name, Vec::new(), Some(NOT_STARTED.into()), false);
                        let _ = events.send(Event::HostDone(report.clone()));
                        return report;
                    }
                };
                let report = run_host(&plan, &options, &events).await;
                let _ = events.send(Event::HostDone(report.clone()));
                report
            });
            (name, handle)
        })
        .collect();
    let mut reports = Vec::with_capacity(handles.len());
    for (name, handle) in handles {
        // A bug in one host's task must not cost every other host its report.
        let report = handle.await.unwrap_or_else(|err| {
            let report = HostReport::new(&name, Vec::new(), Some(panicked(err)), false);
            let _ = events.send(Event::HostDone(report.clone()));
            report
        });
        reports.push(report);
    }
    reports
}

fn panicked(err: tokio::task::JoinError) -> String {
    let what = err
        .try_into_panic()
        .ok()
        .and_then(|payload| {
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
        })
        .unwrap_or_else(|| "cancelled".into());
    format!("internal error in csdeploy (please report it): {what}")
}

async fn run_host(plan: &HostPlan, options: &Options, events: &Events) -> HostReport {
    let name = plan.host.name.as_str();
    let started = Instant::now();
    let _ = events.send(Event::HostStarted {
        host: name.to_string(),
    });
    let connected = tokio::select! {
        connected = Transport::connect(&plan.host, &options.ssh) => connected.map_err(|e| e.to_string()),
        () = interruption(options.interrupted.clone()) => {
            let mut report = HostReport::new(name, Vec::new(), Some(INTERRUPTED.into()), false);
            report.duration_ms = millis(started);
            return report;
        }
    };
    let transport = match connected {
        Ok(t) => t,
        Err(err) => {
            let mut report = HostReport::new(name, Vec::new(), Some(err), true);
            report.duration_ms = millis(started);
            return report;
        }
    };
    let mut phases = Phases {
        connect_ms: millis(started),
        ..Phases::default()
    };
    let _ = events.send(Event::HostConnected {
        host: name.to_string(),
    });
    // Interrupted, the host's step is dropped; closing the connection below
    // ends its master, and with it the remote command's session.
    let deployed = tokio::select! {
        deployed = deploy(&transport, plan, options, &mut phases, events) => deployed,
        () = interruption(options.interrupted.clone()) => Err(StepError::Failed(INTERRUPTED.into())),
    };
    let (tasks, error, lost) = match deployed {
        Ok(tasks) => (tasks, None, false),
        Err(StepError::Lost(err)) => (Vec::new(), Some(err), true),
        Err(err) => (Vec::new(), Some(String::from(err)), false),
    };
    for task in &tasks {
        let _ = events.send(Event::TaskDone {
            host: name.to_string(),
            task: task.clone(),
        });
    }
    let remote_commands = transport.commands_run();
    let close_error = transport.close().await.err();
    let error = error.or_else(|| close_error.map(|e| format!("closing the connection: {e}")));
    let mut report = HostReport::new(name, tasks, error, lost);
    report.remote_commands = remote_commands;
    report.phases = phases;
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

const INTERRUPTED: &str =
    "interrupted: csdeploy was stopped (SIGINT or SIGTERM) before this host finished";
const NOT_STARTED: &str = "not started: csdeploy was stopped (SIGINT or SIGTERM) first";

/// How much of a failed step's stderr a report keeps.
const STDERR_LIMIT: usize = 4096;

/// Why a remote step gave no reply.
#[derive(Debug)]
enum StepError {
    /// It did not finish in time: trying another way would not either.
    TimedOut(String),
    /// The connection dropped: the host is unreachable now, as for Ansible.
    Lost(String),
    Failed(String),
}

impl From<StepError> for String {
    fn from(err: StepError) -> String {
        match err {
            StepError::TimedOut(msg) | StepError::Lost(msg) | StepError::Failed(msg) => msg,
        }
    }
}

impl From<String> for StepError {
    fn from(msg: String) -> StepError {
        StepError::Failed(msg)
    }
}

fn result(task: &PlannedTask, status: TaskStatus, decision: &Decision) -> TaskResult {
    TaskResult {
        name: task.name.clone(),
        play: task.play.clone(),
        module: task.action.kind(),
        status,
        path: task.action.path().map(str::to_string),
        backup: None,
        diff: decision.diff.clone(),
        msg: decision.msg.clone(),
        rc: None,
        stdout: None,
        stderr: None,
        checks: Vec::new(),
        data: None,
    }
}

/// What a running host shows while one apply command carries out `tasks`.
fn apply_label(tasks: &[&str]) -> String {
    match tasks {
        [] => "applying".into(),
        [one] => (*one).to_string(),
        [first, rest @ ..] => format!("{first} (+{} more)", rest.len()),
    }
}

fn millis(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// A host's one remote command, started when first needed; `step` names
/// what it is doing, for messages.
struct Session<'a> {
    exchange: Exchange<'a>,
    step: &'static str,
    agent: bool,
}

impl<'a> Session<'a> {
    /// Starts gather.sh: with `gather` (a marker and the probes), it gathers
    /// first; either way it then waits for the word to start the agent.
    async fn start(
        transport: &'a Transport,
        plan: &HostPlan,
        gather: Option<(&str, &[Probe])>,
    ) -> Result<Session<'a>, StepError> {
        let (marker, wants, paths) = match gather {
            Some((marker, probes)) => (
                marker.to_string(),
                probes
                    .iter()
                    .map(|p| if p.want.is_some() { 'h' } else { 's' })
                    .collect(),
                probes.iter().map(|p| p.path.clone()).collect(),
            ),
            None => (String::new(), String::new(), Vec::new()),
        };
        // A step that must report even where python3 is missing (doctor)
        // brings its own shell fallback.
        let fallback = plan
            .tasks
            .iter()
            .find_map(|t| t.action.without_python())
            .unwrap_or("");
        let mut argv: Vec<String> = [
            "/bin/sh",
            "-c",
            builtin::GATHER_SH,
            "csdeploy-gather",
            plan.host.python.as_deref().unwrap_or(""),
            fallback,
            &marker,
            &wants,
        ]
        .map(String::from)
        .to_vec();
        argv.extend(paths);
        let command = RemoteCommand {
            env: plan.host.environment.clone(),
            argv,
        };
        let step = if gather.is_some() { "gather" } else { "apply" };
        let exchange = transport
            .spawn(&command)
            .await
            .map_err(|err| lost(err, step))?;
        Ok(Session {
            exchange,
            step,
            agent: false,
        })
    }

    /// The command's exit, as the error it is when a reply was due.
    async fn failed(self) -> StepError {
        let step = self.step;
        let output = match self.exchange.finish().await {
            Ok(output) => output,
            Err(err) => return lost(err, step),
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.trim();
        let stderr = match stderr.char_indices().nth(STDERR_LIMIT) {
            Some((cut, _)) => format!("{} [... cut]", &stderr[..cut]),
            None => stderr.to_string(),
        };
        let status = match output.code {
            Some(0) => "ended without answering".to_string(),
            Some(c) => format!("exited with {c}"),
            None => "was killed".to_string(),
        };
        StepError::Failed(format!("the csdeploy {step} step {status}: {stderr}"))
    }

    async fn line(&mut self) -> Result<Option<Vec<u8>>, StepError> {
        let step = self.step;
        self.exchange
            .read_until(b"\n")
            .await
            .map_err(|err| lost(err, step))
    }

    /// Sends `bytes` to the command.
    async fn send(&mut self, bytes: &[u8]) -> Result<(), StepError> {
        let step = self.step;
        self.exchange.send(bytes).await.map_err(|e| lost(e, step))
    }

    /// Starts the agent, if it is not yet running.
    async fn agent(&mut self) -> Result<(), StepError> {
        if !self.agent {
            let (header, source) = protocol::agent_pieces(builtin::AGENT);
            self.send(&[protocol::START_AGENT, &header].concat())
                .await?;
            self.send(source).await?;
            self.agent = true;
        }
        Ok(())
    }

    /// The agent's gather, with old contents for --diff.
    async fn agent_gather(mut self, probes: &[Probe]) -> Result<(Self, GatherReply), StepError> {
        self.step = "gather";
        self.agent().await?;
        self.send(&protocol::gather_request(probes)).await?;
        let Some(line) = self.line().await? else {
            return Err(self.failed().await);
        };
        let mut reply: GatherReply = protocol::reply(&line)?;
        for path in &mut reply.paths {
            if let Some(size) = path.content_size {
                let step = self.step;
                let content = self
                    .exchange
                    .read_exact(size)
                    .await
                    .map_err(|e| lost(e, step))?;
                match content {
                    Some(content) => path.content = Some(content),
                    None => return Err(self.failed().await),
                }
            }
        }
        Ok((self, reply))
    }

    /// The agent applies `ops`; this is the command's last request.
    async fn apply(mut self, ops: &[Op]) -> Result<ApplyReply, StepError> {
        self.step = "apply";
        self.agent().await?;
        let (header, contents) = protocol::apply_pieces(ops);
        self.send(&header).await?;
        for content in contents {
            self.send(content).await?;
        }
        self.exchange.close().await;
        let Some(line) = self.line().await? else {
            return Err(self.failed().await);
        };
        let reply = protocol::reply(&line)?;
        self.end().await?;
        Ok(reply)
    }

    /// Ends the command: nothing more to ask, its answer complete (the
    /// exit status of a command over ssh is not waited for).
    async fn end(self) -> Result<(), StepError> {
        let step = self.step;
        let Some(output) = self.exchange.release().await.map_err(|e| lost(e, step))? else {
            return Ok(());
        };
        match output.code {
            Some(0) => Ok(()),
            code => Err(StepError::Failed(format!(
                "the csdeploy {step} step {}: {}",
                code.map_or("was killed".to_string(), |c| format!("exited with {c}")),
                String::from_utf8_lossy(&output.stderr).trim()
            ))),
        }
    }
}

fn lost(err: TransportError, step: &str) -> StepError {
    match err {
        TransportError::Lost(why) => StepError::Lost(format!(
            "the connection to the host was lost during the csdeploy {step} step ({why}); what the step \
             had done by then stays done, each file replaced whole or not at all"
        )),
        // The way into a container or to another user failed: the host
        // cannot be reached, and the error says what to do.
        TransportError::NotEntered(why) => StepError::Lost(why),
        other => StepError::Failed(other.to_string()),
    }
}

/// The host's state, as far as the plan's tasks care; no command when they
/// care about none (a verification alone).
async fn gather<'a>(
    transport: &'a Transport,
    plan: &HostPlan,
    want_diff: bool,
) -> Result<(Option<Session<'a>>, Facts), StepError> {
    let probes: Vec<Probe> = plan
        .tasks
        .iter()
        .flat_map(|t| t.action.probes(want_diff))
        .collect();
    if probes.is_empty() {
        return Ok((None, Facts::empty()));
    }
    if want_diff {
        let session = Session::start(transport, plan, None).await?;
        let (session, reply) = session.agent_gather(&probes).await?;
        return Ok((Some(session), Facts::new(&probes, reply)));
    }
    // The shell gather: no interpreter to start, which is most of a rerun's
    // cost. Its marker is new each run, so no path can hold it.
    let marker = format!("csdeploy-gathered-{}", uuid::Uuid::new_v4().simple());
    let mut session = Session::start(transport, plan, Some((&marker, &probes))).await?;
    let end = format!("\0{marker}\n");
    let records = session
        .exchange
        .read_until(end.as_bytes())
        .await
        .map_err(|e| lost(e, "gather"))?;
    let Some(records) = records else {
        return Err(session.failed().await);
    };
    if let Ok(reply) = protocol::parse_sh_gather(&records, &probes) {
        return Ok((Some(session), Facts::new(&probes, reply)));
    }
    // A host without GNU coreutils: the agent gathers, in the same command.
    let (session, reply) = session.agent_gather(&probes).await?;
    Ok((Some(session), Facts::new(&probes, reply)))
}

async fn deploy(
    transport: &Transport,
    plan: &HostPlan,
    options: &Options,
    phases: &mut Phases,
    events: &Events,
) -> Result<Vec<TaskResult>, StepError> {
    // A task may take longer than an ordinary step (a verification waits
    // for its sessions); the bound holds for the whole command.
    let waiting: Duration = plan.tasks.iter().map(|t| t.action.extra_time()).sum();
    let limit = options.timeout + waiting;
    let mut step = "gather";
    let run = exchange(transport, plan, options, phases, events, &mut step);
    match tokio::time::timeout(limit, run).await {
        Ok(done) => done,
        Err(_) if !answers(transport).await => Err(StepError::Lost(format!(
            "the connection to the host was lost during the csdeploy {step} step: the host stopped \
             answering (nothing for {} s, and a no-op command got no answer within {} s); what the \
             step had done by then stays done, each file replaced whole or not at all",
            limit.as_secs(),
            LINK_CHECK.as_secs()
        ))),
        Err(_) => Err(StepError::TimedOut(format!(
            "the csdeploy {step} step did not finish within {} s (--timeout); what it had done by \
             then stays done, each file replaced whole or not at all: a rerun with a longer \
             --timeout completes the rest",
            limit.as_secs()
        ))),
    }
}

/// How long a step that outlived its time waits for the host to answer a
/// no-op command, to tell a slow step from a link gone silent.
const LINK_CHECK: Duration = Duration::from_secs(10);

/// Whether the host still answers: a step that ran out of time on a link
/// that went silent (no FIN, no RST: a dropped VPN) is an unreachable host,
/// as for Ansible, not a slow step. Costs one command, only then.
async fn answers(transport: &Transport) -> bool {
    let noop = RemoteCommand {
        env: Vec::new(),
        argv: vec!["true".into()],
    };
    let check = async {
        let exchange = transport.spawn(&noop).await.ok()?;
        exchange.finish().await.ok()
    };
    matches!(
        tokio::time::timeout(LINK_CHECK, check).await,
        Ok(Some(Output { code: Some(0), .. }))
    )
}

async fn exchange(
    transport: &Transport,
    plan: &HostPlan,
    options: &Options,
    phases: &mut Phases,
    events: &Events,
    step: &mut &'static str,
) -> Result<Vec<TaskResult>, StepError> {
    let started = |task: String| {
        let host = plan.host.name.clone();
        let _ = events.send(Event::TaskStarted { host, task });
    };
    started("gathering facts".into());
    let gathering = Instant::now();
    let (session, mut facts) = gather(transport, plan, options.diff).await?;
    phases.gather_ms = millis(gathering);

    // Decide every task against the host's state as earlier tasks will leave it.
    let mut decided = Vec::new();
    let mut ops = Vec::new();
    for task in &plan.tasks {
        let run = Run {
            diff: options.diff,
            check: options.check,
        };
        let decision = task.action.decide(&mut facts, run);
        if let Some(failure) = &decision.failure {
            let mut failed = result(task, TaskStatus::Failed, &decision);
            failed.msg = Some(failure.clone());
            decided.push((failed, None));
            break;
        }
        let status = match (decision.skipped, decision.changes) {
            (true, _) => TaskStatus::Skipped,
            (false, true) => TaskStatus::Changed,
            (false, false) => TaskStatus::Ok,
        };
        // In check mode only the ops that honour it themselves are sent.
        let op = decision
            .op
            .as_ref()
            .filter(|op| !options.check || op.honours_check_mode());
        let op_index = op.map(|_| ops.len());
        if let Some(op) = op {
            ops.push(op.clone());
        }
        decided.push((result(task, status, &decision), op_index));
    }
    if ops.is_empty() {
        // Nothing to change: the shell ends, no interpreter started.
        if let Some(session) = session {
            session.end().await?;
        }
        return Ok(decided.into_iter().map(|(r, _)| r).collect());
    }
    // The agent carries out every change; the step is named by its tasks.
    let applied: Vec<&str> = decided
        .iter()
        .filter(|(_, op)| op.is_some())
        .map(|(r, _)| r.name.as_str())
        .collect();
    started(apply_label(&applied));
    *step = "apply";
    let applying = Instant::now();
    let session = match session {
        Some(session) => session,
        None => Session::start(transport, plan, None).await?,
    };
    let results = session.apply(&ops).await?.results;
    phases.apply_ms = millis(applying);

    let mut applied = Vec::new();
    for ((mut task, op_index), planned) in decided.into_iter().zip(&plan.tasks) {
        let Some(index) = op_index else {
            applied.push(task);
            continue;
        };
        // Tasks after a failed one never ran, and are not reported.
        let Some(outcome) = results.get(index) else {
            break;
        };
        task.backup = outcome.backup.clone();
        task.rc = outcome.rc;
        task.stdout = outcome.stdout.clone();
        task.stderr = outcome.stderr.clone();
        task.checks = outcome.checks.clone();
        task.data = outcome.data.clone();
        if planned.action.reply_is_the_message() {
            task.msg = outcome.msg.clone();
        } else if let (Some(said), true) = (&outcome.msg, outcome.ok) {
            // What the host did beside the change itself (stale temp files swept).
            task.msg = Some(match &task.msg {
                Some(msg) => format!("{msg}; {said}"),
                None => said.clone(),
            });
        }
        if !outcome.ok {
            task.status = TaskStatus::Failed;
            task.msg = outcome.msg.clone();
        } else if outcome.skipped {
            task.status = TaskStatus::Ok;
            task.msg = outcome.msg.clone();
        }
        planned.action.judge(&mut task);
        let failed = task.status == TaskStatus::Failed;
        applied.push(task);
        if failed && planned.action.failure_stops_the_host() {
            break;
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apply_is_named_by_its_first_task_and_how_many_follow() {
        assert_eq!(apply_label(&[]), "applying");
        assert_eq!(apply_label(&["verify"]), "verify");
        assert_eq!(apply_label(&["a", "b", "c"]), "a (+2 more)");
    }

    #[test]
    fn without_python_the_fallback_answers_and_stdin_is_drained() {
        let run = |python: &str| {
            let mut child = std::process::Command::new("/bin/sh")
                .args(["-c", builtin::GATHER_SH, "csdeploy-gather", python])
                .arg("echo \"fallback $CSDEPLOY_PYTHONS\"")
                .args(["", ""])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(protocol::START_AGENT).unwrap();
            stdin
                .write_all(&protocol::agent_frame(builtin::AGENT))
                .unwrap();
            let _ = stdin.write_all(&[b'x'; 200_000]);
            drop(stdin);
            let out = child.wait_with_output().unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(
            run("/nonexistent/python3"),
            "fallback /nonexistent/python3\n"
        );
        // With python3, the agent answers: here, that the bytes are no frame.
        assert!(run("").contains("malformed frame"));
    }

    #[test]
    fn the_shell_boots_the_agent_as_the_protocol_documents() {
        assert!(builtin::GATHER_SH.contains(&format!("-c \"{}\"", protocol::BOOT)));
    }

    #[test]
    fn a_panicking_task_is_named_as_an_internal_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = runtime
            .block_on(async { tokio::spawn(async { panic!("boom at host x") }).await })
            .unwrap_err();
        let msg = panicked(err);
        assert!(
            msg.contains("internal error") && msg.contains("boom at host x"),
            "{msg}"
        );
    }
}
