//! Task modules, one file each, behind one trait ([`Module`]): each owns its
//! arguments (as written in a playbook), how they are rendered for one host,
//! what it reads of the host, how it decides from that whether anything must
//! change (a typed [`Op`] for the agent), and how it judges the reply. The
//! engine knows only the trait.

pub mod cleanup;
pub mod command;
pub mod copy;
pub mod doctor;
pub mod file;
pub mod remove;
pub mod rollback;
pub mod sessions;
pub mod verify;

use serde::{Deserialize, Deserializer};

pub use crate::events::TaskResult;
pub use crate::facts::{Facts, Probe};
pub use crate::protocol::Op;

/// A file mode, read as Ansible reads one: a string's digits are octal
/// (`"0755"`, `"755"`), a number is the mode itself (YAML 1.1 reads an
/// unquoted `0755` as 493, which is 0o755). An unquoted `755` is the decimal
/// number 755 (mode 01363), which Ansible applies as it is, a well-known
/// pitfall: csdeploy refuses such a number instead of guessing either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Mode {
    fn parse(text: &str) -> Option<Mode> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        if digits.is_empty()
            || digits.len() > 5
            || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
        {
            return None;
        }
        u32::from_str_radix(digits, 8)
            .ok()
            .filter(|&m| m <= 0o7777)
            .map(Mode)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor, not an untagged enum: errors then point at the value itself.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Mode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mode: octal digits such as \"0755\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Mode, E> {
                Mode::parse(text).ok_or_else(|| {
                    E::custom(format!(
                        "bad mode `{text}`: expected octal digits such as \"0755\" (at most 07777)"
                    ))
                })
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Mode, E> {
                let text = n.to_string();
                let looks_octal = text.bytes().all(|b| (b'0'..=b'7').contains(&b));
                if (512..=777).contains(&n) && looks_octal {
                    return Err(E::custom(format!(
                        "mode {n} without a leading 0 is the decimal number {n} (mode {:04o}), which \
                         Ansible would apply as it is: write \"0{n}\" (or 0{n}) for mode 0{n}",
                        n
                    )));
                }
                u32::try_from(n)
                    .ok()
                    .filter(|&m| m <= 0o7777)
                    .map(Mode)
                    .ok_or_else(|| E::custom(format!("bad mode {n}: at most 07777")))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Mode, E> {
                self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Which module a task is, for reports (compared as a type, named once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleKind {
    File,
    Copy,
    Command,
    Verify,
    Sessions,
    Cleanup,
    Doctor,
    Remove,
    Rollback,
}

/// How the run asks a module to decide: `--diff`, `--check`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Run {
    pub diff: bool,
    pub check: bool,
}

#[cfg(test)]
impl Run {
    pub const PLAIN: Run = Run {
        diff: false,
        check: false,
    };
    pub const DIFF: Run = Run {
        diff: true,
        check: false,
    };
    pub const CHECK: Run = Run {
        diff: false,
        check: true,
    };
}

/// What a `push` task installs, for `remove` to take away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    File(String),
    /// A link and where it points.
    Link(String, String),
}

/// A task module on one host, every template rendered: what it reads of the
/// host, how it decides, how its reply is judged. Each lives in one file;
/// the engine knows only this.
pub trait Module: std::fmt::Debug + Send + Sync {
    fn kind(&self) -> ModuleKind;

    /// The main path the task is about, for reports.
    fn path(&self) -> Option<&str> {
        None
    }

    /// The paths whose state the task needs to know about.
    fn probes(&self, _want_diff: bool) -> Vec<Probe> {
        Vec::new()
    }

    /// Whether anything must change, and the op that changes it.
    fn decide(&self, facts: &mut Facts, run: Run) -> Decision;

    /// Sets a task's status and message from what its op reported.
    fn judge(&self, _task: &mut TaskResult) {}

    /// How long its op may take beyond an ordinary step's `--timeout`.
    fn extra_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// A POSIX sh script that answers for the task's op where the host has
    /// no python3, so that the host is reported rather than broken.
    fn without_python(&self) -> Option<&'static str> {
        None
    }

    /// Whether the reply's message is the task's (a command's exit code),
    /// rather than an addition to the decision's.
    fn reply_is_the_message(&self) -> bool {
        false
    }

    /// Whether the host stops at this task when it fails, as Ansible does
    /// (a verification reports every check instead).
    fn failure_stops_the_host(&self) -> bool {
        true
    }

    /// What the task installs, for `remove`.
    fn installs(&self) -> Option<Installed> {
        None
    }
}

/// A task's module, shared by the plans that hold it.
pub type Action = std::sync::Arc<dyn Module>;

/// The controller's verdict for one task, before anything is applied.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    /// Whether the task changes the host (or, for a command, runs).
    pub changes: bool,
    /// The op for the agent's apply step, if any.
    pub op: Option<Op>,
    pub diff: Option<String>,
    pub msg: Option<String>,
    /// The task cannot succeed whatever is applied (a file where a directory should be).
    pub failure: Option<String>,
    /// The task does not run at all (verification in check mode).
    pub skipped: bool,
}

impl Decision {
    /// Only the mode of `path` changes, `from` → `to`.
    pub fn chmod(path: &str, from: Option<u32>, to: u32) -> Decision {
        Decision {
            changes: true,
            op: Some(Op::chmod(path, to)),
            msg: Some(format!(
                "mode {} -> {}",
                from.map(octal).unwrap_or_default(),
                octal(to)
            )),
            ..Decision::default()
        }
    }
}

pub fn octal(mode: u32) -> String {
    format!("{mode:04o}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("0755"), Some(Mode(0o755)));
        assert_eq!(Mode::parse("700"), Some(Mode(0o700)));
        assert_eq!(Mode::parse("0999"), None);
        assert_eq!(Mode::parse("rwx"), None);
        assert_eq!(Mode::parse("17777"), None);
        assert_eq!(Mode::parse(""), None);
        let load = |text| crate::yaml::load::<Mode>("m.yml", text).map(|(m, _)| m);
        // As Ansible reads them: strings are octal digits, numbers the mode.
        for text in ["0755", "'0755'", "\"755\"", "0o755", "493"] {
            assert_eq!(load(text).unwrap(), Mode(0o755), "{text}");
        }
        assert_eq!(load("0644").unwrap(), Mode(0o644));
        assert_eq!(load("01777").unwrap(), Mode(0o1777));
        let err = load("\"0999\"").unwrap_err().to_string();
        assert!(err.contains("bad mode `0999`"), "{err}");
        // Ansible's pitfall: refused, not guessed.
        for text in ["755", "644", "600"] {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains(&format!("write \"0{text}\"")), "{err}");
        }
    }
}

/// A template in one of a task's arguments that could not be rendered.
#[derive(Debug)]
pub struct RenderError {
    pub field: &'static str,
    pub message: String,
}

/// Renders argument `field` of a task for one host.
pub fn render(
    field: &'static str,
    template: &str,
    vars: &crate::vars::Vars,
    escape: crate::template::Escape,
) -> Result<String, RenderError> {
    crate::template::render(template, vars, escape).map_err(|err| RenderError {
        field,
        message: err.to_string(),
    })
}

/// A decision's program op: its arguments, and whether it is sent in check
/// mode (for the day-two modules' tests).
#[cfg(test)]
pub fn program_op(decision: Decision) -> (serde_json::Value, bool) {
    match decision.op {
        Some(Op::Program {
            args, check_mode, ..
        }) => (args, check_mode),
        other => panic!("a program op: {other:?}"),
    }
}
