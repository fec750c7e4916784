//! The command line: clap types, the environment and the terminal are read
//! here and nowhere else, and turned into [`Settings`] for `app`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::{self, Settings};
use crate::error::ExitCode;
use crate::modules::verify::{Client, MAX_WAIT, VerifyArgs};
use crate::plan::Selection;
use crate::report::{self, Format};
use crate::transport::HostKeyChecking;

#[derive(Debug, Parser)]
#[command(
    name = "csdeploy",
    version,
    about = "Deploy and verify Claude Code parallel-session tooling over SSH"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the session launcher, cleaner and directories on the selected hosts.
    Push {
        /// Run this playbook instead of the built-in one.
        #[arg(long, value_name = "FILE")]
        playbook: Option<PathBuf>,
        /// Run the parallel-isolation verification right after the push.
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        verification: Verification,
        #[command(flatten)]
        common: Common,
    },
    /// Run the parallel-isolation verification on the selected hosts.
    Verify {
        #[command(flatten)]
        verification: Verification,
        #[command(flatten)]
        common: Common,
    },
    /// Run any playbook.
    Run {
        playbook: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Print the inventory's hosts, groups and resolved variables.
    Inventory {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Args)]
struct Verification {
    /// Sessions launched at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    sessions: u32,
    /// What stands in for Claude Code: the built-in probe, or the real `claude` on the host.
    #[arg(long, value_enum, default_value = "probe")]
    client: Client,
    /// Warnings and skipped checks fail the verification too.
    #[arg(long)]
    strict: bool,
    /// Seconds each test session waits for the others to start.
    #[arg(long, default_value_t = 10, value_name = "SECS",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_WAIT)))]
    wait: u32,
}

impl Verification {
    fn args(&self) -> VerifyArgs {
        VerifyArgs {
            sessions: self.sessions,
            client: self.client,
            strict: self.strict,
            wait: Some(self.wait),
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum HostKeys {
    /// Refuse unknown and changed host keys.
    Strict,
    /// Trust and record the key of a host seen for the first time; refuse changed keys.
    AcceptNew,
}

#[derive(Debug, Args)]
struct Common {
    /// Inventory file, in Ansible's YAML format [default: inventory/hosts.yml if it exists,
    /// else the built-in one: `local` and `lxc122`].
    #[arg(short, long, env = "CSDEPLOY_INVENTORY")]
    inventory: Option<PathBuf>,
    /// Run on this host (or group); repeatable.
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// Host pattern: names, groups, `*` globs, `a:b` union, `!x` exclusion, `&x` intersection.
    #[arg(short, long, value_name = "PATTERN")]
    limit: Option<String>,
    /// How many hosts run at once, 1 to 4096 [default: as many as file descriptors allow, up to 256].
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    forks: Option<u32>,
    /// The longest one remote step (gather, apply) may take on a host before
    /// the host is reported failed; a verification's --wait comes on top.
    #[arg(long, default_value_t = 600, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
    /// Change nothing; report what would change.
    #[arg(short = 'C', long)]
    check: bool,
    /// Show a unified diff for every file whose content changes.
    #[arg(short = 'D', long)]
    diff: bool,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the --format document to FILE; the text report still goes to stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "strict")]
    host_key_checking: HostKeys,
    /// ssh client configuration file (ssh -F), instead of ~/.ssh/config.
    #[arg(long, env = "CSDEPLOY_SSH_CONFIG", value_name = "FILE")]
    ssh_config: Option<PathBuf>,
    /// How commands share a host's connection: the mux protocol spoken natively, or an `ssh -S` process each.
    #[arg(long, value_enum, default_value = "native", hide = true)]
    ssh_mux: Mux,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mux {
    Native,
    Process,
}

/// The most hosts in flight a file-descriptor limit allows: each running
/// host holds its mux socket and the pipes of one command (a handful, 8 to
/// be safe), and the runtime keeps some for itself.
pub fn fd_capacity(nofile_limit: u64) -> usize {
    const PER_HOST: u64 = 8;
    const RESERVED: u64 = 64;
    (nofile_limit.saturating_sub(RESERVED) / PER_HOST).max(1) as usize
}

/// The default hosts at once: what the limit allows, up to 256 (past that a
/// 2-core machine is busy with handshakes anyway).
pub fn forks_for(nofile_limit: u64) -> usize {
    fd_capacity(nofile_limit).min(256)
}

/// Hosts at once: as asked, or as many as file descriptors allow, never more.
/// The soft file-descriptor limit is raised to the hard one first, as most
/// servers do: the default soft limit (1024) would cap a 500-host run at 120.
fn forks(asked: Option<u32>) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let fitting = fd_capacity(limit);
    match asked {
        None => forks_for(limit),
        Some(n) if n as usize <= fitting => n as usize,
        Some(n) => {
            let _ = writeln!(
                std::io::stderr(),
                "csdeploy: --forks {n} needs more file descriptors than the limit allows; running {fitting} hosts at once"
            );
            fitting
        }
    }
}

/// Control sockets need a short path (a unix socket path holds 107 bytes).
fn control_parent() -> PathBuf {
    let tmp = std::env::temp_dir();
    if tmp.as_os_str().len() <= 40 {
        tmp
    } else {
        PathBuf::from("/tmp")
    }
}

impl Common {
    fn settings(self) -> Settings {
        Settings {
            inventory: self.inventory,
            selection: Selection {
                hosts: self.hosts,
                limit: self.limit,
            },
            forks: forks(self.forks),
            check: self.check,
            diff: self.diff,
            outputs: report::outputs(
                self.format,
                self.output.as_deref(),
                std::io::stderr().is_terminal(),
                std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0"),
            ),
            format: self.format,
            host_key_checking: match self.host_key_checking {
                HostKeys::Strict => HostKeyChecking::Strict,
                HostKeys::AcceptNew => HostKeyChecking::AcceptNew,
            },
            ssh_config: self.ssh_config,
            native_mux: matches!(self.ssh_mux, Mux::Native),
            control_parent: control_parent(),
            timeout: std::time::Duration::from_secs(self.timeout),
        }
    }
}

pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::InvalidInput as i32
            } else {
                0
            };
        }
    };
    let result = match cli.command {
        Command::Push {
            playbook,
            verify,
            verification,
            common,
        } => app::push(
            &common.settings(),
            playbook.as_deref(),
            verify.then(|| verification.args()),
        ),
        Command::Verify {
            verification,
            common,
        } => app::verify(&common.settings(), verification.args()),
        Command::Run { playbook, common } => app::run(&common.settings(), &playbook),
        Command::Inventory { common } => app::inventory(&common.settings()),
    };
    match result {
        Ok(code) => code as i32,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "csdeploy: error: {err}");
            err.exit_code() as i32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forks_fit_the_descriptor_limit() {
        assert_eq!(forks_for(1024), 120);
        assert_eq!(forks_for(524_288), 256);
        assert_eq!(forks_for(100), 4);
        assert_eq!(forks_for(0), 1);
        // 500 hosts at the default forks, at any limit, never need more descriptors than there are.
        for limit in [256, 1024, 4096, 1 << 20] {
            assert!(forks_for(limit) as u64 * 8 + 64 <= limit.max(72));
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
