//! A host's connection settings, resolved and validated from its variables.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::vars::{PER_SESSION_STATE, Scoped, Vars};

/// The variables that name what a new session shares with `claude_home`:
/// names directly in it, space-separated, written into `session.conf`.
pub const INHERIT_KEYS: [&str; 2] = ["inherit_copy", "inherit_link"];

/// Why `key`'s `value` may not be deployed, if it may not: it names state
/// Claude Code writes for each session itself ([`PER_SESSION_STATE`]), or
/// something that is not a name directly in `claude_home`. A value that is
/// not text is left to the type checks.
pub fn inherit_refusal(key: &str, value: &Value) -> Option<String> {
    let text = value.as_str()?;
    for name in text.split_whitespace() {
        if PER_SESSION_STATE.contains(&name.trim_end_matches('/')) {
            return Some(format!(
                "{key} names `{name}`, which is per-session state Claude Code writes for itself \
                 in each session's directory: shared, sessions would mix their histories, \
                 transcripts or logins, so csdeploy never shares it. Remove `{name}` from {key} \
                 (never shared: {})",
                PER_SESSION_STATE.join(" ")
            ));
        }
        if name.contains('/') || name == "." || name == ".." {
            return Some(format!(
                "{key} names `{name}`, which is not a name directly in claude_home: \
                 write the bare name, without `/` or `..` (e.g. `agents`, not `agents/x` or `/home/me/agents`)"
            ));
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Local,
    Ssh(SshTarget),
    /// An LXC container on this machine, entered with `lxc-attach -n NAME`
    /// (`ansible_connection: lxc`, as community.general.lxc).
    Lxc {
        container: String,
    },
    /// A Proxmox VE container, entered with `pct exec VMID --` on the node
    /// reached by ssh (community.proxmox.proxmox_pct_remote).
    Pct {
        node: SshTarget,
        vmid: u64,
    },
}

/// Who csdeploy runs as on the host when it is not the login (or attach)
/// user: `ansible_become: true` with `ansible_become_user` (default root)
/// and `ansible_become_method` (default sudo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Become {
    pub method: BecomeMethod,
    pub user: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BecomeMethod {
    /// `sudo -n -H -u USER -- /bin/sh -c SCRIPT ARGV`: never prompts
    /// (SCRIPT: `transport::wrap::BECOME_SCRIPT`).
    Sudo,
    /// `su -s /bin/sh -c SCRIPT -- USER ARGV`: for a root login, where su
    /// asks for no password (a container without sudo).
    Su,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SshTarget {
    /// What ssh connects to; the user's ~/.ssh/config may resolve it further.
    pub host: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub key_file: Option<String>,
    /// ssh_config lines from `ansible_ssh_args`, `ansible_ssh_common_args`
    /// and `ansible_ssh_extra_args`, in that order (see [`crate::ssh_args`]).
    pub ssh_options: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub connection: Connection,
    /// Run every command as another user (`ansible_become`).
    pub become_: Option<Become>,
    /// Exported for every command csdeploy runs there (Ansible's `environment`).
    pub environment: Vec<(String, String)>,
    /// The interpreter that runs csdeploy's agent (`ansible_python_interpreter`);
    /// `None` means discover it on the host.
    pub python: Option<String>,
    pub vars: Vars,
}

impl Host {
    pub fn resolve(inventory: &Inventory, name: &str) -> Result<Host> {
        let scoped = inventory.vars_for(name);
        let check = Checker {
            inventory,
            scoped: &scoped,
        };
        if name
            .chars()
            .any(|c| c.is_control() || LINE_BREAKS.contains(&c))
        {
            return Err(Error::Invalid {
                file: inventory.file.clone(),
                key: name.escape_debug().to_string(),
                message: "a host name must not hold control characters (a newline would forge \
                          lines in every report)"
                    .into(),
            });
        }
        check.unsupported()?;
        let ssh_target = || -> Result<SshTarget> {
            // Ansible puts ansible_ssh_args before its own `-o Port`/`-o User`
            // (and the common and extra args after them); ssh takes the first.
            let (port_set, user_set) = check.ssh_args_set()?;
            Ok(SshTarget {
                host: check.destination(name)?,
                port: if port_set { None } else { check.port()? },
                user: if user_set {
                    None
                } else {
                    check.string(check.set_one(&["ansible_ssh_user", "ansible_user"]))?
                },
                key_file: check.string(
                    check.set_one(&["ansible_ssh_private_key_file", "ansible_private_key_file"]),
                )?,
                ssh_options: check.ssh_options(name)?,
            })
        };
        let connection = match check.string("ansible_connection")?.as_deref() {
            None | Some("ssh") => Connection::Ssh(ssh_target()?),
            Some("local") => Connection::Local,
            Some("lxc" | "community.general.lxc") => Connection::Lxc {
                container: check.container(name)?,
            },
            Some(
                "pct"
                | "proxmox_pct_remote"
                | "community.proxmox.proxmox_pct_remote"
                | "community.general.proxmox_pct_remote",
            ) => {
                let node = ssh_target()?;
                check.node_become_method()?;
                Connection::Pct {
                    vmid: check.vmid()?,
                    node,
                }
            }
            Some(other) => {
                return Err(check.error(
                    "ansible_connection",
                    format!(
                        "unsupported connection `{other}` (expected ssh, local, lxc \
                         (community.general.lxc) or pct (community.proxmox.proxmox_pct_remote))"
                    ),
                ));
            }
        };
        let become_ = check.become_()?;
        check.session_settings()?;
        Ok(Host {
            name: name.to_string(),
            connection,
            become_,
            environment: check.environment()?,
            python: check
                .string("ansible_python_interpreter")?
                .filter(|p| p != "auto"),
            vars: scoped.values.clone(),
        })
    }

    /// Refuses a host whose inventory variables share what sessions must
    /// keep to themselves (see [`inherit_refusal`]), naming where it was set.
    /// Only a deployment asks: `verify` runs with such an inventory, and fails it.
    pub fn check_inherit_policy(inventory: &Inventory, name: &str) -> Result<()> {
        let scoped = inventory.vars_for(name);
        let check = Checker {
            inventory,
            scoped: &scoped,
        };
        for key in INHERIT_KEYS {
            if let Some(message) = scoped.values.get(key).and_then(|v| inherit_refusal(key, v)) {
                return Err(check.error(key, message));
            }
        }
        Ok(())
    }
}

/// The variables csdeploy reads to connect (see [`Host::resolve`]).
const CONNECTION_VARS: &[&str] = &[
    "ansible_connection",
    "ansible_host",
    "ansible_ssh_host",
    "ansible_port",
    "ansible_ssh_port",
    "ansible_user",
    "ansible_ssh_user",
    "ansible_ssh_private_key_file",
    "ansible_private_key_file",
    "ansible_python_interpreter",
    "ansible_lxc_host",
    "proxmox_vmid",
    "proxmox_become_method",
    "ansible_become",
    "ansible_become_user",
    "ansible_become_method",
    "ansible_ssh_args",
    "ansible_ssh_common_args",
    "ansible_ssh_extra_args",
];

/// The variables csdeploy writes into the host's `session.conf`.
const SESSION_VARS: &[&str] = &[
    "claude_home",
    "max_sessions",
    "inherit_copy",
    "inherit_link",
];

/// Why csdeploy refuses the Ansible variable `key` when it is set (true, or
/// not empty), if it does: Ansible would act on it and csdeploy cannot.
/// The ssh options matter only to an ssh connection.
fn unsupported_var(key: &str, local: bool) -> Option<String> {
    const PASSWORDS: &[&str] = &[
        "ansible_password",
        "ansible_ssh_pass",
        "ansible_ssh_password",
    ];
    const SSH_OPTIONS: &[&str] = &["ansible_ssh_executable"];
    if PASSWORDS.contains(&key) {
        return Some(format!(
            "csdeploy never types an ssh password (Ansible would send {key}): \
             log in with a key (ansible_ssh_private_key_file, or ssh-agent) and remove {key}"
        ));
    }
    const BECOME_PASSWORDS: &[&str] = &[
        "ansible_become_password",
        "ansible_become_pass",
        "ansible_sudo_pass",
        "ansible_sudo_password",
        "ansible_su_pass",
        "ansible_su_password",
    ];
    if BECOME_PASSWORDS.contains(&key) {
        return Some(format!(
            "csdeploy never types a password for sudo or su (Ansible would send {key}): \
             let the login user become the other one without a password (a NOPASSWD rule in \
             sudoers, or log in as root), and remove {key}"
        ));
    }
    if ["ansible_become_exe", "ansible_become_flags"].contains(&key) {
        return Some(format!(
            "csdeploy runs `sudo -n -H -u USER --` or `su -s /bin/sh -c ... USER` itself and \
             cannot honour {key} (Ansible would): remove {key}"
        ));
    }
    let legacy = ["ansible_sudo", "ansible_su"];
    if legacy
        .iter()
        .any(|b| key == *b || key.starts_with(&format!("{b}_")))
    {
        return Some(format!(
            "{key} is Ansible's old name for privilege escalation, which csdeploy does not read: \
             write ansible_become: true, ansible_become_user and ansible_become_method (sudo or su) \
             instead, and remove {key}"
        ));
    }
    if SSH_OPTIONS.contains(&key) && !local {
        return Some(format!(
            "csdeploy does not pass {key} to ssh (Ansible would): put these options in a \
             `Host` block of your ssh config (~/.ssh/config, or --ssh-config FILE) and remove {key}"
        ));
    }
    None
}

/// The `ansible_*` variables Ansible itself reads from an inventory (its
/// behavioral parameters, their legacy names, the settings of the ssh,
/// local and other core connections, interpreters) or sets (magic
/// variables): any other `ansible_*` name is most likely a typo.
const ANSIBLE_VARS: &[&str] = &[
    "ansible_connection",
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_password",
    "ansible_ssh_host",
    "ansible_ssh_port",
    "ansible_ssh_user",
    "ansible_ssh_pass",
    "ansible_ssh_password",
    "ansible_ssh_private_key_file",
    "ansible_private_key_file",
    "ansible_ssh_common_args",
    "ansible_ssh_extra_args",
    "ansible_sftp_extra_args",
    "ansible_scp_extra_args",
    "ansible_ssh_args",
    "ansible_ssh_pipelining",
    "ansible_pipelining",
    "ansible_ssh_executable",
    "ansible_ssh_retries",
    "ansible_ssh_timeout",
    "ansible_timeout",
    "ansible_ssh_transfer_method",
    "ansible_scp_if_ssh",
    "ansible_sftp_batch_mode",
    "ansible_ssh_use_tty",
    "ansible_host_key_checking",
    "ansible_ssh_host_key_checking",
    "ansible_ssh_control_path",
    "ansible_control_path",
    "ansible_control_path_dir",
    "ansible_ssh_control_path_dir",
    "ansible_ssh_verbosity",
    "ansible_ssh_password_mechanism",
    "ansible_ssh_private_key",
    "ansible_ssh_private_key_passphrase",
    "ansible_become",
    "ansible_become_method",
    "ansible_become_user",
    "ansible_become_password",
    "ansible_become_pass",
    "ansible_become_exe",
    "ansible_become_flags",
    "ansible_sudo",
    "ansible_sudo_user",
    "ansible_sudo_pass",
    "ansible_sudo_password",
    "ansible_sudo_exe",
    "ansible_sudo_flags",
    "ansible_su",
    "ansible_su_user",
    "ansible_su_pass",
    "ansible_su_password",
    "ansible_su_exe",
    "ansible_su_flags",
    "ansible_shell_type",
    "ansible_shell_executable",
    "ansible_python_interpreter",
    "ansible_interpreter_python_fallback",
    "ansible_network_os",
    "ansible_group_priority",
    "ansible_remote_tmp",
    "ansible_async_dir",
    "ansible_keep_remote_files",
    "ansible_module_compression",
    "ansible_facts",
    "ansible_check_mode",
    "ansible_diff_mode",
    "ansible_forks",
    "ansible_inventory_sources",
    "ansible_limit",
    "ansible_play_batch",
    "ansible_play_hosts",
    "ansible_play_hosts_all",
    "ansible_playbook_python",
    "ansible_run_tags",
    "ansible_skip_tags",
    "ansible_verbosity",
    "ansible_version",
    "ansible_local",
    "ansible_system_warnings",
    "ansible_deprecation_warnings",
];

/// Families of `ansible_*` variables other connection and become plugins
/// read, each under its own prefix: not checked name by name.
const ANSIBLE_VAR_FAMILIES: &[&str] = &[
    "ansible_winrm_",
    "ansible_psrp_",
    "ansible_httpapi_",
    "ansible_netconf_",
    "ansible_paramiko_",
    "ansible_libssh_",
    "ansible_docker_",
    "ansible_podman_",
    "ansible_kubectl_",
    "ansible_lxd_",
    "ansible_aws_ssm_",
    "ansible_network_",
    "ansible_persistent_",
    "ansible_terminal_",
    "ansible_cli_",
    "ansible_jail_",
    "ansible_lxc_",
    "ansible_chroot_",
    "ansible_zone_",
    "ansible_buildah_",
    "ansible_machinectl_",
];

/// For an `ansible_*` variable Ansible does not know, the known name
/// closest to it (a typo's likely intent); `None` for a known one or a
/// name outside `ansible_*`.
pub fn misspelled_ansible_var(key: &str) -> Option<&'static str> {
    if !key.starts_with("ansible_")
        || ANSIBLE_VARS.contains(&key)
        || ANSIBLE_VAR_FAMILIES.iter().any(|f| key.starts_with(f))
        || key.ends_with("_interpreter")
    {
        return None;
    }
    ANSIBLE_VARS
        .iter()
        .copied()
        .min_by_key(|known| strsim::damerau_levenshtein(key, known))
}

/// Everything Python's `str.splitlines()` breaks a line at: `session.conf`
/// is one `key=value` per line, and no value written into it may start
/// another line, whichever way the reader splits.
pub const LINE_BREAKS: [char; 10] = [
    '\n', '\r', '\u{0b}', '\u{0c}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{85}', '\u{2028}', '\u{2029}',
];

struct Checker<'a> {
    inventory: &'a Inventory,
    scoped: &'a Scoped,
}

impl Checker<'_> {
    fn error(&self, key: &str, message: String) -> Error {
        self.inventory.error(&self.scoped.origin(key), message)
    }

    /// Refuses what Ansible would act on and csdeploy does not, so that an
    /// inventory is never read differently in silence: a password to type,
    /// become settings it cannot honour, ssh options, Jinja in a connection
    /// setting.
    fn unsupported(&self) -> Result<()> {
        let local = matches!(self.scoped.values.get("ansible_connection"), Some(Value::String(c)) if c == "local");
        for (key, value) in &self.scoped.values {
            let set = match value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if let Some(why) = unsupported_var(key, local).filter(|_| set) {
                return Err(self.error(key, why));
            }
            let jinja = |v: &Value| {
                v.as_str()
                    .is_some_and(|s| s.contains("{{") || s.contains("{%"))
            };
            let read_here =
                CONNECTION_VARS.contains(&key.as_str()) || SESSION_VARS.contains(&key.as_str());
            let templated = match value {
                Value::Object(map) if key == "environment" => map.values().any(jinja),
                value => read_here && jinja(value),
            };
            if templated {
                let why = self
                    .scoped
                    .unresolved
                    .get(key)
                    .map_or("it holds Jinja", String::as_str);
                return Err(self.error(
                    key,
                    format!(
                        "{why}. csdeploy needs this value itself (a connection setting, the \
                         environment, a session setting) before it connects: write the value, \
                         or `{{{{ name }}}}` of a variable that holds it"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Of the names Ansible reads one setting from, the one it uses: the
    /// first that is set (not null) at any level. The ssh-specific legacy
    /// names come first, as in Ansible's ssh connection, where
    /// `ansible_ssh_host` on `all` wins over `ansible_host` on the host.
    fn set_one<'k>(&self, keys: &[&'k str]) -> &'k str {
        keys.iter()
            .copied()
            .find(|k| !matches!(self.scoped.values.get(*k), None | Some(Value::Null)))
            .unwrap_or(keys[keys.len() - 1])
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.scoped.values.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.contains('\0') => {
                Err(self.error(key, "must not contain a NUL byte".into()))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(self.error(key, format!("expected a string, found {other}"))),
        }
    }

    /// Where ssh connects: `ansible_host`, else the host's name. ssh reads a
    /// destination that starts with `-` as an option (`-oProxyCommand=...`),
    /// and the openssh crate cannot put `--` before it, so such a value is
    /// refused here; so are blanks and control characters, which no host
    /// name or ssh config alias holds.
    fn destination(&self, name: &str) -> Result<String> {
        let host_key = self.set_one(&["ansible_ssh_host", "ansible_host"]);
        let (value, key) = match self.string(host_key)? {
            Some(host) => (host, host_key),
            None => (name.to_string(), "inventory_hostname"),
        };
        let bad = if value.starts_with('-') {
            Some("starts with `-`, which ssh would read as an option")
        } else if value.is_empty() {
            Some("is empty")
        } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("holds blanks or control characters")
        } else {
            None
        };
        match bad {
            None => Ok(value),
            Some(why) if key != "inventory_hostname" => Err(self.error(
                key,
                format!(
                    "`{}` {why}: give a host name, an address or an ssh config alias",
                    value.escape_debug()
                ),
            )),
            Some(why) => Err(Error::Invalid {
                file: self.inventory.file.clone(),
                key: value.escape_debug().to_string(),
                message: format!("host name {why}: set `ansible_host` to where ssh should connect"),
            }),
        }
    }

    /// The LXC container `lxc-attach -n` enters: `ansible_lxc_host`, else
    /// `ansible_host`, else the host's name, as community.general.lxc reads
    /// it. lxc-attach would read a name starting with `-` as an option.
    fn container(&self, name: &str) -> Result<String> {
        let key = self.set_one(&["ansible_lxc_host", "ansible_host"]);
        let (value, key) = match self.string(key)? {
            Some(value) => (value, key),
            None => (name.to_string(), "inventory_hostname"),
        };
        let bad = value.is_empty()
            || value.starts_with('-')
            || value.contains('/')
            || value.chars().any(|c| c.is_whitespace() || c.is_control());
        match (bad, key) {
            (false, _) => Ok(value),
            (true, "inventory_hostname") => Err(Error::Invalid {
                file: self.inventory.file.clone(),
                key: value.escape_debug().to_string(),
                message: "host name is not an LXC container name: set `ansible_lxc_host` to \
                          the container's name (lxc-ls lists them)"
                    .into(),
            }),
            (true, key) => Err(self.error(
                key,
                format!(
                    "`{}` is not an LXC container name (no blanks, `/`, or leading `-`): \
                     give the name lxc-ls lists",
                    value.escape_debug()
                ),
            )),
        }
    }

    /// The Proxmox container id `pct exec` takes (`proxmox_vmid`), in the
    /// range Proxmox VE allows.
    fn vmid(&self) -> Result<u64> {
        let key = "proxmox_vmid";
        let value = self.scoped.values.get(key);
        let id = value.and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        });
        match (value, id) {
            (_, Some(id)) if (100..=999_999_999).contains(&id) => Ok(id),
            (None | Some(Value::Null), _) => Err(Error::Invalid {
                file: self.inventory.file.clone(),
                key: key.into(),
                message: "a pct (community.proxmox.proxmox_pct_remote) host needs the container's \
                          id: set proxmox_vmid (e.g. 122), and ansible_host to its Proxmox node"
                    .into(),
            }),
            (Some(value), _) => Err(self.error(
                key,
                format!("expected a Proxmox container id 100-999999999, found {value}"),
            )),
        }
    }

    /// How a non-root login runs `pct` on the node: only `sudo` (the
    /// plugin's default, `sudo -n` here) is supported.
    fn node_become_method(&self) -> Result<()> {
        match self.string("proxmox_become_method")?.as_deref() {
            None | Some("sudo") => Ok(()),
            Some(other) => Err(self.error(
                "proxmox_become_method",
                format!(
                    "csdeploy runs pct on the node with `sudo -n` when ansible_user is not root, \
                     not with `{other}`: use sudo (with a NOPASSWD rule for pct) or log in as root"
                ),
            )),
        }
    }

    /// `ansible_become` (a boolean as Ansible reads one) with its user
    /// (default root, as in Ansible) and method (sudo or su).
    fn become_(&self) -> Result<Option<Become>> {
        let key = "ansible_become";
        let on = match self.scoped.values.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) if n.as_u64() == Some(1) => true,
            Some(Value::Number(n)) if n.as_u64() == Some(0) => false,
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" | "on" | "1" | "true" | "t" => true,
                "n" | "no" | "off" | "0" | "false" | "f" | "" => false,
                _ => return Err(self.error(key, format!("expected true or false, found `{s}`"))),
            },
            Some(other) => {
                return Err(self.error(key, format!("expected true or false, found {other}")));
            }
        };
        if !on {
            return Ok(None);
        }
        let method = match self.string("ansible_become_method")?.as_deref() {
            None | Some("sudo") => BecomeMethod::Sudo,
            Some("su") => BecomeMethod::Su,
            Some(other) => {
                return Err(self.error(
                    "ansible_become_method",
                    format!(
                        "csdeploy becomes another user with sudo or su, not `{other}`: \
                         set ansible_become_method to sudo or su"
                    ),
                ));
            }
        };
        let user_key = "ansible_become_user";
        let user = self.string(user_key)?.unwrap_or_else(|| "root".into());
        if user.is_empty()
            || user.starts_with('-')
            || user
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == '/')
        {
            return Err(self.error(
                user_key,
                format!(
                    "`{}` is not a user name: give the name of the user who runs the sessions",
                    user.escape_debug()
                ),
            ));
        }
        Ok(Some(Become { method, user }))
    }

    /// Whether `ansible_ssh_args` itself sets the port and the user, which
    /// then win over `ansible_port` and `ansible_user`, as in Ansible.
    fn ssh_args_set(&self) -> Result<(bool, bool)> {
        let key = "ansible_ssh_args";
        let Some(text) = self.string(key)? else {
            return Ok((false, false));
        };
        let lines = crate::ssh_args::config_lines(&text).map_err(|why| self.error(key, why))?;
        let sets = |keyword: &str| {
            lines.iter().any(|line| {
                line.split([' ', '='])
                    .next()
                    .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
            })
        };
        Ok((sets("Port"), sets("User")))
    }

    /// The ssh options of the ssh args variables, as config lines, checked
    /// against the host's destination (see [`crate::ssh_args`]).
    fn ssh_options(&self, name: &str) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        let mut last = "ansible_ssh_args";
        for key in [
            "ansible_ssh_args",
            "ansible_ssh_common_args",
            "ansible_ssh_extra_args",
        ] {
            if let Some(text) = self.string(key)? {
                let more = crate::ssh_args::config_lines(&text)
                    .map_err(|why| self.error(key, format!("host {name}: {why}")))?;
                if !more.is_empty() {
                    last = key;
                }
                lines.extend(more);
            }
        }
        let destination = self.destination(name)?;
        match crate::ssh_args::destination_refusal(&destination, &lines) {
            Some(why) => Err(self.error(last, format!("host {name}: {why}"))),
            None => Ok(lines),
        }
    }

    fn port(&self) -> Result<Option<u16>> {
        let key = self.set_one(&["ansible_ssh_port", "ansible_port"]);
        match self.scoped.values.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                .and_then(|n| u16::try_from(n).ok())
                .filter(|&n| n > 0)
                .map(Some)
                .ok_or_else(|| {
                    self.error(
                        key,
                        format!("expected a port number 1-65535, found {value}"),
                    )
                }),
        }
    }

    /// The variables `push` writes into the host's `session.conf`, one line
    /// each, checked where they were set rather than on the host.
    fn session_settings(&self) -> Result<()> {
        if let Some(value) = self.scoped.values.get("max_sessions") {
            let whole = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if value.as_u64().is_none() && !value.as_str().is_some_and(|s| whole(s.trim())) {
                return Err(self.error(
                    "max_sessions",
                    format!("expected a whole number of sessions (0: no limit), found {value}"),
                ));
            }
        }
        for key in ["claude_home", "inherit_copy", "inherit_link"] {
            if self.string(key)?.is_some_and(|s| s.contains(LINE_BREAKS)) {
                return Err(self.error(
                    key,
                    "must be one line (no line or paragraph separator of any kind)".into(),
                ));
            }
        }
        Ok(())
    }

    /// `environment`, exported for every command csdeploy runs on the host
    /// and for the sessions its verification starts; refused where a name
    /// would make a shell, the dynamic loader or Python run something.
    fn environment(&self) -> Result<Vec<(String, String)>> {
        let map = match self.scoped.values.get("environment") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(self.error(
                    "environment",
                    format!("expected a map of variable names to values, found {other}"),
                ));
            }
        };
        let mut env = Vec::with_capacity(map.len());
        for (key, value) in map {
            let valid_name = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(self.error(
                    "environment",
                    format!("`{key}` is not a valid environment variable name"),
                ));
            }
            if let Some(why) = runs_code(key) {
                return Err(self.error(
                    "environment",
                    format!(
                        "`{key}` {why}: a value that would become code in every command csdeploy \
                         and the session tools run there. Remove it from environment (a setting \
                         for Claude Code itself belongs in its settings.json `env`)"
                    ),
                ));
            }
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => value.to_string(),
                other => {
                    return Err(self.error(
                        "environment",
                        format!("{key}: expected a string, found {other}"),
                    ));
                }
            };
            if text.contains('\0') {
                return Err(
                    self.error("environment", format!("{key}: must not contain a NUL byte"))
                );
            }
            env.push((key.clone(), text));
        }
        Ok(env)
    }
}

/// Why an `environment` variable named `key` is refused, if it is: it makes
/// what csdeploy starts on the host run a file or code it names.
fn runs_code(key: &str) -> Option<&'static str> {
    match key {
        "BASH_ENV" | "ENV" => Some("makes every shell run the file it names at its start"),
        "SHELLOPTS" | "BASHOPTS" | "PS4" | "PROMPT_COMMAND" => {
            Some("changes what bash runs (options, traces, prompts)")
        }
        "PYTHONPATH" | "PYTHONHOME" | "PYTHONSTARTUP" | "PYTHONUSERBASE" => {
            Some("makes python3 import or run files it names")
        }
        _ if key.starts_with("LD_") => Some("makes every program load the libraries it names"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str, name: &str) -> Result<Host> {
        Host::resolve(&Inventory::parse("h.yml", text).unwrap(), name)
    }

    #[test]
    fn a_destination_ssh_would_read_as_an_option_is_refused() {
        let err = host(
            "all:\n  hosts:\n    a:\n      ansible_host: \"-oProxyCommand=touch /tmp/x\"\n",
            "a",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("h.yml:4:") && err.contains("ansible_host") && err.contains("option"),
            "{err}"
        );
        let err = host(
            "all:\n  hosts:\n    \"-oProxyCommand=x\":\n",
            "-oProxyCommand=x",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("set `ansible_host`"), "{err}");
        let err = host("all:\n  hosts:\n    a:\n      ansible_host: \"h b\"\n", "a").unwrap_err();
        assert!(err.to_string().contains("blanks"), "{err}");
        // A local host needs no destination.
        assert!(
            host(
                "all:\n  hosts:\n    \"my laptop\": {ansible_connection: local}\n",
                "my laptop"
            )
            .is_ok()
        );
    }

    #[test]
    fn environment_that_would_run_files_is_refused_with_its_location() {
        for name in ["BASH_ENV", "ENV", "LD_PRELOAD", "PYTHONPATH", "PS4"] {
            let text = format!(
                "all:\n  hosts:\n    a:\n      ansible_connection: local\n      environment:\n        {name}: /tmp/x\n"
            );
            let err = host(&text, "a").unwrap_err().to_string();
            assert!(
                err.contains("h.yml:5:")
                    && err.contains(&format!("`{name}`"))
                    && err.contains("Remove it"),
                "{err}"
            );
        }
        let fine = "all:\n  hosts:\n    a:\n      ansible_connection: local\n      environment: {PATH: /usr/bin, NODE_EXTRA_CA_CERTS: /ca.pem, LANG: C.UTF-8}\n";
        assert_eq!(host(fine, "a").unwrap().environment.len(), 3);
    }

    #[test]
    fn legacy_ssh_names_win_as_in_ansibles_ssh_connection() {
        let text = concat!(
            "all:\n  vars:\n    ansible_ssh_host: via-all\n    ansible_ssh_user: ops\n",
            "  hosts:\n    a:\n      ansible_host: ignored\n      ansible_user: ignored\n",
            "      ansible_ssh_port: 2201\n      ansible_private_key_file: /k\n",
        );
        let Connection::Ssh(target) = host(text, "a").unwrap().connection else {
            panic!("not ssh");
        };
        let expected = SshTarget {
            host: "via-all".into(),
            port: Some(2201),
            user: Some("ops".into()),
            key_file: Some("/k".into()),
            ssh_options: Vec::new(),
        };
        assert_eq!(target, expected);
        let err = host("all:\n  hosts:\n    a:\n      ansible_ssh_port: x\n", "a").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("h.yml:4:7: all.hosts.a.ansible_ssh_port: expected a port"),
            "{err}"
        );
    }

    #[test]
    fn a_misspelled_ansible_var_names_the_closest_known_one() {
        assert_eq!(
            misspelled_ansible_var("ansible_conection"),
            Some("ansible_connection")
        );
        assert_eq!(
            misspelled_ansible_var("ansible_ssh_uesr"),
            Some("ansible_ssh_user")
        );
        assert_eq!(misspelled_ansible_var("ansible_hots"), Some("ansible_host"));
        for fine in [
            "ansible_user",
            "ansible_winrm_transport",
            "ansible_ruby_interpreter",
            "color",
        ] {
            assert_eq!(misspelled_ansible_var(fine), None, "{fine}");
        }
    }

    #[test]
    fn a_host_name_with_a_newline_is_refused() {
        let err = host(
            "all:\n  hosts:\n    \"a\\nok: forged\": {ansible_connection: local}\n",
            "a\nok: forged",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("control characters") && err.contains("a\\nok"),
            "{err}"
        );
    }

    #[test]
    fn ssh_settings_and_environment() {
        let h = host(
            "all:\n  hosts:\n    a:\n      ansible_host: 127.0.0.1\n      ansible_port: 2222\n      ansible_user: me\n      environment:\n        HOME: /tmp/a\n",
            "a",
        )
        .unwrap();
        assert_eq!(
            h.connection,
            Connection::Ssh(SshTarget {
                host: "127.0.0.1".into(),
                port: Some(2222),
                user: Some("me".into()),
                key_file: None,
                ssh_options: Vec::new(),
            })
        );
        assert_eq!(h.environment, [("HOME".to_string(), "/tmp/a".to_string())]);
    }

    #[test]
    fn bad_port_names_where_it_was_set() {
        let err = host(
            "all:\n  vars:\n    ansible_port: 99999\n  hosts:\n    a:\n",
            "a",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("h.yml:3:5: all.vars.ansible_port: expected a port"),
            "{err}"
        );
    }

    #[test]
    fn session_settings_are_checked_where_they_were_set() {
        for (value, fine) in [
            ("3", true),
            ("0", true),
            ("'12'", true),
            ("lots", false),
            ("-1", false),
            ("2.5", false),
            ("''", false),
        ] {
            let result = host(
                &format!("all:\n  hosts:\n    a:\n      max_sessions: {value}\n"),
                "a",
            );
            match result {
                Ok(_) => assert!(fine, "{value} was accepted"),
                Err(err) => {
                    assert!(!fine, "{value}: {err}");
                    assert!(
                        err.to_string().starts_with(
                            "h.yml:4:7: all.hosts.a.max_sessions: expected a whole number"
                        ),
                        "{err}"
                    );
                }
            }
        }
        let err = host(
            "all:\n  hosts:\n    a:\n      inherit_copy: \"a\\nmax_sessions=0\"\n",
            "a",
        )
        .unwrap_err();
        for separator in LINE_BREAKS {
            let text = format!(
                "all:\n  hosts:\n    a:\n      claude_home: \"/h\\u{:04X}max_sessions=0\"\n",
                separator as u32
            );
            let err = host(&text, "a").unwrap_err().to_string();
            assert!(
                err.contains("claude_home: must be one line"),
                "{separator:?}: {err}"
            );
        }
        assert!(
            err.to_string().contains("inherit_copy: must be one line"),
            "{err}"
        );
    }

    #[test]
    fn inherit_lists_never_share_per_session_state_or_leave_claude_home() {
        let check = |key: &str, value: &str| {
            let text = format!("all:\n  hosts:\n    a:\n      {key}: {value}\n");
            Host::check_inherit_policy(&Inventory::parse("h.yml", &text).unwrap(), "a")
        };
        for (key, value) in [
            ("inherit_link", "settings.json CLAUDE.md agents plugins"),
            ("inherit_copy", "''"),
            ("inherit_copy", "'keybindings.json  output-styles'"),
            ("inherit_link", ".claude.json.bak"),
        ] {
            assert!(check(key, value).is_ok(), "{key}: {value}");
        }
        for name in crate::vars::PER_SESSION_STATE {
            for key in INHERIT_KEYS {
                let err = check(key, &format!("'settings.json {name}'"))
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.starts_with(&format!(
                        "h.yml:4:7: all.hosts.a.{key}: {key} names `{name}`"
                    )),
                    "{err}"
                );
                assert!(
                    err.contains("per-session state Claude Code writes for itself"),
                    "{err}"
                );
            }
        }
        let err = check("inherit_link", "projects/").unwrap_err().to_string();
        assert!(
            err.contains("`projects/`, which is per-session state"),
            "{err}"
        );
        for name in [
            "agents/x",
            "..",
            ".",
            "/home/me/agents",
            "../.claude.json",
            "a/../b",
        ] {
            let err = check("inherit_copy", &format!("'CLAUDE.md {name}'"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!(
                    "h.yml:4:7: all.hosts.a.inherit_copy: inherit_copy names `{name}`, which is not a name directly in claude_home"
                )),
                "{err}"
            );
        }
        // Resolving a host (what `verify` and `inventory` do) does not refuse it.
        let text = "all:\n  vars:\n    inherit_link: projects\n  hosts:\n    a:\n";
        let inventory = Inventory::parse("h.yml", text).unwrap();
        assert!(Host::resolve(&inventory, "a").is_ok());
        let err = Host::check_inherit_policy(&inventory, "a").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("h.yml:3:5: all.vars.inherit_link:"),
            "{err}"
        );
    }

    #[test]
    fn lxc_and_pct_connections_as_ansible_users_write_them() {
        let h = host(
            "all:\n  hosts:\n    web: {ansible_connection: lxc}\n    db: {ansible_connection: community.general.lxc, ansible_host: h, ansible_lxc_host: c2}\n",
            "web",
        )
        .unwrap();
        assert_eq!(
            h.connection,
            Connection::Lxc {
                container: "web".into()
            }
        );
        let text = "all:\n  hosts:\n    db: {ansible_connection: community.general.lxc, ansible_host: h, ansible_lxc_host: c2}\n";
        assert_eq!(
            host(text, "db").unwrap().connection,
            Connection::Lxc {
                container: "c2".into()
            }
        );
        for connection in ["community.proxmox.proxmox_pct_remote", "pct"] {
            let text = format!(
                "all:\n  hosts:\n    lxc122:\n      ansible_connection: {connection}\n      ansible_host: pve1\n      ansible_user: root\n      proxmox_vmid: 122\n"
            );
            let h = host(&text, "lxc122").unwrap();
            let Connection::Pct { node, vmid } = h.connection else {
                panic!("not pct: {:?}", h.connection);
            };
            assert_eq!(
                (node.host.as_str(), node.user.as_deref(), vmid),
                ("pve1", Some("root"), 122)
            );
        }
        let err = host("all:\n  hosts:\n    a: {ansible_connection: pct}\n", "a").unwrap_err();
        assert!(err.to_string().contains("set proxmox_vmid"), "{err}");
        let err = host(
            "all:\n  hosts:\n    a: {ansible_connection: pct, proxmox_vmid: 12}\n",
            "a",
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("h.yml:3:") && err.to_string().contains("100-999999999"),
            "{err}"
        );
        let err = host(
            "all:\n  hosts:\n    a: {ansible_connection: lxc, ansible_lxc_host: \"-n x\"}\n",
            "a",
        )
        .unwrap_err();
        assert!(err.to_string().contains("ansible_lxc_host"), "{err}");
        let err = host("all:\n  hosts:\n    a: {ansible_connection: docker}\n", "a").unwrap_err();
        assert!(
            err.to_string().contains("unsupported connection `docker`"),
            "{err}"
        );
    }

    #[test]
    fn become_is_read_as_ansible_reads_it_and_passwords_are_refused() {
        let become_of = |vars: &str| {
            host(&format!("all:\n  hosts:\n    a: {{{vars}}}\n"), "a").map(|h| h.become_)
        };
        assert_eq!(become_of("ansible_become_user: x").unwrap(), None);
        assert_eq!(
            become_of("ansible_become: true").unwrap(),
            Some(Become {
                method: BecomeMethod::Sudo,
                user: "root".into()
            })
        );
        assert_eq!(
            become_of(
                "ansible_become: 'yes', ansible_become_user: claude, ansible_become_method: su"
            )
            .unwrap(),
            Some(Become {
                method: BecomeMethod::Su,
                user: "claude".into()
            })
        );
        assert_eq!(become_of("ansible_become: 'off'").unwrap(), None);
        for (vars, expected) in [
            ("ansible_become: maybe", "expected true or false"),
            (
                "ansible_become: true, ansible_become_method: doas",
                "sudo or su, not `doas`",
            ),
            (
                "ansible_become: true, ansible_become_user: '-x'",
                "is not a user name",
            ),
            (
                "ansible_become: true, ansible_become_password: s3cret",
                "never types a password",
            ),
            ("ansible_become_pass: s3cret", "never types a password"),
            (
                "ansible_become_flags: '-i'",
                "cannot honour ansible_become_flags",
            ),
            ("ansible_sudo: true", "old name"),
            ("ansible_su_user: x", "old name"),
        ] {
            let err = become_of(vars).unwrap_err().to_string();
            assert!(
                err.starts_with("h.yml:3:") && err.contains(expected),
                "{vars}: {err}"
            );
            assert!(!err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn bad_environment_name_is_rejected() {
        let err = host(
            "all:\n  hosts:\n    a:\n      environment:\n        'A B': x\n",
            "a",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("not a valid environment variable name"),
            "{err}"
        );
    }
}
