//! The commands, below the CLI: load and resolve everything, then hand the
//! plans to the engine and its events to a reporter.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::builtin;
use crate::engine;
use crate::error::{Error, ExitCode, Result};
use crate::events::{Command, Event, Summary};
use crate::host::{Connection, Host};
use crate::inventory::{CommandLine, Inventory};
use crate::modules::Action;
use crate::modules::cleanup::CleanupAction;
use crate::modules::doctor::DoctorAction;
use crate::modules::remove::RemoveAction;
use crate::modules::rollback::RollbackAction;
use crate::modules::sessions::SessionsAction;
use crate::modules::verify::VerifyArgs;
use crate::plan::{self, HostPlan, PlannedTask, Selection};
use crate::playbook::{Files, ModuleArgs, Play, Playbook};
use crate::report::{self, Outputs};
use crate::transport::{HostKeyChecking, SshOptions};

/// Everything a command needs, resolved from flags, environment and terminal.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `-i`; None: inventory/hosts.yml if it exists, else the built-in one.
    pub inventory: Option<PathBuf>,
    /// `-e`, `-u`, `--private-key`.
    pub command_line: CommandLine,
    pub selection: Selection,
    pub forks: usize,
    pub check: bool,
    pub diff: bool,
    pub outputs: Outputs,
    pub host_key_checking: HostKeyChecking,
    pub ssh_config: Option<PathBuf>,
    pub native_mux: bool,
    pub control_parent: PathBuf,
    /// `--timeout`: the longest one remote step may take on a host.
    pub timeout: std::time::Duration,
    /// `--list-hosts`: print the hosts each play (or the command) would run
    /// on, as Ansible does, and touch none.
    pub list_hosts: bool,
    /// `--syntax-check`: read the playbook and the inventory, plan every
    /// host, and touch none.
    pub syntax_check: bool,
    /// `-v`: say how each host is reached and which tasks run there.
    pub verbosity: u8,
}

const DEFAULT_INVENTORY: &str = "inventory/hosts.yml";
/// How the built-in inventory's name starts, in messages.
const BUILT_IN: &str = "(built-in)";

/// The inventory, having said which terms of `--limit` match nothing: as
/// Ansible does, csdeploy warns and goes on with the rest (a selection
/// left empty is still an error).
fn load_selected(settings: &Settings) -> Result<Inventory> {
    let mut inventory = load_inventory(settings.inventory.as_deref())?;
    inventory.add_command_line(&settings.command_line)?;
    for warning in inventory.typo_warnings() {
        let _ = writeln!(std::io::stderr(), "csdeploy: warning: {warning}");
    }
    if let Some(limit) = &settings.selection.limit {
        for term in crate::select::unmatched(&inventory, limit) {
            let _ = writeln!(
                std::io::stderr(),
                "csdeploy: warning: --limit: `{term}` matches no host or group in {}; ignoring it, as Ansible does",
                inventory.file
            );
        }
    }
    Ok(inventory)
}

fn load_inventory(path: Option<&Path>) -> Result<Inventory> {
    let path = match path {
        Some(path) => path,
        None if Path::new(DEFAULT_INVENTORY).is_file() => Path::new(DEFAULT_INVENTORY),
        // An installed csdeploy, run anywhere: the inventory it ships with.
        None => {
            return Inventory::parse(
                &format!("{BUILT_IN} {DEFAULT_INVENTORY}"),
                builtin::INVENTORY,
            );
        }
    };
    if path.is_dir() {
        return Inventory::load_dir(path);
    }
    let mut inventory = Inventory::load_file(path)?;
    inventory.read_adjacent_vars(path.parent().unwrap_or(Path::new(".")))?;
    Ok(inventory)
}

pub fn push(
    settings: &Settings,
    playbook: Option<&Path>,
    verify: Option<VerifyArgs>,
    backup: bool,
) -> Result<ExitCode> {
    let mut playbook = match playbook {
        Some(path) => Playbook::load(path)?,
        None => Playbook::parse(
            "(built-in) playbooks/push.yml",
            builtin::PUSH_PLAYBOOK,
            Files::Embedded,
        )?,
    };
    if backup {
        // Every file the push replaces keeps a backup, and the push's
        // manifest on the host makes it one `csdeploy rollback` away.
        for task in playbook.plays.iter_mut().flat_map(|p| p.tasks.iter_mut()) {
            if let ModuleArgs::Copy(args) = &mut task.args {
                args.backup = true;
            }
        }
    }
    if let Some(args) = verify {
        playbook.plays.push(Play::verification(args));
    }
    execute(Command::Push, settings, &playbook)
}

pub fn verify(settings: &Settings, args: VerifyArgs) -> Result<ExitCode> {
    let playbook = Playbook {
        file: "(built-in verification)".into(),
        plays: vec![Play::verification(args)],
        locations: Default::default(),
        files: Files::Embedded,
    };
    execute(Command::Verify, settings, &playbook)
}

pub fn run(settings: &Settings, playbook: &Path) -> Result<ExitCode> {
    execute(Command::Run, settings, &Playbook::load(playbook)?)
}

/// What must hold before any host is touched, beyond the inventory and
/// playbook: the files csdeploy reads or writes besides them.
fn check_files(settings: &Settings) -> Result<()> {
    if let Some(Some(path)) = settings.outputs.document.as_ref().map(|(_, t)| t) {
        report::check_writable(path).map_err(|source| {
            Error::Usage(format!(
                "--output {}: cannot write the report there: {source}",
                path.display()
            ))
        })?;
    }
    if let Some(path) = &settings.ssh_config {
        std::fs::File::open(path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The first SIGINT or SIGTERM stops the hosts where they are, so that the
/// reports, the recap and the cleanup (connections, control sockets) still
/// happen; a second one ends csdeploy at once.
async fn on_signals(interrupt: tokio::sync::watch::Sender<bool>, control_dir: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    let _ = interrupt.send(true);
    let _ = writeln!(
        std::io::stderr(),
        "csdeploy: interrupted: stopping the hosts (again to quit at once)"
    );
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    crate::transport::ssh::end_masters(&control_dir);
    let _ = std::fs::remove_dir_all(&control_dir);
    std::process::exit(ExitCode::Interrupted as i32);
}

fn execute(command: Command, settings: &Settings, playbook: &Playbook) -> Result<ExitCode> {
    let inventory = load_selected(settings)?;
    if settings.list_hosts {
        let selected = settings.selection.resolve(&inventory)?;
        let mut out = format!("\nplaybook: {}\n", playbook.file);
        for (n, play) in playbook.plays.iter().enumerate() {
            let hosts: Vec<String> = crate::select::matching(&inventory, &play.hosts)
                .unwrap_or_default()
                .into_iter()
                .filter(|h| selected.contains(h))
                .collect();
            out.push_str(&format!(
                "\n  play #{} ({}): {}\tTAGS: []\n    pattern: [{}]\n{}",
                n + 1,
                play.hosts,
                play.name,
                python_str(&play.hosts),
                host_list(&hosts, 4)
            ));
        }
        return print_listing(&out);
    }
    if settings.syntax_check {
        // Every selected host planned, its variables and templates checked;
        // which hosts the plays pick is not syntax (Ansible does not mind).
        match plan::build(&inventory, playbook, &settings.selection) {
            Ok(_) | Err(Error::Selection(_)) => {}
            Err(err) => return Err(err),
        }
        return print_listing(&format!("\nplaybook: {}\n", playbook.file));
    }
    let plans = plan::build(&inventory, playbook, &settings.selection)?;
    run_plans(command, settings, &inventory, plans)
}

/// What `-v` says before a run: how each host is reached (the ssh
/// destination, port, user, key and the options of its ssh args, or a
/// local connection) and the tasks that run there, in order.
fn describe_plans(plans: &[HostPlan]) -> String {
    let mut out = String::new();
    for plan in plans {
        let host = &plan.host;
        let ssh = |t: &crate::host::SshTarget| {
            let mut reach = format!("ssh to {}", t.host);
            if let Some(port) = t.port {
                reach.push_str(&format!(" port {port}"));
            }
            if let Some(user) = &t.user {
                reach.push_str(&format!(" as {user}"));
            }
            if let Some(key) = &t.key_file {
                reach.push_str(&format!(" with key {key}"));
            }
            if !t.ssh_options.is_empty() {
                reach.push_str(&format!(", ssh options: {}", t.ssh_options.join("; ")));
            }
            reach
        };
        let mut reach = match &host.connection {
            Connection::Local => "local processes (ansible_connection: local)".to_string(),
            Connection::Ssh(t) => ssh(t),
            Connection::Lxc { container } => format!("lxc-attach to container {container}"),
            Connection::Pct { node, vmid } => {
                format!("pct exec {vmid} on the Proxmox node, {}", ssh(node))
            }
        };
        if let Some(become_) = &host.become_ {
            let method = format!("{:?}", become_.method).to_lowercase();
            reach.push_str(&format!(", then {method} to {}", become_.user));
        }
        out.push_str(&format!("csdeploy: {}: {reach}\n", host.name));
        for (n, task) in plan.tasks.iter().enumerate() {
            out.push_str(&format!(
                "csdeploy: {}: task {}/{}: {} (play: {})\n",
                host.name,
                n + 1,
                plan.tasks.len(),
                task.name,
                task.play
            ));
        }
    }
    out
}

/// `  hosts (N):` and one host a line, as Ansible's `--list-hosts` prints them.
fn host_list(hosts: &[String], indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = format!("{pad}hosts ({}):\n", hosts.len());
    for host in hosts {
        out.push_str(&format!("{pad}  {host}\n"));
    }
    out
}

/// `text` as Python's `repr` writes a string (Ansible prints a play's pattern so).
fn python_str(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn print_listing(text: &str) -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Write {
            path: "(stdout)".into(),
            source: err,
        }),
        _ => Ok(ExitCode::Success),
    }
}

/// The options of `csdeploy cleanup`.
#[derive(Debug, Clone, Default)]
pub struct CleanupOptions {
    pub dry_run: bool,
    pub days: Option<u32>,
    pub sessions: Vec<String>,
}

/// A day-two command: one task per selected host, one remote command each.
fn day_two(
    command: Command,
    settings: &Settings,
    action: impl Fn(&Host) -> Result<Action>,
) -> Result<ExitCode> {
    let inventory = load_selected(settings)?;
    if settings.list_hosts {
        return print_listing(&host_list(&settings.selection.resolve(&inventory)?, 2));
    }
    let plans = plan::for_each_host(&inventory, &settings.selection, command.name(), action)?;
    run_plans(command, settings, &inventory, plans)
}

/// `csdeploy sessions`: what the deployed list tool reports on each host.
pub fn sessions(settings: &Settings, active: bool) -> Result<ExitCode> {
    day_two(Command::Sessions, settings, |host| {
        Ok(Arc::new(SessionsAction {
            host: host.name.clone(),
            claude_home: plan::var_text(host, "claude_home")?,
            active,
        }))
    })
}

/// `csdeploy cleanup`: the deployed cleaner on each host.
pub fn cleanup(settings: &Settings, options: &CleanupOptions) -> Result<ExitCode> {
    day_two(Command::Cleanup, settings, |host| {
        Ok(Arc::new(CleanupAction {
            host: host.name.clone(),
            claude_home: plan::var_text(host, "claude_home")?,
            dry_run: options.dry_run,
            days: options.days,
            sessions: options.sessions.clone(),
        }))
    })
}

/// `csdeploy doctor`: each host's prerequisites and capacity.
pub fn doctor(settings: &Settings) -> Result<ExitCode> {
    day_two(Command::Doctor, settings, |host| {
        Ok(Arc::new(DoctorAction::for_host(host)?))
    })
}

/// `csdeploy remove`: what the built-in playbook installs on each host,
/// taken away again.
pub fn remove(settings: &Settings, purge: bool) -> Result<ExitCode> {
    let inventory = load_selected(settings)?;
    if settings.list_hosts {
        return print_listing(&host_list(&settings.selection.resolve(&inventory)?, 2));
    }
    let push = Playbook::parse(
        "(built-in) playbooks/push.yml",
        builtin::PUSH_PLAYBOOK,
        Files::Embedded,
    )?;
    let plans = plan::build(&inventory, &push, &settings.selection)?
        .into_iter()
        .map(|plan| {
            let actions: Vec<Action> = plan.tasks.into_iter().map(|t| t.action).collect();
            let claude_home = plan::var_text(&plan.host, "claude_home")?;
            let action = RemoveAction::from_push(&plan.host.name, &claude_home, &actions, purge);
            Ok(HostPlan {
                tasks: vec![PlannedTask {
                    name: "remove".into(),
                    play: "remove".into(),
                    action: Arc::new(action),
                }],
                host: plan.host,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    run_plans(Command::Remove, settings, &inventory, plans)
}

/// `csdeploy rollback`: what the last `push --backup` replaced, put back.
pub fn rollback(settings: &Settings, force: bool) -> Result<ExitCode> {
    day_two(Command::Rollback, settings, |host| {
        Ok(Arc::new(RollbackAction {
            host: host.name.clone(),
            force,
        }))
    })
}

/// The inventory a run's header names: its file, or None for the built-in one.
fn inventory_name(inventory: &Inventory) -> Option<String> {
    (!inventory.file.starts_with(BUILT_IN)).then(|| inventory.file.clone())
}

fn run_plans(
    command: Command,
    settings: &Settings,
    inventory: &Inventory,
    plans: Vec<HostPlan>,
) -> Result<ExitCode> {
    if let (Some(shard), true) = (settings.selection.shard, plans.is_empty()) {
        let _ = writeln!(
            std::io::stderr(),
            "csdeploy: shard {}/{} holds none of the selected hosts: nothing to do",
            shard.index,
            shard.count
        );
    }
    check_files(settings)?;
    if settings.verbosity > 0 {
        let _ = std::io::stderr().write_all(describe_plans(&plans).as_bytes());
    }
    let mut plans = plans;
    if settings.verbosity >= 3 {
        // ssh's own debug output, as Ansible's -vvv gives it: the master
        // writes it to its log, which a failed connection's error carries.
        for plan in &mut plans {
            if let Connection::Ssh(target) = &mut plan.host.connection {
                target.ssh_options.insert(0, "LogLevel DEBUG3".into());
            }
        }
    }
    crate::transport::ssh::sweep_stale_control_dirs(&settings.control_parent);
    let control_dir = tempfile::Builder::new()
        .prefix(&crate::transport::ssh::control_dir_prefix())
        .tempdir_in(&settings.control_parent)
        .map_err(|source| Error::Write {
            path: settings.control_parent.clone(),
            source,
        })?;
    let (interrupt, interrupted) = tokio::sync::watch::channel(false);
    let options = Arc::new(engine::Options {
        check: settings.check,
        diff: settings.diff,
        forks: settings.forks,
        timeout: settings.timeout,
        interrupted: interrupted.clone(),
        ssh: SshOptions {
            host_key_checking: settings.host_key_checking,
            config_file: settings.ssh_config.clone(),
            control_dir: control_dir.path().to_path_buf(),
            native_mux: settings.native_mux,
            connect_timeout: std::time::Duration::from_secs(10),
        },
    });
    let mut reporters = report::reporters(&settings.outputs, command, settings.diff);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Write {
            path: PathBuf::from("(runtime)"),
            source,
        })?;
    let started = Instant::now();
    let run_id = uuid::Uuid::new_v4().to_string();
    let summary = runtime.block_on(async {
        tokio::spawn(on_signals(interrupt, control_dir.path().to_path_buf()));
        let (events, mut inbox) = tokio::sync::mpsc::unbounded_channel();
        let printer = tokio::task::spawn_blocking(move || {
            while let Some(event) = inbox.blocking_recv() {
                for reporter in &mut reporters {
                    reporter.event(&event);
                }
            }
            reporters.iter().all(|r| r.wrote_all())
        });
        let _ = events.send(Event::RunStarted {
            command,
            hosts: plans.iter().map(|p| p.host.name.clone()).collect(),
            check: settings.check,
            inventory: inventory_name(inventory),
            tasks: plans
                .iter()
                .map(|p| p.tasks.iter().map(|t| t.name.clone()).collect())
                .collect(),
        });
        let reports = engine::run(plans, options, events.clone()).await;
        let summary = Summary::of(
            &run_id,
            &reports,
            started.elapsed().as_millis() as u64,
            settings.check,
            *interrupted.borrow(),
        );
        let _ = events.send(Event::RunDone(summary.clone()));
        drop(events);
        let reported = printer.await.unwrap_or(false);
        (summary, reported)
    });
    crate::transport::ssh::end_masters(control_dir.path());
    drop(control_dir);
    let (summary, reported) = summary;
    // The code every report states; a report that could not be written,
    // which no report can state, makes it a failure.
    Ok(match summary.exit_code {
        ExitCode::Success | ExitCode::Unreachable if !reported => ExitCode::Failed,
        code => code,
    })
}

pub fn inventory(settings: &Settings, json: bool) -> Result<ExitCode> {
    let inventory = load_selected(settings)?;
    let selected = settings.selection.resolve(&inventory)?;
    let mut hosts = serde_json::Map::new();
    let mut var_bytes = 0;
    for (n, name) in selected.iter().enumerate() {
        let host = Host::resolve(&inventory, name)?;
        crate::vars::account(&mut var_bytes, &host.vars, n + 1, &inventory.file)?;
        let connection = match &host.connection {
            Connection::Local => serde_json::json!({"type": "local"}),
            Connection::Ssh(t) => serde_json::json!({
                "type": "ssh", "host": t.host, "port": t.port, "user": t.user, "key_file": t.key_file,
                "ssh_options": t.ssh_options,
            }),
            Connection::Lxc { container } => {
                serde_json::json!({"type": "lxc", "container": container})
            }
            Connection::Pct { node: t, vmid } => serde_json::json!({
                "type": "pct", "vmid": vmid, "host": t.host, "port": t.port, "user": t.user, "key_file": t.key_file,
            }),
        };
        let become_ = host.become_.as_ref().map(|b| {
            let method = match b.method {
                crate::host::BecomeMethod::Sudo => "sudo",
                crate::host::BecomeMethod::Su => "su",
            };
            serde_json::json!({"method": method, "user": b.user})
        });
        let groups: Vec<&str> = inventory
            .groups_of(name)
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        hosts.insert(
            name.clone(),
            serde_json::json!({"connection": connection, "become": become_, "groups": groups, "vars": crate::secrets::masked(&serde_json::Value::Object(host.vars.clone().into_iter().collect()))}),
        );
    }
    let groups: serde_json::Map<String, serde_json::Value> = inventory
        .groups
        .values()
        .map(|g| {
            let members: Vec<&String> = inventory
                .hosts
                .iter()
                .filter(|h| inventory.group_contains(&g.name, h))
                .collect();
            (
                g.name.clone(),
                serde_json::json!({"hosts": members, "children": g.children}),
            )
        })
        .collect();
    let document = serde_json::json!({"hosts": hosts, "groups": groups});
    let text = if json {
        serde_json::to_string_pretty(&document).unwrap_or_default()
    } else {
        // The inventory used, as the other commands' headers name it; a
        // comment, so that the text stays YAML.
        let name = inventory_name(&inventory);
        format!(
            "# inventory: {}\n{}",
            name.as_deref().unwrap_or("built-in"),
            crate::yaml::to_string(&document)
        )
    };
    // A closed pipe (`| head`) is the reader's choice, not an error.
    report::write_document(None, &format!("{}\n", text.trim_end()));
    Ok(ExitCode::Success)
}

/// `csdeploy report merge`: the shards' JSON reports as one, exiting with
/// the merged exit code so that the last CI job can gate on it.
pub fn merge_reports(files: &[PathBuf], output: Option<&Path>) -> Result<i32> {
    let mut reports = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let value = serde_json::from_str(&text)
            .map_err(|err| Error::Usage(format!("{}: not JSON: {err}", path.display())))?;
        reports.push((path.display().to_string(), value));
    }
    let merged = report::merge::merge(&reports).map_err(Error::Usage)?;
    let text = serde_json::to_string_pretty(&merged).unwrap_or_default() + "\n";
    if !report::write_document(output, &text) {
        return Ok(ExitCode::Failed as i32);
    }
    Ok(report::merge::exit_code(&merged))
}
