//! `verify`: the parallel-isolation verification (see `src/remote/verify/`),
//! run through the deployed launcher. It changes nothing that outlives it: its
//! test sessions are removed by the deployed cleaner before it returns.

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Decision, Facts, Module, ModuleKind, Op, RenderError, Run};
use crate::builtin;
use crate::events::{CheckResult, CheckStatus, TaskResult, TaskStatus};
use crate::template::{TemplateError, value_text};
use crate::vars::Vars;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// A stand-in that writes history exactly as Claude Code does.
    #[default]
    Probe,
    /// The real Claude Code the deployed launcher resolves, driven
    /// interactively through a pseudo-terminal, with no request leaving the host.
    Claude,
}

/// Sessions launched at once unless told otherwise.
pub const DEFAULT_SESSIONS: u32 = 2;
/// The most sessions launched at once.
pub const MAX_SESSIONS_AT_ONCE: u32 = 64;
/// Seconds each test session waits for the others unless told otherwise.
pub const DEFAULT_WAIT: u32 = 10;
/// The longest a test session waits for the others, in seconds: an hour.
pub const MAX_WAIT: u32 = 3600;

fn default_sessions() -> u32 {
    DEFAULT_SESSIONS
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyArgs {
    /// Sessions launched at once.
    #[serde(default = "default_sessions")]
    pub sessions: u32,
    #[serde(default)]
    pub client: Client,
    /// Warnings and skipped checks fail too.
    #[serde(default)]
    pub strict: bool,
    /// Seconds each test session waits for the others to start.
    pub wait: Option<u32>,
}

/// What a failed `launcher-integrity` check means for the person reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// Passed, or failed for another reason (not executable).
    Fine,
    /// The launcher is not there at all: nothing was pushed yet, and the
    /// other checks only repeat it.
    NotDeployed,
    /// A deployed script differs from what this csdeploy ships.
    Drift,
}

/// Reads the `launcher-integrity` check: verify.py names each script as
/// `NAME: No such file or directory` or `NAME: sha256 X, csdeploy ships Y`.
pub fn integrity(checks: &[CheckResult]) -> Integrity {
    let Some(actual) = checks
        .iter()
        .find(|c| c.id == "launcher-integrity" && c.status == CheckStatus::Fail)
        .and_then(|c| c.actual.as_deref())
    else {
        return Integrity::Fine;
    };
    if actual.contains("claude-session: No such file or directory") {
        Integrity::NotDeployed
    } else if actual.contains("csdeploy ships") {
        Integrity::Drift
    } else {
        Integrity::Fine
    }
}

/// The hint a drifted deployment's report gives.
pub const DRIFT_HINT: &str = "drift: `csdeploy push` restores it";

#[derive(Debug, Clone)]
pub struct VerifyAction {
    pub args: VerifyArgs,
    pub claude_home: String,
    pub inherit_link: String,
    pub max_sessions: u64,
}

/// What a real-client run may take beyond the probe's: two rounds (the
/// sessions, then their resumption) of a client that starts in seconds,
/// each with its own deadline in the verifier (`src/remote/verify/`).
const CLAUDE_RUN_SECS: u64 = 120;

impl VerifyArgs {
    pub fn render(&self, vars: &Vars) -> Result<VerifyAction, RenderError> {
        if !(1..=MAX_SESSIONS_AT_ONCE).contains(&self.sessions) {
            return Err(RenderError {
                field: "sessions",
                message: format!(
                    "sessions must be 1 to {MAX_SESSIONS_AT_ONCE}, not {}",
                    self.sessions
                ),
            });
        }
        if let Some(wait) = self.wait.filter(|w| !(1..=MAX_WAIT).contains(w)) {
            return Err(RenderError {
                field: "wait",
                message: format!("wait must be 1 to {MAX_WAIT} seconds, not {wait}"),
            });
        }
        let text = |key: &str| match vars.get(key) {
            None => Ok(String::new()),
            Some(value) => value_text(value).ok_or_else(|| RenderError {
                field: "verify",
                message: TemplateError::Null(key.to_string()).to_string(),
            }),
        };
        let max_sessions = max_sessions(&text("max_sessions")?).map_err(|message| RenderError {
            field: "sessions",
            message,
        })?;
        Ok(VerifyAction {
            args: self.clone(),
            claude_home: text("claude_home")?,
            inherit_link: text("inherit_link")?,
            max_sessions,
        })
    }
}

/// A host's `max_sessions` (the launcher's cap, 0 for none), which the
/// verification and the doctor both judge capacity by.
pub fn max_sessions(text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("max_sessions must be a whole number, not `{text}`"))
}

impl VerifyAction {
    /// Seconds each test session waits for the others.
    fn wait(&self) -> u32 {
        self.args.wait.unwrap_or(DEFAULT_WAIT)
    }

    /// How long the verification may take beyond an ordinary step: its
    /// sessions' wait twice (to start, to be released), a minute for the
    /// checks and the cleaner, and the real client's two rounds.
    pub fn waiting(&self) -> std::time::Duration {
        let client = match self.args.client {
            Client::Probe => 0,
            Client::Claude => CLAUDE_RUN_SECS,
        };
        std::time::Duration::from_secs(2 * u64::from(self.wait()) + 60 + client)
    }
}

impl Module for VerifyAction {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Verify
    }

    fn path(&self) -> Option<&str> {
        Some(&self.claude_home)
    }

    fn extra_time(&self) -> std::time::Duration {
        self.waiting()
    }

    /// A failed check fails the task; the host's other tasks still report.
    fn failure_stops_the_host(&self) -> bool {
        false
    }

    fn decide(&self, _facts: &mut Facts, run: Run) -> Decision {
        if run.check {
            return Decision {
                skipped: true,
                msg: Some("verification does not run in check mode".into()),
                ..Decision::default()
            };
        }
        // What the deployed scripts must hash to: what this binary ships.
        let expected: serde_json::Map<String, serde_json::Value> = builtin::FILES
            .iter()
            .map(|(name, text)| {
                (
                    name.to_string(),
                    hex::encode(Sha256::digest(text.as_bytes())).into(),
                )
            })
            .collect();
        let client = match self.args.client {
            Client::Probe => "probe",
            Client::Claude => "claude",
        };
        let args = json!({
            "claude_home": self.claude_home,
            "sessions": self.args.sessions,
            "client": client,
            "wait": self.wait(),
            "inherit_link": self.inherit_link,
            "max_sessions": self.max_sessions,
            "per_session_state": crate::vars::PER_SESSION_STATE,
            "expected": expected,
        });
        Decision {
            // Never sent in check mode: it returned above.
            op: Some(Op::program(&args, builtin::VERIFIER, false)),
            ..Decision::default()
        }
    }

    /// Sets the task's status from its checks.
    fn judge(&self, task: &mut TaskResult) {
        let failing: Vec<&CheckResult> = task
            .checks
            .iter()
            .filter(|c| {
                c.status == CheckStatus::Fail
                    || (self.args.strict
                        && matches!(c.status, CheckStatus::Warn | CheckStatus::Skip))
            })
            .collect();
        if task.status == TaskStatus::Failed {
            return;
        }
        if failing.is_empty() {
            task.status = TaskStatus::Ok;
            task.msg = Some(format!("{} checks passed", task.checks.len()));
        } else {
            task.status = TaskStatus::Failed;
            let ids: Vec<&str> = failing.iter().map(|c| c.id.as_str()).collect();
            task.msg = Some(match integrity(&task.checks) {
                Integrity::NotDeployed => {
                    "not deployed: the launcher claude-session is missing: run `csdeploy push`"
                        .into()
                }
                Integrity::Drift => format!("failed: {} ({DRIFT_HINT})", ids.join(", ")),
                Integrity::Fine => format!("failed: {}", ids.join(", ")),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action() -> VerifyAction {
        VerifyAction {
            args: VerifyArgs {
                sessions: 3,
                client: Client::Probe,
                strict: false,
                wait: Some(5),
            },
            claude_home: "~/.claude".into(),
            inherit_link: String::new(),
            max_sessions: 8,
        }
    }

    #[test]
    fn decide_skips_in_check_mode_and_otherwise_sends_the_expected_hashes() {
        let skipped = action().decide(&mut Facts::empty(), Run::CHECK);
        assert!(skipped.skipped && skipped.op.is_none(), "{skipped:?}");
        let Some(Op::Program {
            args,
            source,
            check_mode: false,
        }) = action().decide(&mut Facts::empty(), Run::PLAIN).op
        else {
            panic!("a program op, never sent in check mode");
        };
        assert_eq!(source, builtin::VERIFIER);
        assert_eq!(
            (args["sessions"].clone(), args["wait"].clone()),
            (3.into(), 5.into())
        );
        let expected = args["expected"].as_object().unwrap();
        assert_eq!(expected.len(), builtin::FILES.len());
        assert_eq!(
            action().extra_time(),
            std::time::Duration::from_secs(2 * 5 + 60)
        );
        assert!(!action().failure_stops_the_host());
    }

    /// The verify op for a host whose claude home is `home`, run by the
    /// real agent: its stdout, stderr and exit code.
    fn run_in_the_agent(home: &std::path::Path) -> (Vec<u8>, String, Option<i32>) {
        let at_home = VerifyAction {
            claude_home: home.display().to_string(),
            ..action()
        };
        let op = at_home.decide(&mut Facts::empty(), Run::PLAIN).op.unwrap();
        let frame = crate::protocol::apply_request(&[op]);
        assert!(String::from_utf8_lossy(&frame).contains(r#"{"op":"program","#));
        crate::protocol::tests::run_agent(&frame)
    }

    #[test]
    fn the_verifier_runs_as_a_program_in_the_real_agent() {
        let home = tempfile::tempdir().unwrap();
        let (out, err, code) = run_in_the_agent(home.path());
        assert_eq!(code, Some(0), "{err}");
        let replied: crate::protocol::ApplyReply =
            crate::protocol::reply(out.trim_ascii_end()).unwrap();
        let [result] = &replied.results[..] else {
            panic!("one result: {replied:?}");
        };
        assert!(result.ok && result.msg.is_none(), "{result:?}");
        assert_eq!(integrity(&result.checks), Integrity::NotDeployed);
        let failed: Vec<&str> = result
            .checks
            .iter()
            .filter(|c| c.status == CheckStatus::Fail)
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(failed, ["launcher-integrity", "client", "parallel-launch"]);
    }

    /// A signal the verifier leaves to the agent (SIGPIPE: the controller
    /// gone) ends the agent as it ends any op, not as a crash reported.
    #[test]
    fn an_interrupt_the_verifier_does_not_handle_stops_the_agent() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let launcher = home.path().join("bin/claude-session");
        std::fs::create_dir(home.path().join("bin")).unwrap();
        let kills_the_verifier = "#!/bin/sh\n# --which-client\nkill -PIPE $PPID\nsleep 5\n";
        std::fs::write(&launcher, kills_the_verifier).unwrap();
        std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (out, err, code) = run_in_the_agent(home.path());
        assert_eq!(code, Some(128 + 15), "{err}");
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        assert!(err.contains("stopped where it was"), "{err}");
    }
}
