//! The prefix put before every command's argv on a host, by either
//! transport: the way into a container, then the change of user.
//!
//! | connection | prefix (then `become`, then `env K=V`, then the command) |
//! |---|---|
//! | `lxc` | `lxc-attach -n NAME --clear-env --` (on this machine, as community.general.lxc, which clears the environment too) |
//! | `pct` | over ssh to the node: `/usr/sbin/pct exec VMID --` (the path the node's `command -v` gives), or `lxc-attach -n VMID --` where the node has no `pct`; `sudo -n` first when `ansible_user` is set and is not root (as the Ansible plugin runs `sudo /usr/sbin/pct`) |
//! | `become` sudo | `sudo -n -H -u USER -- /bin/sh -c SCRIPT` |
//! | `become` su | `su -s /bin/sh -c SCRIPT -- USER` |
//!
//! Every value is an argv word of its own: SCRIPT is a constant that goes
//! to the user's home, as an ssh login starts there (the login user's
//! directory, often root's 0700 one, is no place for them), and runs its
//! arguments as they are (`"$0" "$@"`), never text built from them.
//!
//! Before the first real command, [`settle`] proves each layer with `true`
//! (the container can be entered, the user can be become), so that a
//! stopped container or a sudo that wants a password makes the host
//! unreachable with what to do, not a failed gather with a tool's words.
//! Those probes belong to connecting, as ssh's handshake does: they are
//! not counted in `remote_commands`.

use std::time::Duration;

use super::{RemoteCommand, SshOptions, Transport, TransportError};
use crate::host::{Become, BecomeMethod, Connection, Host, SshTarget};

/// The longest the probes of one host may take: what `true` needs through
/// lxc-attach, pct and su on a machine loaded many times over (measured:
/// over 30 s at a load of 160 on 2 cores), short of waiting forever on a
/// container that never answers.
const PROBE_LIMIT: Duration = Duration::from_secs(120);

/// What runs as the user: in their home, its arguments as they are (`$0`
/// is the program).
pub const BECOME_SCRIPT: &str = r#"cd "$HOME" 2>/dev/null || cd /; exec "$0" "$@""#;

/// Finds how the node enters containers: the path of the first of these it
/// has (a path, as the Ansible plugin runs `/usr/sbin/pct`: what a sudoers
/// rule for a login other than root names, and what sudo's secure_path
/// need not hold).
const FIND_TOOL: &str = r#"for t in pct /usr/sbin/pct lxc-attach /usr/bin/lxc-attach; do
  if p=$(command -v "$t" 2>/dev/null); then printf '%s\n' "$p"; exit 0; fi
done
exit 127"#;

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

/// The words that run a command in container `vmid` on a Proxmox node,
/// with the `tool` found there: `pct exec VMID --` (pct's own form, which
/// runs `lxc-attach -n VMID --`), or that `lxc-attach` itself.
pub fn pct_prefix(node: &SshTarget, tool: &str, vmid: u64) -> Vec<String> {
    let mut prefix = Vec::new();
    if node.user.as_deref().is_some_and(|u| u != "root") {
        prefix.extend(["sudo".to_string(), "-n".to_string()]);
    }
    prefix.push(tool.to_string());
    if tool.ends_with("pct") {
        prefix.push("exec".into());
    } else {
        prefix.push("-n".into());
    }
    prefix.extend([vmid.to_string(), "--".to_string()]);
    prefix
}

fn words<const N: usize>(fixed: &[&str], values: [String; N]) -> Vec<String> {
    fixed.iter().map(|w| w.to_string()).chain(values).collect()
}

/// Proves and installs `host`'s prefix on `transport`; closes it and says
/// why the host cannot be reached when a layer fails.
pub async fn settle(
    mut transport: Transport,
    host: &Host,
    options: &SshOptions,
) -> Result<Transport, TransportError> {
    if matches!(host.connection, Connection::Local | Connection::Ssh(_)) && host.become_.is_none() {
        return Ok(transport);
    }
    let limit = options.connect_timeout.max(PROBE_LIMIT);
    match tokio::time::timeout(limit, prefix_for(&transport, host)).await {
        Ok(Ok(prefix)) => {
            match &mut transport {
                Transport::Ssh(t) => {
                    t.wrap = prefix;
                    t.counter.store(0, std::sync::atomic::Ordering::Relaxed);
                }
                Transport::Local(t) => {
                    t.wrap = prefix;
                    t.counter.store(0, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Ok(transport)
        }
        Ok(Err(why)) => {
            let _ = transport.close().await;
            Err(TransportError::Connect(why))
        }
        Err(_) => {
            let _ = transport.close().await;
            Err(TransportError::Connect(format!(
                "entering the host took more than {}s (lxc-attach, pct, sudo or su did not answer)",
                limit.as_secs()
            )))
        }
    }
}

/// Runs `argv` with nothing before it; its exit code, stdout and stderr.
async fn run(transport: &Transport, argv: Vec<String>) -> Result<(i32, String, String), String> {
    let command = RemoteCommand {
        env: Vec::new(),
        argv,
    };
    let mut exchange = transport
        .spawn(&command)
        .await
        .map_err(|err| err.to_string())?;
    exchange.close().await;
    let stdout = exchange
        .read_to_end()
        .await
        .map_err(|err| err.to_string())?;
    let out = exchange.finish().await.map_err(|err| err.to_string())?;
    Ok((
        out.code.unwrap_or(-1),
        String::from_utf8_lossy(&stdout).trim().to_string(),
        said(&out.stderr),
    ))
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

fn with(prefix: &[String], tail: &[&str]) -> Vec<String> {
    prefix
        .iter()
        .cloned()
        .chain(tail.iter().map(|w| w.to_string()))
        .collect()
}

async fn prefix_for(transport: &Transport, host: &Host) -> Result<Vec<String>, String> {
    let mut prefix = match &host.connection {
        Connection::Local | Connection::Ssh(_) => Vec::new(),
        Connection::Lxc { container } => {
            let prefix = lxc_prefix(container);
            match run(transport, with(&prefix, &["true"])).await {
                Ok((0, _, _)) => {}
                Err(why) if why.contains("cannot run lxc-attach") => {
                    return Err(format!(
                        "lxc-attach is not installed on this machine ({why}): csdeploy enters \
                         the container `{container}` with `lxc-attach -n {container}`; install \
                         LXC (Debian, Ubuntu: apt install lxc) or reach the container over ssh"
                    ));
                }
                Err(why) => return Err(why),
                Ok((code, _, stderr)) => {
                    return Err(format!(
                        "cannot enter the LXC container `{container}` (lxc-attach exited {code}: \
                         {stderr}): it is stopped, or no container has that name here. \
                         `lxc-ls -f` lists them, `lxc-start -n {container}` starts it"
                    ));
                }
            }
            prefix
        }
        Connection::Pct { node, vmid } => {
            let argv = with(&[], &["sh", "-c", FIND_TOOL]);
            let tool = match run(transport, argv).await? {
                (0, tool, _) if !tool.is_empty() => tool,
                (code, _, stderr) => {
                    return Err(format!(
                        "the node {} has neither pct nor lxc-attach (exit {code}: {stderr}): \
                         point ansible_host at the Proxmox VE node that runs container {vmid}",
                        node.host
                    ));
                }
            };
            let prefix = pct_prefix(node, &tool, *vmid);
            match run(transport, with(&prefix, &["true"])).await? {
                (0, _, _) => {}
                (_, _, stderr) if prefix[0] == "sudo" && stderr.contains("password") => {
                    return Err(format!(
                        "sudo on the node {} wants a password to run {tool} ({stderr}): \
                         csdeploy never types one; allow {} to run {tool} without one (a NOPASSWD \
                         sudoers rule, as the Ansible plugin needs) or log in as root",
                        node.host,
                        node.user.as_deref().unwrap_or("the login user")
                    ));
                }
                (code, _, stderr) => {
                    let status = if tool.ends_with("pct") {
                        format!("`pct status {vmid}` says which, `pct start {vmid}` starts it")
                    } else {
                        format!("`lxc-info -n {vmid}` says which, `lxc-start -n {vmid}` starts it")
                    };
                    return Err(format!(
                        "cannot enter container {vmid} on the node {} ({tool} exited {code}: \
                         {stderr}): it is stopped, or not on this node; {status}",
                        node.host
                    ));
                }
            }
            prefix
        }
    };
    if let Some(become_) = &host.become_ {
        prefix.extend(become_prefix(become_));
        let user = &become_.user;
        match run(transport, with(&prefix, &["true"])).await? {
            (0, _, _) => {}
            (code, _, stderr) => {
                return Err(match become_.method {
                    BecomeMethod::Sudo => format!(
                        "cannot become `{user}` with sudo (exit {code}: {stderr}): csdeploy runs \
                         `sudo -n`, which never asks for a password. Give the login user a \
                         NOPASSWD sudoers rule for {user}, or log in as root; where root logs in \
                         and there is no sudo (many containers), set ansible_become_method: su"
                    ),
                    BecomeMethod::Su => format!(
                        "cannot become `{user}` with su (exit {code}: {stderr}): su asks for a \
                         password unless root runs it, and csdeploy never types one. Log in as \
                         root (ansible_user: root), or use ansible_become_method: sudo with a \
                         NOPASSWD rule; check that the user `{user}` exists there"
                    ),
                });
            }
        }
    }
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(user: Option<&str>) -> SshTarget {
        SshTarget {
            host: "pve".into(),
            port: None,
            user: user.map(str::to_string),
            key_file: None,
            ssh_options: Vec::new(),
        }
    }

    #[test]
    fn prefixes_are_the_tools_own_argument_forms() {
        assert_eq!(
            lxc_prefix("web"),
            ["lxc-attach", "-n", "web", "--clear-env", "--"]
        );
        assert_eq!(
            pct_prefix(&target(None), "pct", 122),
            ["pct", "exec", "122", "--"]
        );
        assert_eq!(
            pct_prefix(&target(Some("root")), "/usr/sbin/pct", 122),
            ["/usr/sbin/pct", "exec", "122", "--"]
        );
        assert_eq!(
            pct_prefix(&target(Some("ansible")), "lxc-attach", 122),
            ["sudo", "-n", "lxc-attach", "-n", "122", "--"]
        );
        let sudo = Become {
            method: BecomeMethod::Sudo,
            user: "claude".into(),
        };
        assert_eq!(
            become_prefix(&sudo),
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
        let su = Become {
            method: BecomeMethod::Su,
            user: "claude".into(),
        };
        assert_eq!(
            become_prefix(&su),
            ["su", "-s", "/bin/sh", "-c", BECOME_SCRIPT, "--", "claude"]
        );
    }

    #[test]
    fn a_wrapped_command_carries_its_environment_after_the_prefix() {
        let command = RemoteCommand {
            env: vec![("HOME".into(), "/h; rm -rf /".into())],
            argv: vec!["python3".into(), "-c".into(), "print(1)".into()],
        };
        let prefix = with(&lxc_prefix("c"), &[]);
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

    /// The constant script runs its arguments as they are, in HOME: a
    /// value holding quotes, `$()` or a leading `-` reaches the program
    /// unchanged; without a home, it runs in `/`.
    #[test]
    fn become_script_runs_the_arguments_unchanged_in_home() {
        let home = tempfile::tempdir().unwrap();
        let tricky = ["-I", "it's $(touch /tmp/x) \"q\"", "", "a\nb"];
        let run = |home: &std::path::Path| {
            let out = std::process::Command::new("/bin/sh")
                .args([
                    "-c",
                    BECOME_SCRIPT,
                    "sh",
                    "-c",
                    r#"printf '[%s]' "$PWD" "$@""#,
                    "x",
                ])
                .args(tricky)
                .env("HOME", home)
                .current_dir("/tmp")
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let args: String = tricky.iter().map(|a| format!("[{a}]")).collect();
        let real = home.path().canonicalize().unwrap();
        assert_eq!(run(home.path()), format!("[{}]{args}", real.display()));
        assert_eq!(run(&home.path().join("gone")), format!("[/]{args}"));
    }

    #[test]
    fn the_node_tool_is_found_by_its_path_pct_first() {
        use std::os::unix::fs::PermissionsExt;
        let bin = tempfile::tempdir().unwrap();
        let pct = bin.path().join("pct");
        std::fs::write(&pct, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&pct, std::fs::Permissions::from_mode(0o755)).unwrap();
        let find = |path: &std::path::Path| {
            let out = std::process::Command::new("/bin/sh")
                .args(["-c", FIND_TOOL])
                .env("PATH", path)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            )
        };
        assert_eq!(find(bin.path()), (Some(0), pct.display().to_string()));
        // Without pct on PATH: Proxmox's own path, else lxc-attach's.
        let empty = tempfile::tempdir().unwrap();
        let expected = ["/usr/sbin/pct", "/usr/bin/lxc-attach"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        match expected {
            Some(path) => assert_eq!(find(empty.path()), (Some(0), path.to_string())),
            None => assert_eq!(find(empty.path()), (Some(127), String::new())),
        }
    }

    #[test]
    fn what_a_tool_said_is_kept_short_and_on_one_line() {
        assert_eq!(said(b""), "nothing on stderr");
        assert_eq!(said(b"a\n\nb\nc\nd\n"), "b / c / d");
        assert!(said(&[b'x'; 2000]).chars().count() <= 601);
        assert_eq!(said(b"bad\x1b[31m\n"), "bad[31m");
    }
}
