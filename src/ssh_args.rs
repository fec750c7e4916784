//! `ansible_ssh_args`, `ansible_ssh_common_args` and `ansible_ssh_extra_args`:
//! the ssh options Ansible puts on ssh's command line, read as Ansible
//! splits them (`shlex`), turned into ssh_config lines.
//!
//! The openssh crate takes no raw arguments, so the options reach ssh as a
//! per-host config file (`-F`), generated in the run's private control
//! directory: the options first, then an `Include` of the config ssh would
//! have read (the user's and the system's, or `--ssh-config`). ssh_config
//! keeps the first value it obtains, as command-line options win over the
//! config files, so the result is what Ansible's command line gives. The
//! options sit in a `Match originalhost` block, so that the ssh a ProxyJump
//! starts (which reads the same `-F` file) does not take them for the jump
//! host, as it does not on Ansible's command line either.
//!
//! Each option becomes one config line, never shell text. What makes no
//! sense for csdeploy's ssh master (forwardings, commands, a tty, another
//! control socket) or what csdeploy sets itself and would silently
//! override (host key checking, timeouts) is refused with the reason.

/// ssh's own option letters (ssh.c's getopt string): a letter followed by
/// `:` takes a value.
const SSH_GETOPT: &str = "1246ab:c:e:fgi:kl:m:no:p:qstvxACD:E:F:GI:J:KL:MNO:P:QR:S:TVw:W:XYy";

/// The ssh_config lines `args` (one variable's text) stands for, in order,
/// or why csdeploy refuses it.
pub fn config_lines(args: &str) -> Result<Vec<String>, String> {
    let words = shlex::split(args).ok_or_else(|| {
        "cannot be split into words as Ansible splits it (an unclosed quote?)".to_string()
    })?;
    let mut lines = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let Some(flags) = word
            .strip_prefix('-')
            .filter(|f| !f.is_empty() && *f != "-")
        else {
            return Err(format!(
                "`{}` is not an ssh option: ssh would read it as the destination or a command. \
                 Give only options (`-o Key=Value`, `-J host`, ...)",
                word.escape_debug()
            ));
        };
        for (at, letter) in flags.char_indices() {
            let Some(spec) = SSH_GETOPT.find(letter).filter(|_| letter != ':') else {
                return Err(format!("ssh has no option -{}", letter.escape_debug()));
            };
            let value = if SSH_GETOPT[spec + 1..].starts_with(':') {
                let rest = &flags[at + letter.len_utf8()..];
                let value = if rest.is_empty() {
                    words
                        .next()
                        .ok_or_else(|| format!("-{letter} needs a value"))?
                } else {
                    rest.to_string()
                };
                Some(value)
            } else {
                None
            };
            for line in flag_lines(letter, value.as_deref())? {
                if line.contains(['\n', '\r', '\0']) {
                    return Err(format!(
                        "-{letter}: a value holds a line break or NUL byte, which no ssh option does"
                    ));
                }
                lines.push(line);
            }
            if value.is_some() {
                break;
            }
        }
    }
    Ok(lines)
}

/// The config lines of one ssh flag (`letter`, with its `value` if it takes one).
fn flag_lines(letter: char, value: Option<&str>) -> Result<Vec<String>, String> {
    let keyword = |key: &str| -> Result<Vec<String>, String> {
        Ok(vec![format!(
            "{key} {}",
            config_word(value.unwrap_or_default())?
        )])
    };
    let fixed = |lines: &[&str]| Ok(lines.iter().map(|l| l.to_string()).collect());
    match letter {
        'o' => option_line(value.unwrap_or_default()).map(|l| l.into_iter().collect()),
        'J' => keyword("ProxyJump"),
        'i' => keyword("IdentityFile"),
        'p' => keyword("Port"),
        'l' => keyword("User"),
        'c' => keyword("Ciphers"),
        'm' => keyword("MACs"),
        'b' => keyword("BindAddress"),
        'B' => keyword("BindInterface"),
        'e' => keyword("EscapeChar"),
        'I' => keyword("PKCS11Provider"),
        '4' => fixed(&["AddressFamily inet"]),
        '6' => fixed(&["AddressFamily inet6"]),
        'C' => fixed(&["Compression yes"]),
        'A' => fixed(&["ForwardAgent yes"]),
        'a' => fixed(&["ForwardAgent no"]),
        'x' => fixed(&["ForwardX11 no"]),
        'X' => fixed(&["ForwardX11 yes"]),
        'Y' => fixed(&["ForwardX11 yes", "ForwardX11Trusted yes"]),
        'k' => fixed(&["GSSAPIDelegateCredentials no"]),
        'K' => fixed(&["GSSAPIAuthentication yes", "GSSAPIDelegateCredentials yes"]),
        'g' => fixed(&["GatewayPorts yes"]),
        'q' => fixed(&["LogLevel QUIET"]),
        'F' => Err("-F: csdeploy reads one ssh config for the whole run: \
                    give it with --ssh-config FILE (or put these options there)"
            .into()),
        'v' => Err("-v: for ssh's own debug output run csdeploy with -vvv".into()),
        other => Err(format!(
            "-{other} makes no sense for csdeploy's ssh connection (one ControlMaster \
             per host, which csdeploy starts and ends itself): remove it"
        )),
    }
}

/// The ssh_config keywords csdeploy sets for its own master, which a value
/// from the inventory could not change: refused with the reason.
const OWN_KEYWORDS: &[(&str, &str)] = &[
    (
        "stricthostkeychecking",
        "csdeploy checks host keys strictly and never turns that off: record the host's key \
         (ssh-keyscan, after checking its fingerprint) or run with --host-key-checking accept-new",
    ),
    (
        "batchmode",
        "csdeploy never prompts (its ssh always runs in batch mode)",
    ),
    (
        "connecttimeout",
        "csdeploy gives every connection 10 seconds itself",
    ),
    (
        "serveraliveinterval",
        "csdeploy's connection sends keep-alives every 15 seconds itself",
    ),
];

/// ssh_config keywords that make no sense for csdeploy's master, which
/// runs no command, holds no tty and forwards nothing.
const MASTER_ONLY: &[&str] = &[
    "localforward",
    "remoteforward",
    "dynamicforward",
    "tunnel",
    "tunneldevice",
    "remotecommand",
    "requesttty",
    "sessiontype",
    "stdinnull",
    "forkafterauthentication",
    "include",
    "host",
    "match",
];

/// The config line of `-o text`, `None` for the control-socket options
/// csdeploy's own master replaces (Ansible's default `ssh_args` holds them).
fn option_line(text: &str) -> Result<Option<String>, String> {
    let text = text.trim();
    let key_end = text
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(text.len());
    let (key, rest) = text.split_at(key_end);
    let value = rest
        .trim_start()
        .strip_prefix('=')
        .unwrap_or(rest)
        .trim_start();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) || value.is_empty() {
        return Err(format!(
            "-o `{}`: expected `-o Key=Value` (or `-o \"Key Value\"`, one word)",
            text.escape_debug()
        ));
    }
    let lower = key.to_ascii_lowercase();
    if ["controlmaster", "controlpath", "controlpersist"].contains(&lower.as_str()) {
        return Ok(None);
    }
    if let Some((_, why)) = OWN_KEYWORDS.iter().find(|(k, _)| *k == lower) {
        if lower == "batchmode" && value.eq_ignore_ascii_case("yes") {
            return Ok(None);
        }
        return Err(format!("-o {key}: {why}; remove it"));
    }
    if MASTER_ONLY.contains(&lower.as_str()) {
        return Err(format!(
            "-o {key} makes no sense for csdeploy's ssh connection (one ControlMaster \
             per host that runs no command, holds no tty and forwards nothing): remove it"
        ));
    }
    // ssh reads `-o` text with its config-file parser, so the text is the line.
    Ok(Some(text.to_string()))
}

/// `value` as one ssh_config argument: quoted when it holds blanks.
fn config_word(value: &str) -> Result<String, String> {
    if value.contains('"') {
        return Err(format!(
            "`{}` holds a double quote, which an ssh config value cannot",
            value.escape_debug()
        ));
    }
    Ok(if value.is_empty() || value.contains(char::is_whitespace) {
        format!("\"{value}\"")
    } else {
        value.to_string()
    })
}

/// The hosts of a ProxyJump value (`[user@]host[:port],...`, or `ssh://` URLs).
fn jump_hosts(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(|hop| {
        let hop = hop.trim().trim_matches('"');
        let hop = hop.strip_prefix("ssh://").unwrap_or(hop);
        let hop = hop.rsplit_once('@').map_or(hop, |(_, host)| host);
        if let Some(inner) = hop.strip_prefix('[') {
            inner.split(']').next().unwrap_or(inner)
        } else {
            hop.split(':').next().unwrap_or(hop)
        }
    })
}

/// Why the options `lines` cannot be given to the host ssh reaches as
/// `destination`, if they cannot: the config's `Match originalhost` must
/// tell that host from its jump hosts.
pub fn destination_refusal(destination: &str, lines: &[String]) -> Option<String> {
    if lines.is_empty() {
        return None;
    }
    if destination.contains(['*', '?', '!', ',', '"', '%']) {
        return Some(format!(
            "the host's address `{destination}` holds a character ssh reads as a pattern; \
             give its ansible_host without `* ? ! , \" %`"
        ));
    }
    for line in lines {
        let (key, value) = line.split_at(line.find([' ', '\t', '=']).unwrap_or(line.len()));
        let value = value.trim_start().trim_start_matches('=').trim_start();
        if key.eq_ignore_ascii_case("ProxyJump") && jump_hosts(value).any(|h| h == destination) {
            return Some(format!(
                "the jump host has the host's own address `{destination}`: csdeploy gives \
                 these options to that address only, and could not tell them apart. Name one \
                 of them by an alias (a `Host` block of your ssh config)"
            ));
        }
    }
    None
}

/// The ssh config for a host reached as `destination` with the options
/// `lines`: those first, for that host only, then the config ssh would read
/// without `-F` (`user_config` when given, as `--ssh-config`).
pub fn host_config(
    destination: &str,
    lines: &[String],
    user_config: Option<&std::path::Path>,
) -> Result<String, String> {
    let mut text = String::from("# Generated by csdeploy: the host's ansible_ssh_*args.\n");
    text.push_str(&format!("Match originalhost {destination}\n"));
    for line in lines {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("Match all\n");
    match user_config {
        Some(path) => {
            let path = std::path::absolute(path).map_err(|e| e.to_string())?;
            let shown = path.to_str().filter(|p| !p.contains(['"', '\n', '\r']));
            let Some(path) = shown else {
                return Err(format!(
                    "--ssh-config {}: a path ssh could not read back from a config file",
                    path.display()
                ));
            };
            text.push_str(&format!("Include \"{path}\"\n"));
        }
        None => text.push_str("Include ~/.ssh/config\nInclude /etc/ssh/ssh_config\n"),
    }
    Ok(text)
}

/// Writes [`host_config`] into a new private (0600) file under `dir`, the
/// run's control directory.
pub fn write_host_config(
    destination: &str,
    lines: &[String],
    user_config: Option<&std::path::Path>,
    dir: &std::path::Path,
) -> Result<tempfile::NamedTempFile, String> {
    use std::io::Write;
    let text = host_config(destination, lines, user_config)?;
    let mut file = tempfile::Builder::new()
        .prefix("ssh-config-")
        .tempfile_in(dir)
        .map_err(|e| {
            format!(
                "cannot write the host's ssh config in {}: {e}",
                dir.display()
            )
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| {
            format!(
                "cannot write the host's ssh config {}: {e}",
                file.path().display()
            )
        })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(args: &str) -> Vec<String> {
        config_lines(args).unwrap_or_else(|e| panic!("{args}: {e}"))
    }

    #[test]
    fn options_are_split_as_ansible_splits_them() {
        assert_eq!(
            lines(r#"-o ProxyCommand="ssh -W %h:%p -q bastion" -oPort=2222 -o 'User ops'"#),
            [
                "ProxyCommand=ssh -W %h:%p -q bastion",
                "Port=2222",
                "User ops"
            ]
        );
        assert_eq!(
            lines("-J ops@bastion:2200 -i '/keys/a b' -p 22 -l root -4C"),
            [
                "ProxyJump ops@bastion:2200",
                "IdentityFile \"/keys/a b\"",
                "Port 22",
                "User root",
                "AddressFamily inet",
                "Compression yes",
            ]
        );
        // Ansible's own default ssh_args: csdeploy's master replaces them.
        assert_eq!(
            lines("-C -o ControlMaster=auto -o ControlPersist=60s"),
            ["Compression yes"]
        );
        assert_eq!(lines("-Jbastion"), ["ProxyJump bastion"]);
        assert!(lines("").is_empty());
    }

    #[test]
    fn what_makes_no_sense_for_a_master_is_refused_with_the_reason() {
        for (args, why) in [
            ("-o StrictHostKeyChecking=no", "accept-new"),
            (
                "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no",
                "strictly",
            ),
            ("-L 8080:localhost:80", "-L makes no sense"),
            ("-N", "-N makes no sense"),
            ("-tt", "-t makes no sense"),
            ("-o RemoteCommand=id", "RemoteCommand makes no sense"),
            ("-F /etc/other", "--ssh-config"),
            ("-vvv", "-vvv"),
            ("bastion", "not an ssh option"),
            ("-- -o Port=1", "not an ssh option"),
            ("-o", "-o needs a value"),
            ("-o Port", "expected `-o Key=Value`"),
            ("-Z", "no option -Z"),
            ("-o 'ProxyCommand=\"x", "unclosed quote"),
            ("-i 'a\"b'", "double quote"),
            ("-o 'Port=1\nHost *'", "line break"),
            ("-o ConnectTimeout=3", "10 seconds"),
        ] {
            let err = config_lines(args).expect_err(args);
            assert!(err.contains(why), "{args}: {err}");
        }
        assert_eq!(lines("-o BatchMode=yes"), Vec::<String>::new());
    }

    #[test]
    fn a_jump_host_named_as_the_host_is_refused() {
        let via = |j: &str| vec![format!("ProxyJump {j}")];
        assert!(destination_refusal("10.0.0.5", &via("ops@10.0.0.5:2222")).is_some());
        assert!(destination_refusal("10.0.0.5", &via("a,ssh://b@[10.0.0.5]:22")).is_some());
        assert!(destination_refusal("::1", &via("[::1]:2222")).is_some());
        assert!(destination_refusal("10.0.0.5", &via("bastion")).is_none());
        assert!(destination_refusal("web*", &["Port 1".into()]).is_some());
        assert!(destination_refusal("web*", &[]).is_none());
    }

    #[test]
    fn the_config_puts_the_options_before_what_ssh_would_read() {
        let text = host_config("db1", &["Port 2222".into()], None).unwrap();
        assert_eq!(
            text,
            "# Generated by csdeploy: the host's ansible_ssh_*args.\n\
             Match originalhost db1\n  Port 2222\nMatch all\n\
             Include ~/.ssh/config\nInclude /etc/ssh/ssh_config\n"
        );
        let text = host_config("db1", &[], Some(std::path::Path::new("/etc/my cfg"))).unwrap();
        assert!(
            text.ends_with("Match all\nInclude \"/etc/my cfg\"\n"),
            "{text}"
        );
        assert!(host_config("db1", &[], Some(std::path::Path::new("/a\"b"))).is_err());
    }
}
