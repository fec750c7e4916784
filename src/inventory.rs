//! The inventory, in Ansible's YAML format, so users can reuse theirs.
//!
//! `all` → `hosts` / `vars` / `children`, nested groups, other top-level keys
//! as groups. Precedence, lowest first: csdeploy's defaults, `all` vars, then
//! group vars from the shallowest group to the deepest (ties by name), then
//! host vars. This module owns parsing and variable resolution; turning vars
//! into connection settings is `host`'s job.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::vars::{self, Scoped};
use crate::yaml::{self, Locations};

type RawVars = IndexMap<String, Value>;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    hosts: Option<IndexMap<String, Option<RawVars>>>,
    #[serde(default)]
    vars: Option<RawVars>,
    #[serde(default)]
    children: Option<IndexMap<String, Option<RawGroup>>>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    /// Key path where the group is defined, for messages.
    pub at: String,
    /// The longest chain of groups from `all` down to this one.
    pub depth: usize,
    /// `ansible_group_priority`: among groups of one depth, the higher one's
    /// variables win.
    pub priority: i64,
    pub hosts: Vec<String>,
    pub children: Vec<String>,
    pub vars: RawVars,
    /// The group's vars from the other files of an inventory directory,
    /// each with its key path, in load order: they apply after `vars`.
    pub layers: Vec<(String, RawVars)>,
}

#[derive(Debug)]
pub struct Inventory {
    pub file: String,
    /// Host names in the order the file declares them.
    pub hosts: Vec<String>,
    host_vars: IndexMap<String, Vec<(String, RawVars)>>,
    pub groups: IndexMap<String, Group>,
    pub locations: Locations,
    /// `group_vars/NAME` beside the inventory, per group, in load order.
    group_var_files: IndexMap<String, Vec<usize>>,
    /// `host_vars/NAME` beside the inventory, per host, in load order.
    host_var_files: IndexMap<String, Vec<usize>>,
    /// Every file of `group_vars/` and `host_vars/` read, with its variables.
    var_files: Vec<(RawVars, Locations)>,
    /// `-u` and `--private-key`: below every inventory variable, as in Ansible.
    cli_defaults: RawVars,
    /// `-e`, in order: above every other variable, play vars included.
    extra_vars: Vec<ExtraVars>,
    /// The positions of the other files of an inventory directory (the
    /// first file's are `locations`): a key path from one of them starts
    /// with [`SOURCE_MARK`], its index and the mark again.
    sources: Vec<Locations>,
    /// The file that first named each host, for `inventory_file`, when it is
    /// not `file` (an inventory directory).
    host_files: IndexMap<String, String>,
}

/// The variables given on the command line (see [`Inventory::add_command_line`]).
#[derive(Debug, Clone, Default)]
pub struct CommandLine {
    /// `-e`/`--extra-vars`, each as given: `k=v ...`, JSON/YAML, or `@FILE`.
    pub extra_vars: Vec<String>,
    /// `-u`/`--user`.
    pub user: Option<String>,
    /// `--private-key`.
    pub private_key: Option<String>,
}

/// One `-e`: variables written on the command line, or a file's.
#[derive(Debug)]
enum ExtraVars {
    Inline(RawVars),
    File(usize),
}

/// Where a variable from the command line was set, in an origin.
const COMMAND_LINE: &str = "(command line)";

impl Inventory {
    pub fn parse(file: &str, text: &str) -> Result<Inventory> {
        let (raw, locations) =
            yaml::load::<Option<IndexMap<String, Option<RawGroup>>>>(file, text)?;
        let mut inventory = Inventory {
            file: file.to_string(),
            hosts: Vec::new(),
            host_vars: IndexMap::new(),
            groups: IndexMap::new(),
            locations,
            group_var_files: IndexMap::new(),
            host_var_files: IndexMap::new(),
            var_files: Vec::new(),
            cli_defaults: RawVars::new(),
            extra_vars: Vec::new(),
            sources: Vec::new(),
            host_files: IndexMap::new(),
        };
        inventory.groups.insert(
            "all".into(),
            Group {
                name: "all".into(),
                at: "all".into(),
                depth: 0,
                priority: 1,
                hosts: Vec::new(),
                children: Vec::new(),
                vars: RawVars::new(),
                layers: Vec::new(),
            },
        );
        for (name, group) in raw.unwrap_or_default() {
            let group = group.unwrap_or_default();
            if name == "all" {
                inventory.add_group_body("all", "all", 0, group)?;
            } else {
                inventory.add_group(&name, &name, 1, group)?;
            }
        }
        inventory.finish(file, "all.hosts")
    }

    /// What Ansible's `InventoryData.reconcile_inventory` settles once every
    /// source is read: a group that no other group holds is a child of
    /// `all`; `ungrouped` always exists and holds exactly the hosts that are
    /// in no other group; depths are the longest path from `all`; a group's
    /// `ansible_group_priority` is its priority, not a variable.
    fn reconcile(&mut self) -> Result<()> {
        if !self.groups.contains_key("ungrouped") {
            self.groups.insert(
                "ungrouped".into(),
                Group {
                    name: "ungrouped".into(),
                    at: "ungrouped".into(),
                    depth: 1,
                    priority: 1,
                    hosts: Vec::new(),
                    children: Vec::new(),
                    vars: RawVars::new(),
                    layers: Vec::new(),
                },
            );
        }
        let orphans: Vec<String> = self
            .groups
            .keys()
            .filter(|g| *g != "all" && !self.groups.values().any(|p| p.children.contains(g)))
            .cloned()
            .collect();
        for group in orphans {
            self.link_child("all", &group);
        }
        for host in self.hosts.clone() {
            let grouped = self
                .groups
                .values()
                .any(|g| g.name != "all" && g.name != "ungrouped" && g.hosts.contains(&host));
            let ungrouped = &mut self.groups["ungrouped"].hosts;
            if grouped {
                ungrouped.retain(|h| *h != host);
            } else if !ungrouped.contains(&host) {
                ungrouped.push(host);
            }
        }
        for group in self.groups.values_mut() {
            group.depth = 0;
        }
        self.set_depths("all", 0, &mut Vec::new());
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for name in names {
            let Some(value) = self.groups[&name]
                .vars
                .shift_remove("ansible_group_priority")
            else {
                continue;
            };
            let at = format!("{}.vars.ansible_group_priority", self.groups[&name].at);
            let priority = value
                .as_i64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| {
                    self.locations
                        .error(&at, format!("expected a whole number, found {value}"))
                })?;
            self.groups[&name].priority = priority;
        }
        Ok(())
    }

    fn set_depths(&mut self, group: &str, depth: usize, path: &mut Vec<String>) {
        if path.iter().any(|g| g == group) {
            return;
        }
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        g.depth = g.depth.max(depth);
        let children = g.children.clone();
        path.push(group.to_string());
        for child in children {
            self.set_depths(&child, depth + 1, path);
        }
        path.pop();
    }

    /// An inventory in Ansible's INI format (see [`crate::ini`]).
    pub fn parse_ini(file: &str, text: &str) -> Result<Inventory> {
        let groups = crate::ini::parse(text).map_err(|(line, message)| Error::Yaml {
            location: crate::error::Location {
                file: file.to_string(),
                line,
                column: 1,
            },
            key: "(INI inventory)".into(),
            message,
        })?;
        let mut inventory = Inventory {
            file: file.to_string(),
            hosts: Vec::new(),
            host_vars: IndexMap::new(),
            groups: IndexMap::new(),
            locations: Locations::new(file),
            group_var_files: IndexMap::new(),
            host_var_files: IndexMap::new(),
            var_files: Vec::new(),
            cli_defaults: RawVars::new(),
            extra_vars: Vec::new(),
            sources: Vec::new(),
            host_files: IndexMap::new(),
        };
        for name in ["all".to_string()].iter().chain(groups.keys()) {
            let at = name.clone();
            let line = groups.get(name).and_then(|g| g.declared.or(g.vars_line));
            inventory.locations.insert(at.clone(), line.unwrap_or(1), 1);
            inventory.groups.entry(name.clone()).or_insert(Group {
                name: name.clone(),
                at,
                depth: 1,
                priority: 1,
                hosts: Vec::new(),
                children: Vec::new(),
                vars: RawVars::new(),
                layers: Vec::new(),
            });
        }
        for (name, group) in groups {
            for (key, value, line, column) in group.vars {
                inventory.groups[&name].vars.insert(key.clone(), value);
                inventory
                    .locations
                    .insert(format!("{name}.vars.{key}"), line, column);
            }
            for (pattern, line, vars) in group.hosts {
                let host_at = format!("{name}.hosts.{pattern}");
                inventory.locations.insert(host_at.clone(), line, 1);
                let (names, port) = host_pattern(&pattern)
                    .map_err(|message| inventory.locations.error(&host_at, message))?;
                let mut layer = RawVars::new();
                for (key, value, column) in vars {
                    inventory
                        .locations
                        .insert(format!("{host_at}.{key}"), line, column);
                    layer.insert(key, value);
                }
                for host in names {
                    if inventory.groups.contains_key(&host) {
                        return Err(inventory
                            .locations
                            .error(&host_at, format!("`{host}` is both a host and a group")));
                    }
                    if !inventory.hosts.contains(&host) {
                        inventory.hosts.push(host.clone());
                    }
                    if !inventory.groups[&name].hosts.contains(&host) {
                        inventory.groups[&name].hosts.push(host.clone());
                    }
                    let entry = inventory.host_vars.entry(host).or_default();
                    if let Some(port) = port {
                        let port = RawVars::from([("ansible_port".to_string(), Value::from(port))]);
                        entry.push((host_at.clone(), port));
                    }
                    entry.push((host_at.clone(), layer.clone()));
                }
            }
            for (child, _) in group.children {
                inventory.link_child(&name, &child);
            }
        }
        inventory.finish(file, "(INI inventory)")
    }

    /// Settles the groups (see [`Inventory::reconcile`]) and refuses an
    /// inventory without hosts, naming `key`, as either format's loader ends.
    fn finish(mut self, file: &str, key: &str) -> Result<Inventory> {
        self.reconcile()?;
        if self.hosts.is_empty() {
            return Err(Error::Invalid {
                file: file.to_string(),
                key: key.into(),
                message: "the inventory defines no hosts".into(),
            });
        }
        Ok(self)
    }

    fn link_child(&mut self, parent: &str, child: &str) {
        let children = &mut self.groups[parent].children;
        if !children.iter().any(|c| c == child) {
            children.push(child.to_string());
        }
    }

    fn add_group(&mut self, name: &str, at: &str, depth: usize, raw: RawGroup) -> Result<()> {
        if self.hosts.iter().any(|h| h == name) {
            return Err(self
                .locations
                .error(at, format!("`{name}` is both a host and a group")));
        }
        let group = self
            .groups
            .entry(name.to_string())
            .or_insert_with(|| Group {
                name: name.to_string(),
                at: at.to_string(),
                depth,
                priority: 1,
                hosts: Vec::new(),
                children: Vec::new(),
                vars: RawVars::new(),
                layers: Vec::new(),
            });
        group.depth = group.depth.max(depth);
        self.add_group_body(name, at, depth, raw)
    }

    fn add_group_body(&mut self, name: &str, at: &str, depth: usize, raw: RawGroup) -> Result<()> {
        if let Some(vars) = raw.vars {
            self.groups[name].vars.extend(vars);
        }
        for (key, vars) in raw.hosts.unwrap_or_default() {
            let host_at = format!("{at}.hosts.{key}");
            let (names, port) =
                host_pattern(&key).map_err(|message| self.locations.error(&host_at, message))?;
            for host in names {
                if self.groups.contains_key(&host) {
                    return Err(self
                        .locations
                        .error(&host_at, format!("`{host}` is both a host and a group")));
                }
                if !self.hosts.contains(&host) {
                    self.hosts.push(host.clone());
                }
                if !self.groups[name].hosts.contains(&host) {
                    self.groups[name].hosts.push(host.clone());
                }
                let entry = self.host_vars.entry(host).or_default();
                if let Some(port) = port {
                    let port = RawVars::from([("ansible_port".to_string(), Value::from(port))]);
                    entry.push((host_at.clone(), port));
                }
                if let Some(vars) = &vars {
                    entry.push((host_at.clone(), vars.clone()));
                }
            }
        }
        for (child, body) in raw.children.unwrap_or_default() {
            let child_at = format!("{at}.children.{child}");
            self.add_group(&child, &child_at, depth + 1, body.unwrap_or_default())?;
            self.link_child(name, &child);
        }
        Ok(())
    }

    /// Whether `host` belongs to `group`, directly or through its children.
    pub fn group_contains(&self, group: &str, host: &str) -> bool {
        let mut seen = Vec::new();
        self.contains_inner(group, host, &mut seen)
    }

    fn contains_inner(&self, group: &str, host: &str, seen: &mut Vec<String>) -> bool {
        if group == "all" {
            return true;
        }
        if seen.iter().any(|g| g == group) {
            return false;
        }
        seen.push(group.to_string());
        match self.groups.get(group) {
            Some(g) => {
                g.hosts.iter().any(|h| h == host)
                    || g.children
                        .iter()
                        .any(|c| self.contains_inner(c, host, seen))
            }
            None => false,
        }
    }

    /// The groups `host` is in, in the order their variables apply: `all`
    /// first, then by depth, priority and name, as Ansible sorts them.
    pub fn groups_of(&self, host: &str) -> Vec<&Group> {
        let mut groups: Vec<&Group> = self
            .groups
            .values()
            .filter(|g| self.group_contains(&g.name, host))
            .collect();
        groups.sort_by(|a, b| (a.depth, a.priority, &a.name).cmp(&(b.depth, b.priority, &b.name)));
        groups
    }

    /// Reads `group_vars/` and `host_vars/` in `dir` (the inventory file's
    /// directory), as Ansible's `host_group_vars` plugin does: for each group
    /// and host, the first of `NAME`, `NAME.yml`, `NAME.yaml`, `NAME.json`
    /// that exists; a directory of that name is read whole, its files (those
    /// extensions or none, not hidden, not `~` backups) in sorted order,
    /// subdirectories included. Files of names the inventory lacks are
    /// ignored, as Ansible ignores them.
    pub fn read_adjacent_vars(&mut self, dir: &Path) -> Result<()> {
        let groups: Vec<String> = self.groups.keys().cloned().collect();
        for group in groups {
            let files = self.read_vars_of(&dir.join("group_vars"), &group)?;
            self.group_var_files.insert(group, files);
        }
        let implicit = ["localhost", "127.0.0.1", "::1"].map(String::from);
        let implicit: Vec<String> = implicit
            .into_iter()
            .filter(|h| self.is_implicit_localhost(h))
            .collect();
        for host in self.hosts.clone().into_iter().chain(implicit) {
            let files = self.read_vars_of(&dir.join("host_vars"), &host)?;
            self.host_var_files.insert(host, files);
        }
        Ok(())
    }

    fn read_vars_of(&mut self, dir: &Path, name: &str) -> Result<Vec<usize>> {
        if !dir.is_dir() || name.contains('/') || name.starts_with('.') {
            return Ok(Vec::new());
        }
        let mut paths = Vec::new();
        for ext in ["", ".yml", ".yaml", ".json"] {
            let path = dir.join(format!("{name}{ext}"));
            if path.is_dir() {
                vars_dir_files(&path, &mut paths)?;
                break;
            } else if path.is_file() {
                paths.push(path);
                break;
            }
        }
        let mut loaded = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            let (vars, locations) =
                yaml::load::<Option<RawVars>>(&path.display().to_string(), &text)?;
            loaded.push(self.var_files.len());
            self.var_files.push((vars.unwrap_or_default(), locations));
        }
        Ok(loaded)
    }

    /// An input error about the variable set at `origin` (see [`Scoped`]),
    /// placed in whichever file set it.
    pub fn error(&self, origin: &str, message: impl Into<String>) -> Error {
        if let Some(key) = origin
            .strip_prefix(COMMAND_LINE)
            .and_then(|rest| rest.strip_prefix('.'))
        {
            return Error::Invalid {
                file: COMMAND_LINE.into(),
                key: key.to_string(),
                message: message.into(),
            };
        }
        if let Some((locations, path)) = self.source_of(origin) {
            return locations.error(path, message);
        }
        if let Some((index, key)) = origin
            .strip_prefix(VAR_FILE_MARK)
            .and_then(|rest| rest.split_once(VAR_FILE_MARK))
            && let Some((_, locations)) = index
                .parse()
                .ok()
                .and_then(|i: usize| self.var_files.get(i))
        {
            return locations.error(key.trim_start_matches('.'), message);
        }
        self.locations.error(origin, message)
    }

    /// Adds the variables of the command line, as Ansible reads them: `-u`
    /// and `--private-key` as the lowest `ansible_user` and
    /// `ansible_private_key_file` (any inventory value wins); every `-e`
    /// above everything else, a later one over an earlier one. An `-e` is
    /// `@FILE` (YAML or JSON), a JSON or YAML map when it starts with `{`
    /// or `[`, else `key=value` pairs split as a shell splits words, each
    /// value a string.
    pub fn add_command_line(&mut self, cli: &CommandLine) -> Result<()> {
        if let Some(user) = &cli.user {
            self.cli_defaults
                .insert("ansible_user".into(), Value::from(user.clone()));
        }
        if let Some(key) = &cli.private_key {
            self.cli_defaults
                .insert("ansible_private_key_file".into(), Value::from(key.clone()));
        }
        let usage = |arg: &str, why: String| Error::Invalid {
            file: COMMAND_LINE.into(),
            key: format!("-e {}", arg.escape_debug()),
            message: why,
        };
        for arg in &cli.extra_vars {
            if let Some(path) = arg.strip_prefix('@') {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                    path: PathBuf::from(path),
                    source,
                })?;
                let (vars, locations) = yaml::load::<Option<RawVars>>(path, &text)?;
                self.extra_vars.push(ExtraVars::File(self.var_files.len()));
                self.var_files.push((vars.unwrap_or_default(), locations));
            } else if arg.trim_start().starts_with(['{', '[']) {
                let (vars, _) = yaml::load::<RawVars>(COMMAND_LINE, arg)
                    .map_err(|err| usage(arg, format!("expected a JSON or YAML map: {err}")))?;
                self.extra_vars.push(ExtraVars::Inline(vars));
            } else {
                let words =
                    shlex::split(arg).ok_or_else(|| usage(arg, "an unclosed quote".into()))?;
                let mut vars = RawVars::new();
                for word in words {
                    let Some((key, value)) = word.split_once('=').filter(|(k, _)| !k.is_empty())
                    else {
                        return Err(usage(
                            arg,
                            format!(
                                "`{}` is not key=value: give key=value pairs, a JSON map, or @FILE",
                                word.escape_debug()
                            ),
                        ));
                    };
                    vars.insert(key.to_string(), Value::from(value));
                }
                self.extra_vars.push(ExtraVars::Inline(vars));
            }
        }
        Ok(())
    }

    /// The names `-e` sets: they win over a play's vars too.
    pub fn extra_var_names(&self) -> Vec<&String> {
        self.extra_vars
            .iter()
            .flat_map(|extra| match extra {
                ExtraVars::Inline(vars) => vars.keys().collect::<Vec<_>>(),
                ExtraVars::File(index) => self.var_files[*index].0.keys().collect(),
            })
            .collect()
    }

    /// The positions and plain key path of a path from another file of an
    /// inventory directory (see [`Inventory::merge`]).
    fn source_of<'a>(&self, path: &'a str) -> Option<(&Locations, &'a str)> {
        let (index, path) = path.strip_prefix(SOURCE_MARK)?.split_once(SOURCE_MARK)?;
        Some((self.sources.get(index.parse::<usize>().ok()?)?, path))
    }

    /// Where the key path `at` was written, and `at` without marks.
    fn place<'a>(&self, at: &'a str) -> (crate::error::Location, &'a str) {
        match self.source_of(at) {
            Some((locations, path)) => (locations.find(path), path),
            None => (self.locations.find(at), at),
        }
    }

    /// Reads an inventory directory as Ansible reads one: every file in it
    /// (sorted, subdirectories too), except hidden ones, `group_vars/`,
    /// `host_vars/`, `vars_plugins/` and the extensions of Ansible's
    /// `inventory_ignore_extensions` default; each file in its format (see
    /// [`Inventory::load_file`]), merged into one inventory, and the
    /// directory's own `group_vars/` and `host_vars/`. An executable file
    /// would be a dynamic inventory script to Ansible: refused.
    pub fn load_dir(dir: &Path) -> Result<Inventory> {
        let mut files = Vec::new();
        inventory_dir_files(dir, &mut files)?;
        let mut merged: Option<Inventory> = None;
        for file in files {
            let inventory = Inventory::load_file(&file)?;
            match &mut merged {
                None => merged = Some(inventory),
                Some(merged) => merged.merge(inventory),
            }
        }
        let Some(mut inventory) = merged else {
            return Err(Error::Invalid {
                file: dir.display().to_string(),
                key: "(inventory)".into(),
                message: "no inventory file in this directory (Ansible skips hidden files, \
                          group_vars/, host_vars/ and backups, `.md`, `.txt`, `.cfg` ...)"
                    .into(),
            });
        };
        let first = std::mem::replace(&mut inventory.file, dir.display().to_string());
        for host in &inventory.hosts {
            inventory
                .host_files
                .entry(host.clone())
                .or_insert_with(|| first.clone());
        }
        inventory.reconcile()?;
        inventory.read_adjacent_vars(dir)?;
        Ok(inventory)
    }

    /// One inventory file, without its `group_vars/` and `host_vars/`:
    /// `.ini` or no extension is Ansible's INI format, anything else YAML.
    pub fn load_file(path: &Path) -> Result<Inventory> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let ini = match path.extension().and_then(|e| e.to_str()) {
            None => true,
            Some(ext) => ext == "ini",
        };
        let file = path.display().to_string();
        if ini {
            Inventory::parse_ini(&file, &text)
        } else {
            Inventory::parse(&file, &text)
        }
    }

    /// Adds `other`, a later file of the same inventory directory, as
    /// Ansible's `InventoryData` adds a second source: new hosts and groups
    /// join, a group's members and children are the union, its vars and a
    /// host's are set again (the later file wins). Membership and depths
    /// are settled by [`Inventory::reconcile`] afterwards.
    fn merge(&mut self, other: Inventory) {
        let index = self.sources.len();
        let mark = |at: &str| format!("{SOURCE_MARK}{index}{SOURCE_MARK}{at}");
        self.sources.push(other.locations);
        for host in other.hosts {
            if !self.hosts.contains(&host) {
                self.hosts.push(host.clone());
                self.host_files.insert(host, other.file.clone());
            }
        }
        for (host, layers) in other.host_vars {
            self.host_vars
                .entry(host)
                .or_default()
                .extend(layers.into_iter().map(|(at, vars)| (mark(&at), vars)));
        }
        for (name, group) in other.groups {
            let Some(mine) = self.groups.get_mut(&name) else {
                let at = mark(&group.at);
                self.groups.insert(name, Group { at, ..group });
                continue;
            };
            for host in group.hosts {
                if !mine.hosts.contains(&host) {
                    mine.hosts.push(host);
                }
            }
            for child in group.children {
                if !mine.children.contains(&child) {
                    mine.children.push(child);
                }
            }
            if group.priority != 1 {
                mine.priority = group.priority;
            }
            if !group.vars.is_empty() {
                mine.layers.push((mark(&group.at), group.vars));
            }
        }
    }

    fn overlay_files(&self, scoped: &mut Scoped, files: Option<&Vec<usize>>) {
        for &index in files.into_iter().flatten() {
            let at = format!("{VAR_FILE_MARK}{index}{VAR_FILE_MARK}");
            scoped.overlay(&self.var_files[index].0, &at);
        }
    }

    /// A warning for every `ansible_*` variable Ansible does not know, where
    /// it is set, naming the known one closest to it: Ansible would ignore
    /// `ansible_conection: local` in silence, and so would csdeploy.
    pub fn typo_warnings(&self) -> Vec<String> {
        let mut found: Vec<(String, &str)> = Vec::new();
        let mut note = |at: String, key| {
            let (location, path) = self.place(&at);
            found.push((format!("{location}: {path}"), key));
        };
        for group in self.groups.values() {
            let layers = std::iter::once((&group.at, &group.vars))
                .chain(group.layers.iter().map(|(at, vars)| (at, vars)));
            for (at, vars) in layers {
                for key in vars.keys() {
                    note(format!("{at}.vars.{key}"), key.as_str());
                }
            }
        }
        for (at, vars) in self.host_vars.values().flatten() {
            for key in vars.keys() {
                note(format!("{at}.{key}"), key.as_str());
            }
        }
        for (vars, locations) in &self.var_files {
            for key in vars.keys() {
                found.push((format!("{}: {key}", locations.find(key)), key));
            }
        }
        let mut warnings: Vec<String> = found
            .into_iter()
            .filter_map(|(at, key)| {
                let near = crate::host::misspelled_ansible_var(key)?;
                Some(format!(
                    "{at}: `{key}` is not a variable Ansible knows (did you mean `{near}`?); \
                     neither Ansible nor csdeploy acts on it"
                ))
            })
            .collect();
        warnings.dedup();
        warnings
    }

    /// Whether `name` is Ansible's implicit localhost: one of its names for
    /// the controller, which the inventory does not define. Selected only by
    /// name, it connects locally, is in no group, and sees `all`'s vars.
    pub fn is_implicit_localhost(&self, name: &str) -> bool {
        ["localhost", "127.0.0.1", "::1"].contains(&name)
            && !self.hosts.iter().any(|h| h == name)
            && !self.groups.contains_key(name)
    }

    /// Every variable `host` sees, with where each was set, in Ansible's
    /// order: `all`'s vars in the inventory file, then other groups' there
    /// (by depth, priority, name), then `group_vars/all`, then the other
    /// groups' `group_vars/` files in that order, then the host's vars in
    /// the file, then its `host_vars/` files.
    pub fn vars_for(&self, host: &str) -> Scoped {
        let mut scoped = Scoped::default();
        scoped.overlay(&vars::builtin_defaults(), "(default)");
        scoped.overlay(&self.cli_defaults, COMMAND_LINE);
        let groups = self.groups_of(host);
        for group in &groups {
            scoped.overlay(&group.vars, &format!("{}.vars", group.at));
            for (at, vars) in &group.layers {
                scoped.overlay(vars, &format!("{at}.vars"));
            }
        }
        for group in &groups {
            self.overlay_files(&mut scoped, self.group_var_files.get(&group.name));
        }
        if self.is_implicit_localhost(host) {
            let local = RawVars::from([("ansible_connection".into(), Value::from("local"))]);
            scoped.overlay(&local, "(implicit localhost)");
        }
        for (at, vars) in self.host_vars.get(host).into_iter().flatten() {
            scoped.overlay(vars, at);
        }
        self.overlay_files(&mut scoped, self.host_var_files.get(host));
        for extra in &self.extra_vars {
            match extra {
                ExtraVars::Inline(vars) => scoped.overlay(vars, COMMAND_LINE),
                ExtraVars::File(index) => self.overlay_files(&mut scoped, Some(&vec![*index])),
            }
        }
        scoped
            .values
            .insert("inventory_hostname".into(), Value::from(host));
        let values = std::mem::take(&mut scoped.values);
        let (values, unresolved) =
            crate::template::resolve_vars(values, &self.magic_vars(host, &groups));
        scoped.values = values;
        scoped.unresolved = unresolved
            .into_iter()
            .map(|(key, why)| (key, format!("host {host}: {why}")))
            .collect();
        scoped
    }

    /// The magic variables Ansible gives a host's templates that csdeploy
    /// gives too (besides `inventory_hostname`, one of its variables).
    fn magic_vars(&self, host: &str, groups: &[&Group]) -> vars::Vars {
        let mut group_names: Vec<&str> = groups
            .iter()
            .map(|g| g.name.as_str())
            .filter(|g| !["all", "ungrouped"].contains(g))
            .collect();
        group_names.sort_unstable();
        let file = self.host_files.get(host).unwrap_or(&self.file);
        let file = std::path::absolute(file).unwrap_or_else(|_| PathBuf::from(file));
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut magic = vars::Vars::new();
        magic.insert(
            "inventory_hostname_short".into(),
            Value::from(host.split('.').next().unwrap_or(host)),
        );
        magic.insert("group_names".into(), Value::from(group_names));
        magic.insert(
            "inventory_file".into(),
            Value::from(file.display().to_string()),
        );
        magic.insert(
            "inventory_dir".into(),
            Value::from(dir.display().to_string()),
        );
        magic
    }
}

/// Starts and ends the index of another file of an inventory directory in
/// a key path: no key path of an inventory holds it.
const SOURCE_MARK: char = '\u{1}';

/// The inventory files of `dir`, as Ansible's `InventoryManager.parse_source`
/// walks a directory: sorted, recursively, skipping what its `IGNORED`
/// pattern skips with the default settings.
fn inventory_dir_files(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    const IGNORED_EXTENSIONS: &[&str] = &[
        ".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg",
        ".retry",
    ];
    let read = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
        .map_err(read)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(read)?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in names {
        let text = name.to_string_lossy();
        if text.starts_with('.')
            || ["host_vars", "group_vars", "vars_plugins"].contains(&text.as_ref())
            || IGNORED_EXTENSIONS.iter().any(|ext| text.ends_with(ext))
        {
            continue;
        }
        let path = dir.join(&name);
        let metadata = std::fs::metadata(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        if metadata.is_dir() {
            inventory_dir_files(&path, found)?;
        } else if metadata.permissions().mode() & 0o111 != 0 {
            return Err(Error::Invalid {
                file: path.display().to_string(),
                key: "(inventory)".into(),
                message: "an executable file in an inventory directory is a dynamic inventory \
                          script to Ansible, which runs it: csdeploy does not run inventory \
                          scripts. Save its output (`ansible-inventory -i FILE --list --yaml`) \
                          as a .yml file, or clear the executable bit (chmod -x) of a static file"
                    .into(),
            });
        } else if text.ends_with(".toml") {
            return Err(Error::Invalid {
                file: path.display().to_string(),
                key: "(inventory)".into(),
                message: "csdeploy does not read TOML inventories: write it in YAML or INI".into(),
            });
        } else {
            found.push(path);
        }
    }
    Ok(())
}

/// Starts and ends the index of a `group_vars/`/`host_vars/` file in an
/// origin: no key path of an inventory holds it (names with control
/// characters are refused).
const VAR_FILE_MARK: char = '\0';

/// The files of a `group_vars/NAME/` directory, as Ansible's `_get_dir_files`
/// lists them: sorted, hidden files and `~` backups skipped, subdirectories
/// (without an extension) read in place.
fn vars_dir_files(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let read = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(read)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .map_err(read)?;
    names.sort();
    for name in names {
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        let path = dir.join(&name);
        let ext = Path::new(&name)
            .extension()
            .map(|e| e.to_string_lossy().into_owned());
        if path.is_dir() && ext.is_none() {
            vars_dir_files(&path, found)?;
        } else if path.is_file()
            && ext
                .as_deref()
                .is_none_or(|e| ["yml", "yaml", "json"].contains(&e))
        {
            found.push(path);
        }
    }
    Ok(())
}

/// The hosts a host key names, and the port it gives them, as Ansible's
/// `_expand_hostpattern` reads it: `name:port` (`[v6addr]:port`) where what
/// precedes the port is a host name or an address, then `[a:b]` and
/// `[a:b:step]` ranges, numeric (with leading zeros, kept) or of letters.
fn host_pattern(key: &str) -> std::result::Result<(Vec<String>, Option<u16>), String> {
    let (pattern, port) = split_port(key);
    let names = if pattern.contains('[') {
        expand_range(pattern)?
    } else {
        vec![pattern.to_string()]
    };
    Ok((names, port))
}

fn split_port(key: &str) -> (&str, Option<u16>) {
    let Some((address, port)) = key.rsplit_once(':') else {
        return (key, None);
    };
    let Ok(port) = port.parse::<u16>() else {
        return (key, None);
    };
    if !port_digits(key) {
        return (key, None);
    }
    if let Some(v6) = address.strip_prefix('[').and_then(|a| a.strip_suffix(']'))
        && v6.contains(':')
        && v6
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    {
        return (v6, Some(port));
    }
    // A `:` outside brackets is an IPv6 address's, not a port's.
    let mut depth = 0i32;
    for c in address.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => return (key, None),
            c if depth == 0 && !(c.is_ascii_alphanumeric() || "._-".contains(c)) => {
                return (key, None);
            }
            _ => {}
        }
    }
    if address.is_empty() || depth != 0 {
        return (key, None);
    }
    (address, Some(port))
}

fn port_digits(key: &str) -> bool {
    key.rsplit(':')
        .next()
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Ansible's `expand_hostname_range`: the first `[...]` expanded, then the
/// rest of each name, recursively.
fn expand_range(pattern: &str) -> std::result::Result<Vec<String>, String> {
    let bad = |why: &str| format!("host range in `{pattern}`: {why}");
    let (head, rest) = pattern.split_once('[').unwrap_or((pattern, ""));
    let (range, tail) = rest.split_once(']').ok_or_else(|| bad("`[` without `]`"))?;
    let bounds: Vec<&str> = range.split(':').collect();
    if !(2..=3).contains(&bounds.len()) {
        return Err(bad("a range is begin:end or begin:end:step"));
    }
    let begin = if bounds[0].is_empty() { "0" } else { bounds[0] };
    let end = bounds[1];
    if end.is_empty() {
        return Err(bad("a range must give its end"));
    }
    let step: usize = match bounds.get(2) {
        None => 1,
        Some(step) => step
            .parse()
            .ok()
            .filter(|&s| s > 0)
            .ok_or_else(|| bad("the step must be a positive whole number"))?,
    };
    let width = if begin.len() > 1 && begin.starts_with('0') {
        if begin.len() != end.len() {
            return Err(bad("begin and end must have the same width"));
        }
        begin.len()
    } else {
        0
    };
    let letter = |s: &str| {
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii_alphabetic() => Some(c),
            _ => None,
        }
    };
    // string.ascii_letters: a-z, then A-Z.
    const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let items: Vec<String> = match (letter(begin), letter(end)) {
        (Some(b), Some(e)) => {
            let (b, e) = (LETTERS.find(b).unwrap_or(0), LETTERS.find(e).unwrap_or(0));
            if b > e {
                return Err(bad("begin must not come after end"));
            }
            LETTERS[b..=e]
                .chars()
                .step_by(step)
                .map(String::from)
                .collect()
        }
        _ => {
            let number = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| bad(&format!("`{s}` is neither a number nor one letter")))
            };
            let (b, e) = (number(begin)?, number(end)?);
            if e.saturating_sub(b) / step as u64 > 100_000 {
                return Err(bad("more than 100000 hosts"));
            }
            (b..=e)
                .step_by(step)
                .map(|n| format!("{n:0width$}"))
                .collect()
        }
    };
    let mut names = Vec::new();
    for item in items {
        let name = format!("{head}{item}{tail}");
        if name.contains('[') {
            names.extend(expand_range(&name)?);
        } else {
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const INVENTORY: &str = r#"
all:
  vars:
    max_sessions: 5
    color: all
  hosts:
    local:
      ansible_connection: local
  children:
    lxc:
      vars:
        color: lxc
      hosts:
        lxc122:
          ansible_host: lxc122
          max_sessions: 3
      children:
        deep:
          vars:
            color: deep
          hosts:
            lxc123:
"#;

    #[test]
    fn host_vars_win_over_deeper_groups_over_all() {
        let inv = Inventory::parse("h.yml", INVENTORY).unwrap();
        assert_eq!(inv.hosts, ["local", "lxc122", "lxc123"]);
        let v = inv.vars_for("lxc122");
        assert_eq!(v.values["max_sessions"], 3);
        assert_eq!(v.values["color"], "lxc");
        assert_eq!(
            v.origin("max_sessions"),
            "all.children.lxc.hosts.lxc122.max_sessions"
        );
        let v = inv.vars_for("lxc123");
        assert_eq!(v.values["color"], "deep");
        assert_eq!(v.values["max_sessions"], 5);
        assert_eq!(inv.vars_for("local").values["claude_home"], "~/.claude");
        assert!(inv.group_contains("lxc", "lxc123"));
        assert!(!inv.group_contains("deep", "lxc122"));
    }

    #[test]
    fn ungrouped_depth_and_priority_follow_ansible() {
        let inv = Inventory::parse(
            "h.yml",
            concat!(
                "ungrouped:\n  hosts:\n    mail:\n    web1:\n",
                "web:\n  vars: {color: web, ansible_group_priority: 5}\n  hosts:\n    web1:\n",
                "east:\n  vars: {color: east}\n  hosts:\n    web1:\n",
                "prod:\n  children:\n    east:\n",
                "all:\n  hosts:\n    lone:\n",
            ),
        )
        .unwrap();
        // In a group of its own, a host leaves `ungrouped`; in none, it joins it.
        assert_eq!(inv.groups["ungrouped"].hosts, ["mail", "lone"]);
        // A group another group holds is not a child of `all`.
        assert_eq!(inv.groups["all"].children, ["ungrouped", "web", "prod"]);
        assert_eq!(inv.groups["east"].depth, 2);
        // east is deeper, so it wins over web whatever web's priority.
        assert_eq!(inv.vars_for("web1").values["color"], "east");
        assert!(
            !inv.groups["web"]
                .vars
                .contains_key("ansible_group_priority")
        );
        assert_eq!(inv.groups["web"].priority, 5);
    }

    #[test]
    fn host_keys_expand_ranges_and_give_ports() {
        let names = |key: &str| host_pattern(key).unwrap();
        assert_eq!(
            names("www[01:05:2].x"),
            (
                vec!["www01.x".into(), "www03.x".into(), "www05.x".into()],
                None
            )
        );
        assert_eq!(names("[y:B]").0, ["y", "z", "A", "B"]);
        assert_eq!(names("r[:1]n[a:b]").0, ["r0na", "r0nb", "r1na", "r1nb"]);
        assert_eq!(
            names("example.com:2222"),
            (vec!["example.com".into()], Some(2222))
        );
        assert_eq!(names("[::1]:22"), (vec!["::1".into()], Some(22)));
        assert_eq!(names("fe80::1").0, ["fe80::1"]);
        assert_eq!(names("my laptop:22").0, ["my laptop:22"]);
        for (key, why) in [
            ("w[01:9]", "same width"),
            ("w[1:2:0]", "step"),
            ("w[1:]", "end"),
            ("w[1:2", "without `]`"),
            ("w[c:a]", "after end"),
            ("w[1:b]", "neither a number"),
            ("w[0:9999999]", "100000"),
        ] {
            let err = host_pattern(key).unwrap_err();
            assert!(err.contains(why) && err.contains(key), "{key}: {err}");
        }
        let err = Inventory::parse("h.yml", "all:\n  hosts:\n    a[1:2:x]:\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("h.yml:3:5: all.hosts.a[1:2:x]: host range"),
            "{err}"
        );
    }

    #[test]
    fn unknown_group_key_names_line() {
        let err =
            Inventory::parse("h.yml", "all:\n  hosts:\n    a:\n  child:\n    b:\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("h.yml:4:3: all: unknown field `child`"),
            "{text}"
        );
    }

    #[test]
    fn empty_inventory_is_an_error() {
        assert!(Inventory::parse("h.yml", "").is_err());
        assert!(Inventory::parse("h.yml", "all:\n").is_err());
    }

    #[test]
    fn merge_keys_share_vars_and_explicit_ones_win() {
        let inv = Inventory::parse(
            "h.yml",
            concat!(
                "all:\n",
                "  hosts:\n",
                "    web1: &common {ansible_port: 2222, max_sessions: 2}\n",
                "    web2: {<<: *common, ansible_user: deploy}\n",
                "    web3:\n",
                "      <<: [{max_sessions: 7}, *common]\n",
                "      ansible_port: 2200\n",
            ),
        )
        .unwrap();
        assert_eq!(inv.hosts, ["web1", "web2", "web3"]);
        let v = inv.vars_for("web2");
        assert_eq!(v.values["ansible_port"], 2222);
        assert_eq!(v.values["max_sessions"], 2);
        assert_eq!(v.values["ansible_user"], "deploy");
        assert!(!v.values.contains_key("<<"), "{:?}", v.values);
        // The first merged mapping wins over later ones; the host's own key over both.
        let v = inv.vars_for("web3");
        assert_eq!(v.values["max_sessions"], 7);
        assert_eq!(v.values["ansible_port"], 2200);
        // A merged-in variable is placed where the anchored mapping has it.
        let at = inv.locations.find("all.hosts.web2.ansible_port");
        assert_eq!((at.line, at.column), (3, 20));
    }

    #[test]
    fn yaml_1_1_scalars_read_as_ansible_reads_them() {
        let inv = Inventory::parse(
            "h.yml",
            "all:\n  hosts:\n    web1: {ansible_become: yes, strict: off, y: n, umask: 0022, port: 0x50}\n",
        )
        .unwrap();
        let v = inv.vars_for("web1").values;
        let read = ["ansible_become", "strict", "y", "umask", "port"].map(|k| v[k].clone());
        assert_eq!(
            read,
            [json!(true), json!(false), json!("n"), json!(18), json!(80)]
        );
    }

    #[test]
    fn a_host_listed_twice_is_an_error() {
        let err = Inventory::parse(
            "h.yml",
            "all:\n  hosts:\n    web1:\n    web2:\n    web1:\n      ansible_port: 2222\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "h.yml:5:5: all.hosts.web1: duplicate key `web1` (first at line 3)"
        );
        let err = Inventory::parse(
            "h.yml",
            "all:\n  vars:\n    max_sessions: 3\n    color: red\n    max_sessions: 4\n  hosts:\n    a:\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "h.yml:5:5: all.vars.max_sessions: duplicate key `max_sessions` (first at line 3)"
        );
    }
}
