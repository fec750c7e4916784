//! Turns the inventory, the playbook and the host selection into one plan
//! per host, with every template rendered, before any connection is made: an
//! undefined variable on any host stops the run before it touches anything.
//!
//! Plays are flattened per host: each host runs the tasks of every play that
//! targets it, in order, independently of other hosts (Ansible's `free`
//! strategy). That is what lets a host's whole run cost one remote command.

use crate::error::{Error, Result};
use crate::host::{self, Host};
use crate::inventory::Inventory;
use crate::modules::Action;
use crate::playbook::Playbook;
use crate::select;

/// Which hosts the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--host NAME`, repeatable.
    pub hosts: Vec<String>,
    /// `--limit PATTERN`.
    pub limit: Option<String>,
    /// `--shard K/N`: this run's part of the selected hosts.
    pub shard: Option<Shard>,
}

/// Part K of N of a fleet, for N CI jobs that deploy it at once. A host's
/// part depends on its name alone (not on the inventory's order or the other
/// hosts), so the N parts never overlap and always add up to the whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1 to `count`.
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// `K/N`, with 1 <= K <= N.
    pub fn parse(text: &str) -> std::result::Result<Shard, String> {
        let parsed = text.split_once('/').and_then(|(k, n)| {
            Some(Shard {
                index: k.trim().parse().ok()?,
                count: n.trim().parse().ok()?,
            })
        });
        match parsed {
            Some(shard) if shard.index >= 1 && shard.index <= shard.count => Ok(shard),
            _ => Err(format!(
                "`{text}`: expected K/N with 1 <= K <= N, e.g. 2/4 for the second of four parts"
            )),
        }
    }

    pub fn contains(&self, host: &str) -> bool {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(host.as_bytes());
        let bucket = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        bucket % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl Selection {
    /// The selected hosts, in inventory order. Never empty, unless a shard
    /// of a non-empty selection happens to hold none of its hosts.
    pub fn resolve(&self, inventory: &Inventory) -> Result<Vec<String>> {
        let mut chosen = match (&self.limit, self.hosts.is_empty()) {
            (Some(limit), true) => select::matching(inventory, limit)?,
            (None, true) => inventory.hosts.clone(),
            (limit, false) => {
                let mut named = select::named(inventory, &self.hosts)?;
                if let Some(limit) = limit {
                    let limited = select::matching(inventory, limit)?;
                    named.retain(|h| limited.contains(h));
                }
                named
            }
        };
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
        if let Some(shard) = self.shard {
            chosen.retain(|host| shard.contains(host));
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
    let sources = crate::modules::copy::SharedSources::new(&playbook.files);
    let mut var_bytes = 0;
    for (n, name) in selected.iter().enumerate() {
        let host = Host::resolve(inventory, name)?;
        crate::vars::account(&mut var_bytes, &host.vars, n + 1, &inventory.file)?;
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
            let deploys = play.tasks.iter().any(|t| t.args.deploys());
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
            // `-e` wins over play vars too, as in Ansible.
            for key in inventory.extra_var_names() {
                if let Some(value) = host.vars.get(key) {
                    vars.insert(key.clone(), value.clone());
                }
            }
            for task in &play.tasks {
                let action = task.args.render(&vars, &sources).map_err(|err| {
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
    // An empty shard (N larger than the fleet, or an unlucky split) is a CI
    // job with nothing to do, not an error.
    if plans.is_empty() && !selected.is_empty() {
        return Err(Error::Selection(format!(
            "no play in {} targets the selected hosts ({})",
            playbook.file,
            selected.join(", ")
        )));
    }
    Ok(plans)
}

/// One task per selected host, made from the host's resolved settings: the
/// day-two commands (sessions, cleanup, doctor), which run no playbook.
pub fn for_each_host(
    inventory: &Inventory,
    selection: &Selection,
    name: &str,
    action: impl Fn(&Host) -> Result<Action>,
) -> Result<Vec<HostPlan>> {
    selection
        .resolve(inventory)?
        .iter()
        .map(|host| {
            let host = Host::resolve(inventory, host)?;
            let action = action(&host)?;
            Ok(HostPlan {
                tasks: vec![PlannedTask {
                    name: name.to_string(),
                    play: name.to_string(),
                    action,
                }],
                host,
            })
        })
        .collect()
}

/// A host variable as text, for the day-two commands: `claude_home`,
/// `max_sessions` (csdeploy's defaults fill in what the inventory leaves out).
pub fn var_text(host: &Host, key: &str) -> Result<String> {
    host.vars
        .get(key)
        .and_then(crate::template::value_text)
        .ok_or_else(|| {
            Error::Selection(format!(
                "host {}: `{key}` is not set (or null) in the inventory",
                host.name
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_any_fleet_stably() {
        let hosts: Vec<String> = (0..500).map(|i| format!("web{i:03}.example")).collect();
        for count in [1, 2, 3, 7, 16] {
            let shards: Vec<Shard> = (1..=count).map(|index| Shard { index, count }).collect();
            for host in &hosts {
                let owners = shards.iter().filter(|s| s.contains(host)).count();
                assert_eq!(owners, 1, "{host} in {owners} of {count} shards");
            }
            // Roughly even: no shard has more than twice its share.
            for shard in &shards {
                let size = hosts.iter().filter(|h| shard.contains(h)).count();
                assert!(
                    size <= 2 * hosts.len() / count as usize + 1,
                    "{shard:?}: {size}"
                );
            }
        }
        // A host's part is its name's sha256 modulo N: pinned, so that the
        // same CI matrix keeps deploying the same hosts from release to release.
        for (host, index) in [("lxc122", 4), ("local", 1), ("web042.example", 4)] {
            assert!(Shard { index, count: 4 }.contains(host), "{host}");
        }
    }

    #[test]
    fn shard_syntax() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        for bad in ["0/4", "5/4", "2", "a/b", "1/0", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

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
