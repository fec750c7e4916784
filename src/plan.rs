//! Turns the inventory, the playbook and the host selection into one plan
//! per host, with every template rendered, before any connection is made: an
//! undefined variable on any host stops the run before it touches anything.
//!
//! Plays are flattened per host: each host runs the tasks of every play that
//! targets it, in order, independently of other hosts (Ansible's `free`
//! strategy). That is what lets a host's whole run cost two round trips.

use crate::error::{Error, Result};
use crate::host::{self, Host};
use crate::inventory::Inventory;
use crate::modules::Action;
use crate::playbook::{ModuleArgs, Playbook};
use crate::select;

/// Which hosts the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--host NAME`, repeatable.
    pub hosts: Vec<String>,
    /// `--limit PATTERN`.
    pub limit: Option<String>,
}

impl Selection {
    /// The selected hosts, in inventory order; never empty.
    pub fn resolve(&self, inventory: &Inventory) -> Result<Vec<String>> {
        let mut chosen = if self.hosts.is_empty() {
            inventory.hosts.clone()
        } else {
            select::named(inventory, &self.hosts)?
        };
        if let Some(limit) = &self.limit {
            let limited = select::matching(inventory, limit)?;
            chosen.retain(|h| limited.contains(h));
        }
        if chosen.is_empty() {
            let mut asked = Vec::new();
            if !self.hosts.is_empty() {
                asked.push(format!("--host {}", self.hosts.join(" --host ")));
            }
            if let Some(limit) = &self.limit {
                asked.push(format!("--limit '{limit}'"));
            }
            return Err(Error::Selection(format!(
                "{} matches no host in {} (hosts: {})",
                asked.join(" with "),
                inventory.file,
                inventory.hosts.join(", ")
            )));
        }
        Ok(chosen)
    }
}

#[derive(Debug, Clone)]
pub struct PlannedTask {
    pub name: String,
    pub play: String,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub struct HostPlan {
    pub host: Host,
    pub tasks: Vec<PlannedTask>,
}

pub fn build(
    inventory: &Inventory,
    playbook: &Playbook,
    selection: &Selection,
) -> Result<Vec<HostPlan>> {
    let selected = selection.resolve(inventory)?;
    let mut plans: Vec<HostPlan> = Vec::new();
    for name in &selected {
        let host = Host::resolve(inventory, name)?;
        let mut tasks = Vec::new();
        let mut policy_checked = false;
        for play in &playbook.plays {
            let targets = select::matching(inventory, &play.hosts).map_err(|err| {
                playbook
                    .locations
                    .error(&format!("{}.hosts", play.at), err.to_string())
            })?;
            if !targets.contains(name) {
                continue;
            }
            // A play that deploys must not share per-session state; a
            // verification alone runs with such a policy, and fails it.
            let deploys = play
                .tasks
                .iter()
                .any(|t| !matches!(t.args, ModuleArgs::Verify(_)));
            if deploys && !policy_checked {
                Host::check_inherit_policy(inventory, name)?;
                policy_checked = true;
            }
            if deploys {
                for key in host::INHERIT_KEYS {
                    if let Some(message) = play
                        .vars
                        .get(key)
                        .and_then(|v| host::inherit_refusal(key, v))
                    {
                        return Err(playbook
                            .locations
                            .error(&format!("{}.vars.{key}", play.at), message));
                    }
                }
            }
            let mut vars = host.vars.clone();
            vars.extend(play.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
            for task in &play.tasks {
                let rendered = match &task.args {
                    ModuleArgs::File(args) => args.render(&vars),
                    ModuleArgs::Copy(args) => args.render(&vars, &playbook.files),
                    ModuleArgs::Command(args) => args.render(&vars),
                    ModuleArgs::Verify(args) => args.render(&vars),
                };
                let action = rendered.map_err(|err| {
                    playbook.locations.error(
                        &format!("{}.{}.{}", task.at, task.args.name(), err.field),
                        format!("{} (host {name})", err.message),
                    )
                })?;
                tasks.push(PlannedTask {
                    name: task.name.clone(),
                    play: play.name.clone(),
                    action,
                });
            }
        }
        if !tasks.is_empty() {
            plans.push(HostPlan { host, tasks });
        }
    }
    if plans.is_empty() {
        return Err(Error::Selection(format!(
            "no play in {} targets the selected hosts ({})",
            playbook.file,
            selected.join(", ")
        )));
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::Files;

    fn plan(inventory: &str, playbook: &str) -> Result<Vec<HostPlan>> {
        let inventory = Inventory::parse("h.yml", inventory).unwrap();
        let playbook = Playbook::parse("p.yml", playbook, Files::Embedded).unwrap();
        build(&inventory, &playbook, &Selection::default())
    }

    #[test]
    fn a_deploying_play_refuses_per_session_state_a_verification_does_not() {
        let deploy = "- hosts: all\n  tasks:\n    - file: {path: /x, state: directory}\n";
        let verify = "- hosts: all\n  tasks:\n    - verify: {}\n";
        let sharing = "all:\n  hosts:\n    a:\n      inherit_link: history.jsonl\n";
        let err = plan(sharing, deploy).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "h.yml:4:7: all.hosts.a.inherit_link: inherit_link names `history.jsonl`"
            ),
            "{err}"
        );
        assert!(plan(sharing, verify).is_ok());
        let play_sharing = "- hosts: all\n  vars:\n    inherit_copy: 'CLAUDE.md todos'\n  tasks:\n    - file: {path: /x, state: directory}\n";
        let err = plan("all:\n  hosts:\n    a:\n", play_sharing)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("p.yml:3:5: [0].vars.inherit_copy: inherit_copy names `todos`"),
            "{err}"
        );
    }
}
