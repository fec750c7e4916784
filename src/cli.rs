//! The command line: clap types, the environment and the terminal are read
//! here and nowhere else, and turned into [`Settings`] for `app`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::{self, Settings};
use crate::error::ExitCode;
use crate::inventory::CommandLine;
use crate::modules::verify::{
    Client, DEFAULT_SESSIONS, DEFAULT_WAIT, MAX_SESSIONS_AT_ONCE, MAX_WAIT, VerifyArgs,
};
use crate::plan::{Selection, Shard};
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
        /// Keep a backup of every file the push replaces, and record them for `csdeploy rollback`.
        #[arg(long)]
        backup: bool,
        #[command(flatten)]
        verification: Verification,
        #[command(flatten)]
        changes: Changes,
        #[command(flatten)]
        syntax: SyntaxCheck,
        #[command(flatten)]
        run: RunOptions,
        #[command(flatten)]
        hosts: HostSelection,
    },
    /// Run the parallel-isolation verification on the selected hosts.
    Verify {
        #[command(flatten)]
        verification: Verification,
        #[command(flatten)]
        syntax: SyntaxCheck,
        #[command(flatten)]
        run: RunOptions,
        #[command(flatten)]
        hosts: HostSelection,
    },
    /// Run any playbook.
    Run {
        /// The playbook: a YAML list of plays, as Ansible writes them.
        playbook: PathBuf,
        #[command(flatten)]
        changes: Changes,
        #[command(flatten)]
        syntax: SyntaxCheck,
        #[command(flatten)]
        run: RunOptions,
        #[command(flatten)]
        hosts: HostSelection,
    },
    /// List the Claude Code sessions on the selected hosts (the deployed `claude-session-list`).
    Sessions {
        /// Only the sessions whose launcher is running.
        #[arg(long)]
        active: bool,
        #[command(flatten)]
        run: RunOptions,
        #[command(flatten)]
        hosts: HostSelection,
    },
    /// Remove dead sessions on the selected hosts with the deployed cleaner.
    Cleanup {
        /// Change nothing; report what the cleaner would remove and keep.
        #[arg(long)]
        dry_run: bool,
        /// Also remove sessions in which nothing changed for N days.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=36_500))]
        days: Option<u32>,
        /// Remove exactly this session (repeatable); the cleaner still refuses a live one.
        #[arg(long = "session", value_name = "ID")]
        sessions: Vec<String>,
        #[command(flatten)]
        run: RunOptions,
        #[command(flatten)]
        hosts: HostSelection,
    },
    /// Check what the tooling and Claude Code need on the selected hosts, and their capacity.
    Doctor {
        #[command(flatten)]
        run: RunOptions,
        #[command(flatten)]
        hosts: HostSelection,
    },
    /// Remove what `push` installed from the selected hosts; sessions stay unless --purge.
    Remove {
        /// Also remove every session and the registry (refused while a session is live).
        #[arg(long)]
        purge: bool,
        /// Change nothing; report what would be removed.
        #[arg(short = 'C', long)]
        check: bool,
        #[command(flatten)]
        run: RunOptions,
        #[command(flatten)]
        hosts: HostSelection,
    },
    /// Put back what the last `push --backup` replaced on the selected hosts.
    Rollback {
        /// Restore even files that changed since that push.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        changes: Changes,
        #[command(flatten)]
        run: RunOptions,
        #[command(flatten)]
        hosts: HostSelection,
    },
    /// Work with reports: `report merge` joins the JSON reports of --shard runs.
    Report {
        #[command(subcommand)]
        action: ReportAction,
    },
    /// Print the inventory's hosts, groups and resolved variables (secrets masked).
    Inventory {
        /// yaml-like text, or one JSON document.
        #[arg(long, value_enum, default_value = "text")]
        format: InventoryFormat,
        #[command(flatten)]
        hosts: HostSelection,
    },
}

#[derive(Debug, Subcommand)]
enum ReportAction {
    /// One JSON report from the JSON reports of N shards (`--shard K/N`), exiting with its exit code.
    Merge {
        /// The shards' `--format json` reports, all of one command.
        #[arg(required = true, value_name = "REPORT.json")]
        reports: Vec<PathBuf>,
        /// Write the merged report to FILE instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// The verification's options are optional rather than clap defaults, so
/// that `push` can tell which were given; their help states the defaults,
/// which `VerifyArgs` applies.
#[derive(Debug, Args)]
struct Verification {
    #[arg(long, help = sessions_help(),
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SESSIONS_AT_ONCE)))]
    sessions: Option<u32>,
    /// What stands in for Claude Code: the built-in probe, or the real `claude` on the host [default: probe].
    #[arg(long, value_enum)]
    client: Option<Client>,
    /// Warnings and skipped checks fail the verification too.
    #[arg(long)]
    strict: bool,
    #[arg(long, value_name = "SECS", help = wait_help(),
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_WAIT)))]
    wait: Option<u32>,
}

fn sessions_help() -> String {
    format!("Sessions launched at once, 1 to {MAX_SESSIONS_AT_ONCE} [default: {DEFAULT_SESSIONS}]")
}

fn wait_help() -> String {
    format!("Seconds each test session waits for the others to start [default: {DEFAULT_WAIT}]")
}

impl Verification {
    fn args(&self) -> VerifyArgs {
        VerifyArgs {
            sessions: self.sessions.unwrap_or(DEFAULT_SESSIONS),
            client: self.client.unwrap_or(Client::Probe),
            strict: self.strict,
            wait: self.wait,
        }
    }

    /// The options given on the command line, by name: with `push` they do
    /// something only with `--verify`.
    fn given(&self) -> Vec<&'static str> {
        [
            ("--sessions", self.sessions.is_some()),
            ("--client", self.client.is_some()),
            ("--strict", self.strict),
            ("--wait", self.wait.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum HostKeys {
    /// Refuse unknown and changed host keys.
    Strict,
    /// Trust and record the key of a host seen for the first time; refuse changed keys.
    AcceptNew,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum InventoryFormat {
    Text,
    Json,
}

/// Which hosts: every command takes these.
#[derive(Debug, Args)]
struct HostSelection {
    /// Inventory file, in Ansible's YAML format [default: inventory/hosts.yml if it exists,
    /// else the built-in one: `local`, with LXC 122 as an example to enable].
    #[arg(short, long, env = "CSDEPLOY_INVENTORY")]
    inventory: Option<PathBuf>,
    /// Run on this host (or group); repeatable.
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// Host pattern, as Ansible's: names, groups, `*` globs, `~regex`, `g[0]`/`g[1:]`
    /// subscripts, `a:b` or `a,b` union, `!x` exclusion, `&x` intersection; `@FILE`: one
    /// pattern a line.
    #[arg(short, long, value_name = "PATTERN", value_parser = limit_pattern)]
    limit: Option<String>,
    /// Only part K of N of the selected hosts (split by host name, stable), for N CI jobs at once.
    #[arg(long, value_name = "K/N", value_parser = Shard::parse)]
    shard: Option<Shard>,
    /// Variables above all others, as Ansible's: `key=value ...` (strings), a JSON or YAML
    /// map, or `@FILE`; repeatable, a later one wins.
    #[arg(short = 'e', long = "extra-vars", value_name = "VARS")]
    extra_vars: Vec<String>,
    /// Log in as USER where the inventory sets no `ansible_user` (it wins, as in Ansible).
    #[arg(short = 'u', long = "user", value_name = "USER")]
    user: Option<String>,
    /// Use this private key where the inventory sets no `ansible_ssh_private_key_file`.
    #[arg(long = "private-key", value_name = "FILE")]
    private_key: Option<String>,
}

/// Whether a run may change hosts: push and run.
#[derive(Debug, Args)]
struct Changes {
    /// Change nothing; report what would change.
    #[arg(short = 'C', long)]
    check: bool,
    /// Show a unified diff for every file whose content changes.
    #[arg(short = 'D', long)]
    diff: bool,
}

/// How a run reaches its hosts and reports: the commands that connect.
#[derive(Debug, Args)]
struct RunOptions {
    /// How many hosts run at once, 1 to 4096 [default: as many as file descriptors allow, up to 256].
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    forks: Option<u32>,
    /// The longest one remote step (gather, apply) may take on a host before
    /// the host is reported failed; a verification's --wait comes on top.
    #[arg(long, default_value_t = 600, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
    /// Report format: text (progress on a terminal, one line per event otherwise), json or junit.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the --format document to FILE; the text report still goes to stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Colour the text: on a terminal (auto, honouring NO_COLOR and CLICOLOR_FORCE), always or never.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    color: report::ColorChoice,
    /// Unknown host keys: refuse them, or trust one seen for the first time.
    #[arg(long, value_enum, default_value = "strict")]
    host_key_checking: HostKeys,
    /// ssh client configuration file (ssh -F), instead of ~/.ssh/config.
    #[arg(long, env = "CSDEPLOY_SSH_CONFIG", value_name = "FILE")]
    ssh_config: Option<PathBuf>,
    /// How commands share a host's connection: the mux protocol spoken natively, or an `ssh -S` process each.
    #[arg(long, value_enum, default_value = "native", hide = true)]
    ssh_mux: Mux,
    /// Print the hosts it would run on, as Ansible does, and touch none.
    #[arg(long)]
    list_hosts: bool,
    /// Say how each host is reached and which tasks run there, before the run.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
}

/// Whether to stop once the playbook is read: the commands that run one.
#[derive(Debug, Args)]
struct SyntaxCheck {
    /// Read the playbook and the inventory, plan every selected host, touch none.
    #[arg(long)]
    syntax_check: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mux {
    Native,
    Process,
}

/// `--limit`, with each `@FILE` term replaced by the file's lines, each one
/// pattern (Ansible's `InventoryManager.subset`), joined by `,`: the lines
/// are read here, with the other settings, before anything runs.
fn limit_pattern(arg: &str) -> Result<String, String> {
    let terms = crate::select::split(arg);
    if !terms.iter().any(|t| t.starts_with('@')) {
        return Ok(arg.to_string());
    }
    let mut patterns = Vec::new();
    for term in terms {
        let Some(file) = term.strip_prefix('@') else {
            patterns.push(term);
            continue;
        };
        let text = std::fs::read_to_string(file)
            .map_err(|err| format!("cannot read the limit file {file}: {err}"))?;
        patterns.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
    }
    if patterns.is_empty() {
        return Err(format!(
            "`{arg}` names no host pattern (an empty limit file?)"
        ));
    }
    Ok(patterns.join(","))
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

/// The settings of a command that connects to hosts.
fn settings(hosts: HostSelection, run: RunOptions, changes: Option<Changes>) -> Settings {
    let (check, diff) = changes.map_or((false, false), |c| (c.check, c.diff));
    Settings {
        forks: forks(run.forks),
        check,
        diff,
        outputs: report::outputs(
            run.format,
            run.output.as_deref(),
            std::io::stderr().is_terminal(),
            std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0"),
            report::use_color(
                run.color,
                report::ColorEnv {
                    no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
                    force: std::env::var_os("CLICOLOR_FORCE")
                        .is_some_and(|v| !v.is_empty() && v != "0"),
                },
                std::io::stdout().is_terminal(),
            ),
        ),
        host_key_checking: match run.host_key_checking {
            HostKeys::Strict => HostKeyChecking::Strict,
            HostKeys::AcceptNew => HostKeyChecking::AcceptNew,
        },
        ssh_config: run.ssh_config,
        native_mux: matches!(run.ssh_mux, Mux::Native),
        control_parent: control_parent(),
        timeout: std::time::Duration::from_secs(run.timeout),
        list_hosts: run.list_hosts,
        verbosity: run.verbose,
        ..selection_settings(hosts)
    }
}

/// The settings of a command that only reads the inventory.
fn selection_settings(hosts: HostSelection) -> Settings {
    Settings {
        inventory: hosts.inventory,
        command_line: CommandLine {
            extra_vars: hosts.extra_vars,
            user: hosts.user,
            private_key: hosts.private_key,
        },
        selection: Selection {
            hosts: hosts.hosts,
            limit: hosts.limit,
            shard: hosts.shard,
        },
        forks: 1,
        check: false,
        diff: false,
        outputs: report::Outputs {
            human: None,
            document: None,
            color: false,
        },
        host_key_checking: HostKeyChecking::Strict,
        ssh_config: None,
        native_mux: true,
        control_parent: control_parent(),
        timeout: std::time::Duration::from_secs(600),
        list_hosts: false,
        syntax_check: false,
        verbosity: 0,
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
            backup,
            verification,
            changes,
            syntax,
            run,
            hosts,
        } => {
            let given = verification.given();
            if !verify && !given.is_empty() {
                let _ = writeln!(
                    std::io::stderr(),
                    "csdeploy: error: {} only applies with --verify: add --verify, or leave {} out",
                    given.join(", "),
                    if given.len() == 1 { "it" } else { "them" }
                );
                return ExitCode::InvalidInput as i32;
            }
            app::push(
                &Settings {
                    syntax_check: syntax.syntax_check,
                    ..settings(hosts, run, Some(changes))
                },
                playbook.as_deref(),
                verify.then(|| verification.args()),
                backup,
            )
        }
        Command::Verify {
            verification,
            syntax,
            run,
            hosts,
        } => app::verify(
            &Settings {
                syntax_check: syntax.syntax_check,
                ..settings(hosts, run, None)
            },
            verification.args(),
        ),
        Command::Run {
            playbook,
            changes,
            syntax,
            run,
            hosts,
        } => app::run(
            &Settings {
                syntax_check: syntax.syntax_check,
                ..settings(hosts, run, Some(changes))
            },
            &playbook,
        ),
        Command::Sessions { active, run, hosts } => {
            app::sessions(&settings(hosts, run, None), active)
        }
        Command::Cleanup {
            dry_run,
            days,
            sessions,
            run,
            hosts,
        } => app::cleanup(
            &settings(hosts, run, None),
            &app::CleanupOptions {
                dry_run,
                days,
                sessions,
            },
        ),
        Command::Doctor { run, hosts } => app::doctor(&settings(hosts, run, None)),
        Command::Remove {
            purge,
            check,
            run,
            hosts,
        } => app::remove(
            &settings(hosts, run, Some(Changes { check, diff: false })),
            purge,
        ),
        Command::Rollback {
            force,
            changes,
            run,
            hosts,
        } => app::rollback(&settings(hosts, run, Some(changes)), force),
        Command::Report {
            action: ReportAction::Merge { reports, output },
        } => {
            return match app::merge_reports(&reports, output.as_deref()) {
                Ok(code) => code,
                Err(err) => {
                    let _ = writeln!(std::io::stderr(), "csdeploy: error: {err}");
                    err.exit_code() as i32
                }
            };
        }
        Command::Inventory { format, hosts } => app::inventory(
            &selection_settings(hosts),
            matches!(format, InventoryFormat::Json),
        ),
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

    fn verify_help() -> String {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let verify = cli.find_subcommand_mut("verify").unwrap();
        verify.render_long_help().to_string()
    }

    #[test]
    fn verify_defaults_are_the_modules_and_its_help_states_them() {
        use crate::modules::verify::VerifyAction;
        use crate::modules::{Facts, Module, Run, program_op};
        let Cli {
            command: Command::Verify { verification, .. },
        } = Cli::try_parse_from(["csdeploy", "verify"]).unwrap()
        else {
            panic!("the verify command");
        };
        let args = verification.args();
        assert_eq!(
            (args.sessions, args.client, args.strict, args.wait),
            (DEFAULT_SESSIONS, Client::Probe, false, None)
        );
        let action = VerifyAction {
            args,
            claude_home: String::new(),
            inherit_link: String::new(),
            max_sessions: 0,
        };
        let (sent, _) = program_op(action.decide(&mut Facts::empty(), Run::default()));
        assert_eq!(
            (&sent["sessions"], &sent["wait"]),
            (&DEFAULT_SESSIONS.into(), &DEFAULT_WAIT.into())
        );
        let help = verify_help();
        let sessions = format!("1 to {MAX_SESSIONS_AT_ONCE} [default: {DEFAULT_SESSIONS}]");
        let wait = format!("start [default: {DEFAULT_WAIT}]");
        assert!(help.contains(&sessions) && help.contains(&wait), "{help}");
        let most = MAX_SESSIONS_AT_ONCE.to_string();
        assert!(Cli::try_parse_from(["csdeploy", "verify", "--sessions", &most]).is_ok());
        let too_many = (MAX_SESSIONS_AT_ONCE + 1).to_string();
        assert!(Cli::try_parse_from(["csdeploy", "verify", "--sessions", &too_many]).is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
