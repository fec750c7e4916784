//! What is compiled into the binary, so an installed csdeploy works from any
//! directory: the built-in playbooks, the files they install, and the agent.

pub const PUSH_PLAYBOOK: &str = include_str!("../playbooks/push.yml");
/// The default inventory (`local` and `lxc122`), for a csdeploy run outside this repository.
pub const INVENTORY: &str = include_str!("../inventory/hosts.yml");
/// A host's one remote command and its agent (see `protocol`).
pub const GATHER_SH: &str = include_str!("remote/gather.sh");
pub const AGENT: &str = include_str!("remote/agent.py");
/// The verifier: one source on the wire, kept as files by concern (see
/// `remote/verify/main.py`), joined in this order after what the host-side
/// programs share (`remote/common.py`). Each file ends with a newline, so
/// joining never merges two lines.
pub const VERIFIER: &str = concat!(
    include_str!("remote/common.py"),
    include_str!("remote/verify/main.py"),
    include_str!("remote/verify/probe.py"),
    include_str!("remote/verify/launch.py"),
    include_str!("remote/verify/client.py"),
    include_str!("remote/verify/checks.py"),
    include_str!("remote/verify/cleanup.py"),
);
/// The day-two programs (sessions, cleanup, remove) and the doctor, each
/// after `remote/common.py`; with the doctor's answer for a host without python3.
pub const TOOLS: &str = concat!(
    include_str!("remote/common.py"),
    include_str!("remote/tools.py"),
);
pub const DOCTOR: &str = concat!(
    include_str!("remote/common.py"),
    include_str!("remote/doctor.py"),
);
pub const DOCTOR_SH: &str = include_str!("remote/doctor.sh");

/// The scripts `push` installs, by their `src` name in the playbook.
pub const FILES: &[(&str, &str)] = &[
    (
        "claude-session",
        include_str!("../playbooks/files/claude-session"),
    ),
    (
        "claude-session-list",
        include_str!("../playbooks/files/claude-session-list"),
    ),
    (
        "cleanup-sessions.py",
        include_str!("../playbooks/files/cleanup-sessions.py"),
    ),
    (
        "session_registry.py",
        include_str!("../playbooks/files/session_registry.py"),
    ),
];

pub fn file(name: &str) -> Option<&'static str> {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMON: &str = include_str!("remote/common.py");

    /// Every file of `src/remote/verify/` is in the verifier, whole, after
    /// common.py, and the verifier is nothing else.
    #[test]
    fn verifier_is_every_part_joined() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/remote/verify");
        let mut total = COMMON.len();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            assert!(text.ends_with('\n'));
            assert!(VERIFIER.contains(&text));
            total += text.len();
        }
        assert_eq!(total, VERIFIER.len());
        assert!(
            VERIFIER[COMMON.len()..]
                .starts_with("\"\"\"csdeploy's parallel-isolation verification")
        );
    }

    /// Each host-side program starts with what they share, whole.
    #[test]
    fn every_program_starts_with_common() {
        assert!(COMMON.ends_with('\n'));
        assert!(COMMON.starts_with("\"\"\"What csdeploy's host-side programs share"));
        for program in [TOOLS, DOCTOR, VERIFIER] {
            assert!(program.starts_with(COMMON));
        }
        assert_eq!(&TOOLS[COMMON.len()..], include_str!("remote/tools.py"));
        assert_eq!(&DOCTOR[COMMON.len()..], include_str!("remote/doctor.py"));
    }
}
