//! What the gather step learned about a host, and the controller's running
//! picture of it as each task's planned change is applied in order, so later
//! tasks are judged against what earlier ones will have done.

use std::collections::HashMap;

use base64::Engine as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    File,
    Dir,
    Link,
    Other,
}

/// A path the gather step must look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub path: String,
    /// None: stat only; `hash`: and the sha256; a sha256: and the old content
    /// when the file differs from it (for --diff).
    pub want: Option<String>,
}

impl Probe {
    pub fn stat(path: &str) -> Probe {
        Probe {
            path: path.to_string(),
            want: None,
        }
    }

    /// A file's state and sha256; with `diff_against`, its old content too
    /// when it does not hash to that.
    pub fn file(path: &str, diff_against: Option<&str>) -> Probe {
        Probe {
            path: path.to_string(),
            want: Some(diff_against.unwrap_or("hash").to_string()),
        }
    }

    /// This probe in the agent's gather request: `WANT\0PATH\0`.
    pub fn encode(&self, request: &mut Vec<u8>) {
        request.extend_from_slice(self.want.as_deref().unwrap_or("").as_bytes());
        request.push(0);
        request.extend_from_slice(self.path.as_bytes());
        request.push(0);
    }
}

#[derive(Debug, Clone)]
pub struct PathState {
    pub path: String,
    pub kind: Kind,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub sha256: Option<String>,
    /// Base64 of the old content, when it differs from what the task wants.
    pub content: Option<String>,
    /// A symlink's target, as it is written (not resolved).
    pub target: Option<String>,
    /// A symlink that leads to a directory (a user's `~/.local/bin` may be one).
    pub link_to_dir: bool,
}

impl PathState {
    pub fn missing(path: &str) -> PathState {
        PathState {
            path: path.to_string(),
            kind: Kind::Missing,
            mode: None,
            uid: None,
            sha256: None,
            content: None,
            target: None,
            link_to_dir: false,
        }
    }

    pub fn old_content(&self) -> Option<Vec<u8>> {
        let text = self.content.as_ref()?;
        base64::engine::general_purpose::STANDARD.decode(text).ok()
    }
}

/// What a reply that does not start with the uid most likely means.
const NO_UID: &str = "something else before the uid: does the login shell print (from \
    ~/.bashrc, say) even when it only runs a command? Every csdeploy step needs a quiet one";

#[derive(Debug, Clone)]
pub struct GatherReply {
    pub uid: u32,
    pub paths: Vec<PathState>,
}

impl GatherReply {
    /// Parses gather.sh's answer for `probes` (see that script).
    pub fn parse_sh(reply: &[u8], probes: &[Probe]) -> Result<GatherReply, String> {
        let bad = |what: &str| format!("the csdeploy gather script answered with {what}");
        let mut rest = reply;
        let mut field = || -> Result<String, String> {
            let end = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| bad("a truncated reply"))?;
            let value = String::from_utf8_lossy(&rest[..end]).into_owned();
            rest = &rest[end + 1..];
            Ok(value)
        };
        let uid = field()?.parse().map_err(|_| bad(NO_UID))?;
        let expanded = probes
            .iter()
            .map(|_| field())
            .collect::<Result<Vec<_>, _>>()?;
        let mut found: HashMap<String, [String; 4]> = HashMap::new();
        loop {
            let name = field()?;
            if name.is_empty() {
                break;
            }
            found.insert(name, [field()?, field()?, field()?, field()?]);
        }
        if !found.contains_key("/") {
            return Err(bad("no record for `/`: is stat GNU stat?"));
        }
        let mut to_dirs = std::collections::HashSet::new();
        loop {
            let path = field()?;
            if path.is_empty() {
                break;
            }
            to_dirs.insert(path);
        }
        let hashes = sha256sum_lines(&String::from_utf8_lossy(rest));
        let paths = expanded
            .into_iter()
            .map(|path| {
                let Some([kind, mode, owner, quoted]) = found.get(&path) else {
                    return Ok(PathState::missing(&path));
                };
                let kind = match kind.as_str() {
                    "regular file" | "regular empty file" => Kind::File,
                    "directory" => Kind::Dir,
                    "symbolic link" => Kind::Link,
                    _ => Kind::Other,
                };
                let target = match kind {
                    // `PATH -> TARGET`, unquoted; anything else is a stat
                    // that quotes (older than coreutils 8.26): gather.py then.
                    Kind::Link => Some(
                        quoted
                            .strip_prefix(&format!("{path} -> "))
                            .ok_or_else(|| bad("a symlink's target in a form it cannot read"))?
                            .to_string(),
                    ),
                    _ => None,
                };
                Ok(PathState {
                    sha256: (kind == Kind::File)
                        .then(|| hashes.get(&path).cloned())
                        .flatten(),
                    kind,
                    mode: u32::from_str_radix(mode, 8).ok(),
                    uid: owner.parse().ok(),
                    content: None,
                    target,
                    link_to_dir: kind == Kind::Link && to_dirs.contains(&path),
                    path,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(GatherReply { uid, paths })
    }

    /// Parses the agent's answer: `UID\0` then eight fields per path (see gather.py).
    pub fn parse(reply: &[u8]) -> Result<GatherReply, String> {
        let bad = |what: &str| format!("the csdeploy agent answered gather with {what}");
        let text = reply
            .strip_suffix(b"\0")
            .ok_or_else(|| bad("an unterminated reply"))?;
        let mut fields = text
            .split(|&b| b == 0)
            .map(|f| String::from_utf8_lossy(f).into_owned());
        let uid = fields
            .next()
            .and_then(|u| u.parse().ok())
            .ok_or_else(|| bad(NO_UID))?;
        let fields: Vec<String> = fields.collect();
        if !fields.len().is_multiple_of(8) {
            return Err(bad("a truncated reply"));
        }
        let optional = |f: &String| (!f.is_empty()).then(|| f.clone());
        let paths = fields
            .chunks(8)
            .map(|f| {
                let kind = match f[1].as_str() {
                    "missing" => Kind::Missing,
                    "file" => Kind::File,
                    "dir" => Kind::Dir,
                    "link" => Kind::Link,
                    "other" => Kind::Other,
                    other => return Err(bad(&format!("an unknown type `{other}`"))),
                };
                Ok(PathState {
                    path: f[0].clone(),
                    kind,
                    mode: optional(&f[2]).and_then(|m| u32::from_str_radix(&m, 8).ok()),
                    uid: optional(&f[3]).and_then(|u| u.parse().ok()),
                    sha256: optional(&f[4]),
                    content: optional(&f[5]),
                    target: optional(&f[6]),
                    link_to_dir: f[7] == "1",
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(GatherReply { uid, paths })
    }
}

/// `sha256sum` output, path → hash. A line for a name holding a newline or
/// a backslash starts with `\\` and escapes them as `\\n` and `\\\\`.
fn sha256sum_lines(text: &str) -> HashMap<String, String> {
    let mut hashes = HashMap::new();
    for line in text.lines() {
        let (escaped, line) = match line.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let Some((hash, name)) = line.split_once("  ").or_else(|| line.split_once(" *")) else {
            continue;
        };
        let name = if escaped {
            name.replace("\\\\", "\u{0}")
                .replace("\\n", "\n")
                .replace('\u{0}', "\\")
        } else {
            name.to_string()
        };
        hashes.insert(name, hash.to_string());
    }
    hashes
}

#[derive(Debug, Clone)]
pub struct Facts {
    pub uid: u32,
    /// Requested path (as the playbook wrote it) → absolute path on the host.
    resolved: HashMap<String, String>,
    states: HashMap<String, PathState>,
}

impl Facts {
    /// Nothing gathered: only tasks that probe no path may be decided against it.
    pub fn empty() -> Facts {
        Facts {
            uid: 0,
            resolved: HashMap::new(),
            states: HashMap::new(),
        }
    }

    pub fn new(probes: &[Probe], reply: GatherReply) -> Facts {
        let mut facts = Facts {
            uid: reply.uid,
            resolved: HashMap::new(),
            states: HashMap::new(),
        };
        for (probe, state) in probes.iter().zip(reply.paths) {
            facts
                .resolved
                .insert(probe.path.clone(), state.path.clone());
            facts.states.entry(state.path.clone()).or_insert(state);
        }
        facts
    }

    fn absolute(&self, path: &str) -> String {
        self.resolved
            .get(path)
            .cloned()
            .unwrap_or_else(|| path.to_string())
    }

    pub fn get(&self, path: &str) -> PathState {
        let absolute = self.absolute(path);
        self.states
            .get(&absolute)
            .cloned()
            .unwrap_or_else(|| PathState::missing(&absolute))
    }

    /// Records the state a planned change will leave behind.
    pub fn set(&mut self, path: &str, kind: Kind, mode: Option<u32>, sha256: Option<String>) {
        let absolute = self.absolute(path);
        let uid = Some(self.uid);
        self.states.insert(
            absolute.clone(),
            PathState {
                path: absolute,
                kind,
                mode,
                uid,
                sha256,
                content: None,
                target: None,
                link_to_dir: false,
            },
        );
    }

    /// Records a symlink a planned change will create.
    pub fn set_link(&mut self, path: &str, target: &str) {
        self.set(path, Kind::Link, None, None);
        let absolute = self.absolute(path);
        if let Some(state) = self.states.get_mut(&absolute) {
            state.target = Some(target.to_string());
        }
    }

    /// Records the removal of a path and everything below it.
    pub fn remove(&mut self, path: &str) {
        let absolute = self.absolute(path);
        let below = format!("{}/", absolute.trim_end_matches('/'));
        self.states
            .retain(|p, _| p != &absolute && !p.starts_with(&below));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gather_replies() {
        let fields = [
            "0", "/h/a", "file", "755", "0", "abc", "aGk=", "", "", "/h/b", "missing", "", "", "",
            "", "", "", "/h/c", "link", "777", "0", "", "", "../a", "1",
        ];
        let reply: Vec<u8> = fields.iter().flat_map(|f| f.bytes().chain([0])).collect();
        let parsed = GatherReply::parse(&reply).unwrap();
        assert_eq!(parsed.uid, 0);
        assert_eq!(parsed.paths[0].kind, Kind::File);
        assert_eq!(parsed.paths[0].mode, Some(0o755));
        assert_eq!(parsed.paths[0].old_content().unwrap(), b"hi");
        assert_eq!(parsed.paths[1].kind, Kind::Missing);
        assert_eq!(parsed.paths[1].mode, None);
        assert_eq!(parsed.paths[2].kind, Kind::Link);
        assert_eq!(parsed.paths[2].target.as_deref(), Some("../a"));
        assert!(parsed.paths[2].link_to_dir && !parsed.paths[0].link_to_dir);
        assert_eq!(parsed.paths[0].target, None);
        assert!(GatherReply::parse(b"0\0/h/a\0file\0").is_err());
        let chatty = GatherReply::parse(b"Welcome!\n0\0").unwrap_err();
        assert!(chatty.contains("login shell print"), "{chatty}");
        assert!(GatherReply::parse(b"0\0/h/a\0fifo\0\0\0\0\0\0\0").is_err());
    }

    #[test]
    fn parses_the_shell_gather_against_the_real_tools() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let odd = format!("{root}/we\\ird\nname");
        std::fs::write(format!("{root}/f"), b"hi").unwrap();
        std::fs::write(&odd, b"x").unwrap();
        std::os::unix::fs::symlink("f", format!("{root}/l")).unwrap();
        let probes: Vec<Probe> = [
            format!("{root}/f"),
            odd.clone(),
            root.to_string(),
            format!("{root}/l"),
            format!("{root}/gone"),
        ]
        .iter()
        .map(|p| Probe::file(p, None))
        .collect();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(crate::builtin::GATHER_SH)
            .arg("gather")
            .arg("hhhhh")
            .args(probes.iter().map(|p| &p.path))
            .output()
            .unwrap();
        let reply = GatherReply::parse_sh(&out.stdout, &probes).unwrap();
        let kinds: Vec<Kind> = reply.paths.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [Kind::File, Kind::File, Kind::Dir, Kind::Link, Kind::Missing]
        );
        // sha256("hi") and sha256("x"), the second through sha256sum's escaping.
        assert_eq!(
            reply.paths[0].sha256.as_deref(),
            Some("8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4")
        );
        assert_eq!(
            reply.paths[1].sha256.as_deref(),
            Some("2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881")
        );
        assert_eq!(reply.paths[1].path, odd);
        assert_eq!(reply.paths[3].sha256, None, "a link is not hashed through");
        assert_eq!(reply.paths[3].target.as_deref(), Some("f"));
        assert_eq!(reply.paths[0].target, None);
        assert_eq!(reply.paths[2].mode, Some(0o700));
        // A stat that printed nothing (not GNU stat) is refused, not read as "all missing".
        let blind: Vec<u8> = ["0", root, "", ""]
            .iter()
            .flat_map(|f| f.bytes().chain([0]))
            .collect();
        assert!(GatherReply::parse_sh(&blind, &probes[2..3]).is_err());
    }

    /// gather.sh with `args`, under `timeout` (a FIFO must not block it), and `env`.
    fn gather_sh(args: &[&str], env: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut cmd = std::process::Command::new("timeout");
        cmd.args(["10", "/bin/sh", "-c", crate::builtin::GATHER_SH, "gather"])
            .args(args)
            .stdin(std::process::Stdio::null());
        for (key, value) in env {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        out.stdout
    }

    #[test]
    fn both_gathers_read_a_symlinks_target_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let odd_link = format!("{root}/we\\ird -> \nlink");
        let odd_target = "a -> b\n\\c'\"$(x)";
        std::os::unix::fs::symlink(odd_target, &odd_link).unwrap();
        std::os::unix::fs::symlink("/abs/gone", format!("{root}/dangling")).unwrap();
        std::os::unix::fs::symlink(".", format!("{root}/here")).unwrap();
        let paths = [
            odd_link.clone(),
            format!("{root}/dangling"),
            format!("{root}/here"),
        ];
        let probes: Vec<Probe> = paths.iter().map(|p| Probe::stat(p)).collect();
        let sh = gather_sh(&["sss", &paths[0], &paths[1], &paths[2]], &[]);
        let sh = GatherReply::parse_sh(&sh, &probes).unwrap();
        let mut request = Vec::new();
        probes.iter().for_each(|p| p.encode(&mut request));
        let mut python = std::process::Command::new("python3")
            .args(["-I", "-S", "-c", crate::builtin::GATHER])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        python.stdin.take().unwrap().write_all(&request).unwrap();
        let py = python.wait_with_output().unwrap();
        let py = GatherReply::parse(&py.stdout).unwrap();
        for reply in [&sh, &py] {
            assert_eq!(reply.paths[0].kind, Kind::Link);
            assert_eq!(reply.paths[0].target.as_deref(), Some(odd_target));
            assert_eq!(reply.paths[1].target.as_deref(), Some("/abs/gone"));
            assert_eq!(reply.paths[2].target.as_deref(), Some("."));
            let to_dir: Vec<bool> = reply.paths.iter().map(|p| p.link_to_dir).collect();
            assert_eq!(to_dir, [false, false, true]);
        }
        // A stat that quotes the target (older than coreutils 8.26) is not read as one.
        let reply = |name: &str| -> Vec<u8> {
            let p = paths[1].as_str();
            let fields = ["0", p, p, "symbolic link", "777", "0", name];
            let sentinel = ["/", "directory", "755", "0", "/", "", ""];
            fields
                .iter()
                .chain(&sentinel)
                .flat_map(|f| f.bytes().chain([0]))
                .collect()
        };
        let literal =
            GatherReply::parse_sh(&reply(&format!("{} -> /abs/gone", paths[1])), &probes[1..2]);
        assert_eq!(
            literal.unwrap().paths[0].target.as_deref(),
            Some("/abs/gone")
        );
        let quoted = reply(&format!("'{}' -> '/abs/gone'", paths[1]));
        assert!(GatherReply::parse_sh(&quoted, &probes[1..2]).is_err());
    }

    #[test]
    fn the_shell_gather_hashes_regular_files_only_and_never_blocks_on_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let probes = [Probe::file(fifo.to_str().unwrap(), None)];
        let out = gather_sh(&["h", fifo.to_str().unwrap()], &[]);
        let reply = GatherReply::parse_sh(&out, &probes).unwrap();
        assert_eq!(reply.paths[0].kind, Kind::Other);
        assert_eq!(reply.paths[0].sha256, None);
    }

    #[test]
    fn the_shell_gather_hashes_only_the_files_whose_content_matters() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"hi").unwrap();
        std::fs::write(&b, b"hi").unwrap();
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        let probes = [Probe::stat(a), Probe::file(b, None)];
        let reply = GatherReply::parse_sh(&gather_sh(&["sh", a, b], &[]), &probes).unwrap();
        assert_eq!(reply.paths[0].kind, Kind::File);
        assert_eq!(reply.paths[0].sha256, None, "stat only: not read");
        assert!(reply.paths[1].sha256.is_some());
    }

    #[test]
    fn the_shell_gather_starts_relative_paths_and_a_missing_home_where_python_does() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap();
        let probes = [Probe::stat("rel/x"), Probe::stat("~/y")];
        let out = gather_sh(&["ss", "rel/x", "~/y"], &[("HOME", Some(home))]);
        let reply = GatherReply::parse_sh(&out, &probes).unwrap();
        assert_eq!(reply.paths[0].path, format!("{home}/rel/x"));
        assert_eq!(reply.paths[1].path, format!("{home}/y"));
        // Without HOME: the password database's home, as Python's expanduser.
        let out = gather_sh(&["s", "~/y"], &[("HOME", None)]);
        let reply = GatherReply::parse_sh(&out, &probes[1..]).unwrap();
        let python = std::process::Command::new("python3")
            .args(["-c", "import os; print(os.path.expanduser('~/y'), end='')"])
            .env_remove("HOME")
            .output()
            .unwrap();
        assert_eq!(
            reply.paths[0].path,
            String::from_utf8(python.stdout).unwrap()
        );
        assert!(
            reply.paths[0].path.starts_with('/'),
            "{}",
            reply.paths[0].path
        );
    }
}
