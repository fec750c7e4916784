//! Errors that end a run before any host is touched, and the exit-code table.
//!
//! Per-host failures are not errors here: they are results (see `engine`), and
//! only decide the final exit code through [`ExitCode::for_outcome`].

use std::path::PathBuf;

/// The process exit codes. They are a contract for CI pipelines; the README
/// documents the same table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Every selected host ran every task (or every check passed).
    Success = 0,
    /// A task failed (or a verification check failed) on at least one host.
    Failed = 1,
    /// The command line, inventory or playbook is invalid; nothing ran.
    InvalidInput = 2,
    /// At least one host could not be reached, and nothing failed elsewhere.
    Unreachable = 3,
    /// Stopped by SIGINT or SIGTERM: hosts stopped where they were, and the
    /// reports say which finished.
    Interrupted = 130,
}

impl ExitCode {
    /// When several apply, a failure (1) wins over an unreachable host (3):
    /// exit 3 alone means "retrying may help", which is false once a task has
    /// really failed.
    pub fn for_outcome(failed: bool, unreachable: bool) -> ExitCode {
        match (failed, unreachable) {
            (true, _) => ExitCode::Failed,
            (false, true) => ExitCode::Unreachable,
            (false, false) => ExitCode::Success,
        }
    }
}

/// In the reports, the number the process exits with.
impl serde::Serialize for ExitCode {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_i32(*self as i32)
    }
}

/// A position in a YAML file, for messages of the form `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid YAML, or YAML that does not describe a valid inventory or
    /// playbook: names where, and which key.
    #[error("{location}: {key}: {message}")]
    Yaml {
        location: Location,
        key: String,
        message: String,
    },
    /// Same as `Yaml`, for a file whose exact position could not be found.
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
    #[error("{0}")]
    Selection(String),
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Yaml { .. }
            | Error::Invalid { .. }
            | Error::Selection(_)
            | Error::Usage(_)
            | Error::Read { .. } => ExitCode::InvalidInput,
            Error::Write { .. } => ExitCode::Failed,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_wins_over_unreachable() {
        assert_eq!(ExitCode::for_outcome(true, true), ExitCode::Failed);
        assert_eq!(ExitCode::for_outcome(false, true), ExitCode::Unreachable);
        assert_eq!(ExitCode::for_outcome(true, false), ExitCode::Failed);
        assert_eq!(ExitCode::for_outcome(false, false), ExitCode::Success);
    }
}
