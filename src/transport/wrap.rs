//! The prefix put before every command's argv on a host, by either
//! transport: the way into a container, then the change of user, and the
//! proof, inside that same command, that both worked.
//!
//! | connection | prefix (then `become` or the marker, then `env K=V`, then the command) |
//! |---|---|
//! | `lxc` | `lxc-attach -n NAME --clear-env --` (on this machine, as community.general.lxc, which clears the environment too) |
//! | `pct` | over ssh to the node: `/bin/sh -c NODE_SCRIPT csdeploy-node VMID`, which runs `pct exec VMID --` by pct's path (as the Ansible plugin runs `/usr/sbin/pct`), or `lxc-attach -n VMID --` where the node has no `pct`; behind `sudo -n` when the node login is not root |
//! | `become` sudo | `sudo -n -H -u USER -- /bin/sh -c BECOME_SCRIPT` |
//! | `become` su | `su -s /bin/sh -c BECOME_SCRIPT -- USER` |
//! | no `become` | `/bin/sh -c ENTER_SCRIPT` (the marker alone) |
//!
//! Every value is an argv word of its own: the scripts are constants that
//! run their arguments as they are (`"$0" "$@"`), never text built from
//! them. BECOME_SCRIPT goes to the user's home, as an ssh login starts
//! there (the login user's directory, often root's 0700 one, is no place
//! for them).
//!
//! The last layer writes [`ENTERED`] on stdout before it `exec`s the
//! command; the transport's exchange reads it before anything else, and
//! sends nothing until then (a `su` never reads the agent as a password).
//! A stdout that ends first means a layer failed (a stopped container, no
//! `lxc-attach`, a sudo that wants a password): [`Wrap::explain`] turns
//! what the layers said into what to do, and the host is unreachable. So
//! entering costs no command of its own: a push through a container or
//! `become` runs the same one command a push over ssh runs, and
//! `remote_commands` counts every command that ran.

use crate::host::{Become, BecomeMethod, Connection, Host};

/// What the last layer writes before the command, proving every layer
/// before it worked.
pub const ENTERED: &[u8] = b"csdeploy-entered\n";

/// What runs as the user: in their home, the marker, then its arguments as
/// they are (`$0` is the program).
pub const BECOME_SCRIPT: &str =
    r#"cd "$HOME" 2>/dev/null || cd /; printf 'csdeploy-entered\n'; exec "$0" "$@""#;

/// The marker, then the arguments as they are: the last layer of a
/// container entered without `become`.
pub const ENTER_SCRIPT: &str = r#"printf 'csdeploy-entered\n'; exec "$0" "$@""#;

/// What a node without pct or lxc-attach says on stderr.
const NO_TOOL: &str = "csdeploy-node: neither pct nor lxc-attach here";

/// Runs on a Proxmox node as `sh -c NODE_SCRIPT csdeploy-node VMID
/// COMMAND...`: enters container VMID with the first of pct or lxc-attach
/// the node has, by its path (what a sudoers rule for a login other than
/// root names, and what sudo's secure_path need not hold), with `sudo -n`
/// unless the login is root.
const NODE_SCRIPT: &str = r#"vmid=$1; shift
for t in pct /usr/sbin/pct lxc-attach /usr/bin/lxc-attach; do
  if p=$(command -v "$t" 2>/dev/null); then
    case $p in
      */pct) set -- "$p" exec "$vmid" -- "$@" ;;
      *) set -- "$p" -n "$vmid" -- "$@" ;;
    esac
    if [ "$(id -u)" != 0 ]; then set -- sudo -n "$@"; fi
    exec "$@"
  fi
done
echo "csdeploy-node: neither pct nor lxc-attach here" >&2
exit 127"#;

/// A host's way in: the words before every command, and what each layer
/// is, to explain a failure.
#[derive(Debug, Clone)]
pub struct Wrap {
    pub prefix: Vec<String>,
    connection: Connection,
    become_: Option<Become>,
}

impl Wrap {
    /// `host`'s prefix; None when commands run as they are (ssh or local,
    /// no `become`).
    pub fn for_host(host: &Host) -> Option<Wrap> {
        let mut prefix = match &host.connection {
            Connection::Local | Connection::Ssh(_) => {
                host.become_.as_ref()?;
                Vec::new()
            }
            Connection::Lxc { container } => lxc_prefix(container),
            Connection::Pct { vmid, .. } => pct_prefix(*vmid),
        };
        match &host.become_ {
            Some(become_) => prefix.extend(become_prefix(become_)),
            None => prefix.extend(words(&["/bin/sh", "-c", ENTER_SCRIPT], [])),
        }
        Some(Wrap {
            prefix,
            connection: host.connection.clone(),
            become_: host.become_.clone(),
        })
    }

    /// A way into the LXC container `web` made of `prefix`, for tests of
    /// the exchange.
    #[cfg(test)]
    pub fn with_prefix(prefix: &[&str]) -> Wrap {
        Wrap {
            prefix: prefix.iter().map(|w| w.to_string()).collect(),
            connection: Connection::Lxc {
                container: "web".into(),
            },
            become_: None,
        }
    }

    /// Why the host could not be entered, and what to do, from the exit
    /// `code` of the chain and what its layers said on `stderr`.
    pub fn explain(&self, code: Option<i32>, stderr: &[u8]) -> String {
        let said = said(stderr);
        let exit = code.map_or("killed".to_string(), |c| format!("exit {c}"));
        // Which layer failed, by the tool that said so: each names itself.
        let by_become = self.become_.as_ref().filter(|b| {
            said.contains(match b.method {
                BecomeMethod::Sudo => "sudo:",
                BecomeMethod::Su => "su:",
            })
        });
        match &self.connection {
            Connection::Local | Connection::Ssh(_) => match &self.become_ {
                Some(b) => become_hint(b, &exit, &said),
                None => format!("cannot enter the host ({exit}: {said})"),
            },
            Connection::Lxc { container } => match by_become {
                Some(b) if !said.contains("lxc-attach") => become_hint(b, &exit, &said),
                _ => format!(
                    "cannot enter the LXC container `{container}` (lxc-attach, {exit}: \
                     {said}): it is stopped, or no container has that name here. \
                     `lxc-ls -f` lists them, `lxc-start -n {container}` starts it"
                ),
            },
            Connection::Pct { node, vmid } => {
                let host = &node.host;
                let login = node.user.as_deref().unwrap_or("the login user");
                // The node script decides by `id -u`; a login not named
                // here (ssh config's) may be anyone.
                let node_sudo = node.user.as_deref() != Some("root");
                if said.contains(NO_TOOL) {
                    return format!(
                        "the node {host} has neither pct nor lxc-attach ({exit}: {said}): point \
                         ansible_host at the Proxmox VE node that runs container {vmid}"
                    );
                }
                if node_sudo && said.contains("sudo:") && said.contains("password") {
                    let also = match by_become {
                        Some(b) if b.method == BecomeMethod::Sudo => {
                            " (or, in the container, the sudo that becomes the user wants one)"
                        }
                        _ => "",
                    };
                    return format!(
                        "sudo on the node {host} wants a password to run pct or lxc-attach{also} \
                         ({exit}: {said}): csdeploy never types one; allow {login} to run \
                         /usr/sbin/pct without one (a NOPASSWD sudoers rule, as the Ansible \
                         plugin needs) or log in as root"
                    );
                }
                match by_become {
                    Some(b) if !said.contains("lxc-attach") => become_hint(b, &exit, &said),
                    _ => format!(
                        "cannot enter container {vmid} on the node {host} (pct or lxc-attach, \
                         {exit}: {said}): it is stopped, or not on this node; `pct status \
                         {vmid}` says which, `pct start {vmid}` starts it (without pct: \
                         `lxc-info -n {vmid}`, `lxc-start -n {vmid}`)"
                    ),
                }
            }
        }
    }

    /// Why the first program of the prefix could not even start on this
    /// machine (`lxc`: no lxc-attach; `local`: no sudo or su).
    pub fn explain_spawn(&self, why: &str) -> String {
        match &self.connection {
            Connection::Lxc { container } => format!(
                "lxc-attach is not installed on this machine ({why}): csdeploy enters the \
                 container `{container}` with `lxc-attach -n {container}`; install LXC (Debian, \
                 Ubuntu: apt install lxc) or reach the container over ssh"
            ),
            _ => format!("cannot enter the host: {why}"),
        }
    }
}

fn become_hint(become_: &Become, exit: &str, said: &str) -> String {
    let user = &become_.user;
    match become_.method {
        BecomeMethod::Sudo => format!(
            "cannot become `{user}` with sudo ({exit}: {said}): csdeploy runs `sudo -n`, which \
             never asks for a password. Give the login user a NOPASSWD sudoers rule for {user}, \
             or log in as root; where root logs in and there is no sudo (many containers), set \
             ansible_become_method: su"
        ),
        BecomeMethod::Su => format!(
            "cannot become `{user}` with su ({exit}: {said}): su asks for a password unless \
             root runs it, and csdeploy never types one. Log in as root (ansible_user: root), \
             or use ansible_become_method: sudo with a NOPASSWD rule; check that the user \
             `{user}` exists there"
        ),
    }
}

/// The words that run a command as `become`'s user.
pub fn become_prefix(become_: &Become) -> Vec<String> {
    let user = become_.user.clone();
    match become_.method {
        BecomeMethod::Sudo => words(
            &["sudo", "-n", "-H", "-u"],
            [
                user,
                "--".into(),
                "/bin/sh".into(),
                "-c".into(),
                BECOME_SCRIPT.into(),
            ],
        ),
        BecomeMethod::Su => words(&["su", "-s", "/bin/sh", "-c", BECOME_SCRIPT, "--"], [user]),
    }
}

/// The words that run a command in the local LXC container `name`.
pub fn lxc_prefix(name: &str) -> Vec<String> {
    words(
        &["lxc-attach", "-n"],
        [name.into(), "--clear-env".into(), "--".into()],
    )
}

/// The words that run a command in container `vmid` on a Proxmox node:
/// the node picks `pct exec VMID --` or `lxc-attach -n VMID --` itself.
pub fn pct_prefix(vmid: u64) -> Vec<String> {
    words(
        &["/bin/sh", "-c", NODE_SCRIPT, "csdeploy-node"],
        [vmid.to_string()],
    )
}

fn words<const N: usize>(fixed: &[&str], values: [String; N]) -> Vec<String> {
    fixed.iter().map(|w| w.to_string()).chain(values).collect()
}

/// The end of what a tool wrote on stderr, on one line.
fn said(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    let mut tail: String = tail.chars().filter(|c| !c.is_control()).collect();
    if tail.len() > 600 {
        let mut cut = 600;
        while !tail.is_char_boundary(cut) {
            cut -= 1;
        }
        tail.truncate(cut);
        tail.push('…');
    }
    if tail.is_empty() {
        "nothing on stderr".into()
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::SshTarget;
    use crate::transport::RemoteCommand;
    use crate::vars::Vars;

    fn host(connection: Connection, become_: Option<Become>) -> Host {
        Host {
            name: "h".into(),
            connection,
            become_,
            environment: Vec::new(),
            python: None,
            vars: Vars::default(),
        }
    }

    fn node(user: Option<&str>) -> SshTarget {
        SshTarget {
            host: "pve".into(),
            port: None,
            user: user.map(str::to_string),
            key_file: None,
            ssh_options: Vec::new(),
        }
    }

    fn su(user: &str) -> Option<Become> {
        Some(Become {
            method: BecomeMethod::Su,
            user: user.into(),
        })
    }

    fn sudo(user: &str) -> Option<Become> {
        Some(Become {
            method: BecomeMethod::Sudo,
            user: user.into(),
        })
    }

    #[test]
    fn prefixes_are_the_tools_own_argument_forms() {
        assert_eq!(
            lxc_prefix("web"),
            ["lxc-attach", "-n", "web", "--clear-env", "--"]
        );
        assert_eq!(
            pct_prefix(122),
            ["/bin/sh", "-c", NODE_SCRIPT, "csdeploy-node", "122"]
        );
        assert_eq!(
            become_prefix(&sudo("claude").unwrap()),
            [
                "sudo",
                "-n",
                "-H",
                "-u",
                "claude",
                "--",
                "/bin/sh",
                "-c",
                BECOME_SCRIPT
            ]
        );
        assert_eq!(
            become_prefix(&su("claude").unwrap()),
            ["su", "-s", "/bin/sh", "-c", BECOME_SCRIPT, "--", "claude"]
        );
    }

    /// The last layer of every chain writes the marker: become's script,
    /// or the marker's own where there is no become.
    #[test]
    fn every_wrapped_chain_ends_in_a_layer_that_writes_the_marker() {
        let ssh = Connection::Ssh(node(None));
        assert!(Wrap::for_host(&host(ssh.clone(), None)).is_none());
        assert!(Wrap::for_host(&host(Connection::Local, None)).is_none());
        let lxc = Connection::Lxc {
            container: "web".into(),
        };
        let pct = Connection::Pct {
            node: node(None),
            vmid: 122,
        };
        for connection in [lxc.clone(), pct.clone()] {
            let wrap = Wrap::for_host(&host(connection, None)).unwrap();
            assert_eq!(
                wrap.prefix[wrap.prefix.len() - 3..],
                ["/bin/sh", "-c", ENTER_SCRIPT]
            );
        }
        for connection in [lxc, pct, ssh, Connection::Local] {
            let wrap = Wrap::for_host(&host(connection, su("claude"))).unwrap();
            assert_eq!(wrap.prefix.last().unwrap(), "claude");
            assert!(wrap.prefix.iter().any(|w| w == BECOME_SCRIPT));
        }
        for script in [BECOME_SCRIPT, ENTER_SCRIPT] {
            let marker = std::str::from_utf8(ENTERED).unwrap().replace('\n', "\\n");
            assert!(script.contains(&format!("printf '{marker}'")), "{script}");
        }
    }

    fn sh(
        script: &str,
        args: &[&str],
        home: &std::path::Path,
        path: &str,
    ) -> (Option<i32>, String, String) {
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .args(args)
            .env("HOME", home)
            .env("PATH", path)
            .current_dir("/tmp")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The constant scripts write the marker, then run their arguments as
    /// they are (BECOME_SCRIPT in HOME): a value holding quotes, `$()` or
    /// a leading `-` reaches the program unchanged; without a home, it
    /// runs in `/`.
    #[test]
    fn the_scripts_write_the_marker_then_run_the_arguments_unchanged() {
        let home = tempfile::tempdir().unwrap();
        let tricky = ["-I", "it's $(touch /tmp/x) \"q\"", "", "a\nb"];
        let show = r#"printf '[%s]' "$PWD" "$@""#;
        let mut args = vec!["sh", "-c", show, "x"];
        args.extend(tricky);
        let path = std::env::var("PATH").unwrap();
        let shown: String = tricky.iter().map(|a| format!("[{a}]")).collect();
        let entered = std::str::from_utf8(ENTERED).unwrap();
        let real = home.path().canonicalize().unwrap();
        let (_, out, _) = sh(BECOME_SCRIPT, &args, home.path(), &path);
        assert_eq!(out, format!("{entered}[{}]{shown}", real.display()));
        let (_, out, _) = sh(BECOME_SCRIPT, &args, &home.path().join("gone"), &path);
        assert_eq!(out, format!("{entered}[/]{shown}"));
        let (_, out, _) = sh(ENTER_SCRIPT, &args, home.path(), &path);
        assert_eq!(out, format!("{entered}[/tmp]{shown}"));
    }

    /// The node picks its tool by path, pct first, in pct's own argument
    /// form, and passes the vmid and command as words; with neither, it
    /// says so and writes no marker.
    #[test]
    fn the_node_script_enters_with_pct_else_lxc_attach() {
        use std::os::unix::fs::PermissionsExt;
        let bin = tempfile::tempdir().unwrap();
        let tool = |name: &str| {
            let path = bin.path().join(name);
            std::fs::write(&path, "#!/bin/sh\nprintf '[%s]' \"$0\" \"$@\"\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        let sudo = if uid() == 0 { "" } else { "[sudo]" };
        let path = format!("{}:/usr/bin:/bin", bin.path().display());
        let lxc = tool("lxc-attach");
        let (code, out, _) = sh(
            NODE_SCRIPT,
            &["csdeploy-node", "122", "cmd", "a b"],
            bin.path(),
            &path,
        );
        assert_eq!(code, Some(0));
        if sudo.is_empty() {
            assert_eq!(out, format!("[{}][-n][122][--][cmd][a b]", lxc.display()));
        }
        let pct = tool("pct");
        let (_, out, _) = sh(
            NODE_SCRIPT,
            &["csdeploy-node", "122", "$(x)"],
            bin.path(),
            &path,
        );
        if sudo.is_empty() {
            assert_eq!(out, format!("[{}][exec][122][--][$(x)]", pct.display()));
        }
        let empty = tempfile::tempdir().unwrap();
        if ["/usr/sbin/pct", "/usr/bin/lxc-attach"]
            .iter()
            .all(|p| !std::path::Path::new(p).exists())
        {
            let (code, out, err) = sh(
                NODE_SCRIPT,
                &["csdeploy-node", "1", "true"],
                empty.path(),
                "/nonexistent",
            );
            assert_eq!((code, out.as_str()), (Some(127), ""));
            assert!(err.contains(NO_TOOL), "{err}");
        }
    }

    fn uid() -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1)
    }

    #[test]
    fn a_failed_entry_is_explained_by_the_layer_that_said_so() {
        let lxc = Connection::Lxc {
            container: "web".into(),
        };
        let explain = |connection: &Connection, become_, stderr: &str| {
            Wrap::for_host(&host(connection.clone(), become_))
                .unwrap()
                .explain(Some(1), stderr.as_bytes())
        };
        let stopped = "lxc-attach: web: attach.c: get_attach_context: 405 Connection refused - Failed to get init pid";
        assert!(explain(&lxc, su("claude"), stopped).contains("lxc-start -n web"));
        assert!(explain(&lxc, None, "").contains("lxc-start -n web"));
        let no_user = "su: user nobody does not exist or the user entry does not contain all the required fields";
        assert!(explain(&lxc, su("nobody"), no_user).contains("cannot become `nobody` with su"));
        let pct = |user: Option<&str>| Connection::Pct {
            node: node(user),
            vmid: 122,
        };
        assert!(explain(&pct(None), su("c"), stopped).contains("pct start 122"));
        assert!(explain(&pct(None), su("c"), "CT 122 not running").contains("pct start 122"));
        assert!(explain(&pct(None), None, NO_TOOL).contains("neither pct nor lxc-attach"));
        let password = "sudo: a password is required";
        let on_node = explain(&pct(Some("dana")), su("c"), password);
        assert!(
            on_node.contains("wants a password") && on_node.contains("NOPASSWD"),
            "{on_node}"
        );
        assert!(
            explain(&pct(Some("root")), sudo("c"), password)
                .contains("cannot become `c` with sudo")
        );
        let ssh = Connection::Ssh(node(Some("anna")));
        let become_ = explain(&ssh, sudo("bert"), password);
        assert!(become_.contains("cannot become `bert` with sudo") && become_.contains("NOPASSWD"));
        assert!(
            Wrap::for_host(&host(lxc, None))
                .unwrap()
                .explain_spawn("cannot run lxc-attach: No such file")
                .contains("lxc-attach is not installed")
        );
    }

    #[test]
    fn a_wrapped_command_carries_its_environment_after_the_prefix() {
        let command = RemoteCommand {
            env: vec![("HOME".into(), "/h; rm -rf /".into())],
            argv: vec!["python3".into(), "-c".into(), "print(1)".into()],
        };
        let prefix = lxc_prefix("c");
        let wrapped = command.wrapped(&prefix);
        assert!(wrapped.env.is_empty());
        assert_eq!(
            wrapped.argv,
            [
                "lxc-attach",
                "-n",
                "c",
                "--clear-env",
                "--",
                "env",
                "HOME=/h; rm -rf /",
                "python3",
                "-c",
                "print(1)"
            ]
        );
        // Over ssh every word stays one word.
        let line = wrapped.shell_line().unwrap();
        assert_eq!(shlex::split(&line).unwrap(), wrapped.argv);
        // No prefix: the command as it was.
        assert_eq!(command.wrapped(&[]).argv, command.argv);
        assert_eq!(command.wrapped(&[]).env, command.env);
    }

    #[test]
    fn what_a_tool_said_is_kept_short_and_on_one_line() {
        assert_eq!(said(b""), "nothing on stderr");
        assert_eq!(said(b"a\n\nb\nc\nd\n"), "b / c / d");
        assert!(said(&[b'x'; 2000]).chars().count() <= 601);
        assert_eq!(said(b"bad\x1b[31m\n"), "bad[31m");
    }
}
