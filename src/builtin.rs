//! What is compiled into the binary, so an installed csdeploy works from any
//! directory: the built-in playbooks, the files they install, and the agent.

pub const PUSH_PLAYBOOK: &str = include_str!("../playbooks/push.yml");
/// The default inventory (`local` and `lxc122`), for a csdeploy run outside this repository.
pub const INVENTORY: &str = include_str!("../inventory/hosts.yml");
/// The remote steps of a host's run (see `engine`).
pub const GATHER: &str = include_str!("remote/gather.py");
pub const GATHER_SH: &str = include_str!("remote/gather.sh");
pub const APPLY: &str = include_str!("remote/apply.py");
pub const VERIFIER: &str = include_str!("remote/verify.py");
/// The day-two programs (sessions, cleanup, remove) and the doctor, with
/// its answer for a host without python3.
pub const TOOLS: &str = include_str!("remote/tools.py");
pub const DOCTOR: &str = include_str!("remote/doctor.py");
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
