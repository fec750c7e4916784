//! Runs host plans: hosts in parallel (at most `forks` at once), each in at
//! most two remote commands: one `gather` for the state of everything its
//! tasks touch, one `apply` for every change, file contents on stdin. Nothing
//! to change, or check mode: one command. A failed or unreachable host never
//! stops the others; it only shows in its report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc::UnboundedSender, watch};

use crate::builtin;
use crate::events::{CheckResult, Event, HostReport, Phases, TaskResult, TaskStatus};
use crate::facts::{Facts, GatherReply, Probe};
use crate::modules::{Action, Decision};
use crate::plan::{HostPlan, PlannedTask};
use crate::transport::{RemoteCommand, SshOptions, Transport, TransportError};

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

/// Interpreter discovery, as Ansible does it, inside the one command: the
/// platform python first (a PATH lookup can land on a slow shim such as
/// pyenv's, ~100 ms a start), then whatever `python3` PATH has. The agent's
/// source travels as `$1` of the sh script, so nothing is interpolated; `$0`
/// names the step in the shell's own messages (a python3 that cannot run).
const DISCOVER_PYTHON: &str = r#"for p in /usr/bin/python3 /usr/local/bin/python3 python3; do
  if command -v "$p" >/dev/null 2>&1; then exec "$p" -I -S -c "$1"; fi
done
echo "csdeploy: no python3 on this host (set ansible_python_interpreter)" >&2
exit 127"#;

/// The variable that carries a Python step's source to the host.
const AGENT_SOURCE: &str = "CSDEPLOY_AGENT";

/// The `python3 -c` program, one line that `ps` shows starting with the
/// step's name (`'csdeploy-apply'; import os; ...`) instead of the whole
/// source, which comes from the environment (and leaves it, so that what
/// the step starts does not inherit it).
fn agent_boot(verb: &str) -> String {
    format!("'csdeploy-{verb}'; import os; exec(os.environ.pop('{AGENT_SOURCE}'))")
}

fn agent_argv(python: Option<&str>, verb: &str) -> Vec<String> {
    let boot = agent_boot(verb);
    match python {
        Some(python) => [python, "-I", "-S", "-c", &boot].map(String::from).to_vec(),
        None => ["/bin/sh", "-c", DISCOVER_PYTHON, "csdeploy-agent", &boot]
            .map(String::from)
            .to_vec(),
    }
}

/// [`DISCOVER_PYTHON`] for a step that must answer without python3: the
/// configured interpreter (`$2`, if any) or the discovered one runs the
/// agent (`$1`); where there is none, stdin is drained and the POSIX sh
/// script `$3` answers in the agent's place.
const DISCOVER_PYTHON_OR_FALLBACK: &str = r#"if [ -n "$2" ]; then set -- "$1" "$3" "$2"
else set -- "$1" "$3" /usr/bin/python3 /usr/local/bin/python3 python3; fi
agent=$1 fallback=$2; shift 2
for p in "$@"; do
  if command -v "$p" >/dev/null 2>&1; then exec "$p" -I -S -c "$agent"; fi
done
cat >/dev/null 2>&1
CSDEPLOY_PYTHONS="$*" exec /bin/sh -c "$fallback" csdeploy-fallback"#;

fn fallback_argv(python: Option<&str>, boot: &str, fallback: &str) -> Vec<String> {
    [
        "/bin/sh",
        "-c",
        DISCOVER_PYTHON_OR_FALLBACK,
        "csdeploy-agent",
        boot,
        python.unwrap_or(""),
        fallback,
    ]
    .map(String::from)
    .to_vec()
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

/// Runs one of csdeploy's remote steps (`verb`, for messages) with `stdin`,
/// for at most `limit`.
async fn remote(
    transport: &Transport,
    plan: &HostPlan,
    verb: &str,
    (argv, extra_env): (Vec<String>, Option<(String, String)>),
    stdin: Vec<u8>,
    limit: Duration,
) -> Result<Vec<u8>, StepError> {
    let mut env = plan.host.environment.clone();
    env.extend(extra_env);
    let command = RemoteCommand { env, argv };
    let output = tokio::time::timeout(limit, transport.exec(&command, stdin))
        .await
        .map_err(|_| {
            StepError::TimedOut(format!(
                "the csdeploy {verb} step did not finish within {} s (--timeout)",
                limit.as_secs()
            ))
        })?
        .map_err(|err| match err {
            TransportError::Lost(why) => StepError::Lost(format!(
                "the connection to the host was lost during the csdeploy {verb} step ({why}); what the step \
                 had done by then stays done, each file replaced whole or not at all"
            )),
            other => StepError::Failed(other.to_string()),
        })?;
    if output.code != Some(0) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.trim();
        let stderr = match stderr.char_indices().nth(STDERR_LIMIT) {
            Some((cut, _)) => format!("{} [... cut]", &stderr[..cut]),
            None => stderr.to_string(),
        };
        let status = output
            .code
            .map_or("was killed".to_string(), |c| format!("exited with {c}"));
        return Err(StepError::Failed(format!(
            "the csdeploy {verb} step {status}: {stderr}"
        )));
    }
    Ok(output.stdout)
}

/// Runs one of the Python steps (gather.py, apply.py).
async fn agent(
    transport: &Transport,
    plan: &HostPlan,
    verb: &str,
    source: &str,
    stdin: Vec<u8>,
    limit: Duration,
) -> Result<Vec<u8>, StepError> {
    remote(
        transport,
        plan,
        verb,
        (
            agent_argv(plan.host.python.as_deref(), verb),
            Some((AGENT_SOURCE.to_string(), source.to_string())),
        ),
        stdin,
        limit,
    )
    .await
}

/// What apply.py reports for one op.
#[derive(Debug, Default)]
struct ApplyResult {
    ok: bool,
    skipped: bool,
    msg: Option<String>,
    backup: Option<String>,
    rc: Option<i32>,
    stdout: Option<String>,
    stderr: Option<String>,
    checks: Vec<CheckResult>,
    data: Option<serde_json::Value>,
}

const APPLY_FIELDS: usize = 9;

impl ApplyResult {
    /// Parses apply.py's reply: nine fields per op that ran,
    /// `OK\0SKIPPED\0MSG\0BACKUP\0RC\0STDOUT\0STDERR\0CHECKS\0DATA\0`.
    fn parse_all(reply: &[u8]) -> Result<Vec<ApplyResult>, String> {
        let bad = |what: &str| format!("the csdeploy agent answered apply with {what}");
        if reply.is_empty() {
            return Ok(Vec::new());
        }
        let text = reply
            .strip_suffix(b"\0")
            .ok_or_else(|| bad("an unterminated reply"))?;
        let fields: Vec<String> = text
            .split(|&b| b == 0)
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        if !fields.len().is_multiple_of(APPLY_FIELDS) {
            return Err(bad("a truncated reply"));
        }
        let optional = |f: &String| (!f.is_empty()).then(|| f.clone());
        fields
            .chunks(APPLY_FIELDS)
            .map(|f| {
                let checks = match f[7].as_str() {
                    "" => Vec::new(),
                    json => {
                        serde_json::from_str(json).map_err(|e| bad(&format!("bad checks: {e}")))?
                    }
                };
                let data = match f[8].as_str() {
                    "" => None,
                    json => Some(
                        serde_json::from_str(json).map_err(|e| bad(&format!("bad data: {e}")))?,
                    ),
                };
                Ok(ApplyResult {
                    ok: f[0] == "1",
                    skipped: f[1] == "1",
                    msg: optional(&f[2]),
                    backup: optional(&f[3]),
                    rc: f[4].parse().ok(),
                    stdout: optional(&f[5]),
                    stderr: optional(&f[6]),
                    checks,
                    data,
                })
            })
            .collect()
    }
}

fn result(task: &PlannedTask, status: TaskStatus, decision: &Decision) -> TaskResult {
    TaskResult {
        name: task.name.clone(),
        play: task.play.clone(),
        module: task.action.module(),
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

/// The host's state, as far as the plan's tasks care; no round trip when
/// they care about none (a verification alone).
fn millis(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

async fn gather(
    transport: &Transport,
    plan: &HostPlan,
    want_diff: bool,
    limit: Duration,
) -> Result<Facts, StepError> {
    let probes: Vec<Probe> = plan
        .tasks
        .iter()
        .flat_map(|t| t.action.probes(want_diff))
        .collect();
    if probes.is_empty() {
        return Ok(Facts::empty());
    }
    if !want_diff {
        // The shell gather: no interpreter to start, which is most of a rerun's cost.
        let wants: String = probes
            .iter()
            .map(|p| if p.want.is_some() { 'h' } else { 's' })
            .collect();
        let mut argv: Vec<String> = [
            "/bin/sh",
            "-c",
            builtin::GATHER_SH,
            "csdeploy-gather",
            &wants,
        ]
        .map(String::from)
        .to_vec();
        argv.extend(probes.iter().map(|p| p.path.clone()));
        match remote(transport, plan, "gather", (argv, None), Vec::new(), limit).await {
            Err(err @ (StepError::TimedOut(_) | StepError::Lost(_))) => return Err(err),
            Ok(reply) => {
                if let Ok(reply) = GatherReply::parse_sh(&reply, &probes) {
                    return Ok(Facts::new(&probes, reply));
                }
            }
            Err(StepError::Failed(_)) => {}
        }
        // Otherwise (a host without GNU coreutils) the Python gather, which needs nothing more.
    }
    let mut request = Vec::new();
    for probe in &probes {
        probe.encode(&mut request);
    }
    let reply = agent(transport, plan, "gather", builtin::GATHER, request, limit).await?;
    Ok(Facts::new(&probes, GatherReply::parse(&reply)?))
}

async fn deploy(
    transport: &Transport,
    plan: &HostPlan,
    options: &Options,
    phases: &mut Phases,
    events: &Events,
) -> Result<Vec<TaskResult>, StepError> {
    let started = |task: String| {
        let host = plan.host.name.clone();
        let _ = events.send(Event::TaskStarted { host, task });
    };
    started("gathering facts".into());
    let gathering = Instant::now();
    let mut facts = gather(transport, plan, options.diff, options.timeout).await?;
    phases.gather_ms = millis(gathering);

    // Decide every task against the host's state as earlier tasks will leave it.
    let mut decided = Vec::new();
    let mut ops = Vec::new();
    for task in &plan.tasks {
        let decision = task.action.decide(&mut facts, options.diff, options.check);
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
            .filter(|op| !options.check || op.check_mode);
        let op_index = op.map(|_| ops.len());
        if let Some(op) = op {
            ops.push(op.clone());
        }
        decided.push((result(task, status, &decision), op_index));
    }
    if ops.is_empty() {
        return Ok(decided.into_iter().map(|(r, _)| r).collect());
    }
    let mut stdin = format!("{}\0", ops.len()).into_bytes();
    for op in &ops {
        op.encode(&mut stdin);
    }
    for data in ops.iter().filter_map(|op| op.data.as_ref()) {
        stdin.extend_from_slice(data);
    }
    // One apply command carries out every change; it is named by its tasks.
    let applied: Vec<&str> = decided
        .iter()
        .filter(|(_, op)| op.is_some())
        .map(|(r, _)| r.name.as_str())
        .collect();
    started(apply_label(&applied));
    let applying = Instant::now();
    // A verification waits for its sessions on top of its own work.
    let waiting: Duration = plan
        .tasks
        .iter()
        .filter_map(|t| match &t.action {
            Action::Verify(v) => Some(v.waiting()),
            _ => None,
        })
        .sum();
    let limit = options.timeout + waiting;
    // A step that must report even where python3 is missing (doctor)
    // brings its own shell fallback.
    let reply = match plan.tasks.iter().find_map(|t| t.action.without_python()) {
        None => agent(transport, plan, "apply", builtin::APPLY, stdin, limit).await?,
        Some(fallback) => {
            let argv = fallback_argv(plan.host.python.as_deref(), &agent_boot("apply"), fallback);
            let source = (AGENT_SOURCE.to_string(), builtin::APPLY.to_string());
            remote(transport, plan, "apply", (argv, Some(source)), stdin, limit).await?
        }
    };
    phases.apply_ms = millis(applying);
    let results = ApplyResult::parse_all(&reply)?;

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
        if matches!(planned.action, Action::Command(_)) {
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
        if failed && !matches!(planned.action, Action::Verify(_)) {
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
    fn a_program_reply_carries_its_data() {
        let reply = b"1\0\0\0\0\0\0\0[]\0{\"sessions\": []}\0";
        let results = ApplyResult::parse_all(reply).unwrap();
        assert_eq!(results.len(), 1);
        assert!(results[0].ok && results[0].checks.is_empty());
        assert_eq!(results[0].data, Some(serde_json::json!({"sessions": []})));
        // Eight fields (a reply of an older agent) are a truncated reply.
        assert!(ApplyResult::parse_all(b"1\0\0\0\0\0\0\0\0").is_err());
    }

    #[test]
    fn without_python_the_fallback_answers_and_stdin_is_drained() {
        let run = |python: Option<&str>| {
            let argv = fallback_argv(
                python,
                "import sys; sys.stdin.buffer.read(); sys.stdout.write('agent')",
                "echo \"fallback $CSDEPLOY_PYTHONS\"",
            );
            let mut child = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(&[b'x'; 200_000])
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(
            run(Some("/nonexistent/python3")),
            "fallback /nonexistent/python3\n"
        );
        assert_eq!(run(None), "agent");
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
