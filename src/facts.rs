//! What the gather step learned about a host, and the controller's running
//! picture of it as each task's planned change is applied in order, so later
//! tasks are judged against what earlier ones will have done.

use std::collections::HashMap;

pub use crate::protocol::GatherReply;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
}

/// One path's state, as a gather reply names it (see `protocol`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PathState {
    pub path: String,
    pub kind: Kind,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub sha256: Option<String>,
    /// The old content, when it differs from what the task wants (--diff).
    #[serde(skip)]
    pub content: Option<Vec<u8>>,
    /// How many bytes of old content follow the reply for this path.
    #[serde(default)]
    pub content_size: Option<usize>,
    /// A symlink's target, as it is written (not resolved).
    pub target: Option<String>,
    /// A symlink that leads to a directory (a user's `~/.local/bin` may be one).
    #[serde(default)]
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
            content_size: None,
            target: None,
            link_to_dir: false,
        }
    }

    pub fn old_content(&self) -> Option<Vec<u8>> {
        self.content.clone()
    }
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
                content_size: None,
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
    use crate::protocol::parse_sh_gather as parse_sh;
    use crate::protocol::tests::{read_gather, run_agent};

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
        let mut args = vec!["hhhhh"];
        args.extend(probes.iter().map(|p| p.path.as_str()));
        let reply = parse_sh(&gather_sh(&args, &[]), &probes).unwrap();
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
        assert!(parse_sh(&blind, &probes[2..3]).is_err());
    }

    const MARKER: &str = "csdeploy-gathered-test";

    /// gather.sh's records for `args` (wants, then paths), under `timeout` (a
    /// FIFO must not block it), with `env`; its marker checked and cut off.
    fn gather_sh(args: &[&str], env: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut cmd = std::process::Command::new("timeout");
        cmd.args(["10", "/bin/sh", "-c", crate::builtin::GATHER_SH, "gather"])
            .args(["", "", MARKER])
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
        let end = format!("\0{MARKER}\n");
        out.stdout
            .strip_suffix(end.as_bytes())
            .expect("the marker ends the records")
            .to_vec()
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
        let sh = parse_sh(&sh, &probes).unwrap();
        let (py, _, _) = run_agent(&crate::protocol::gather_request(&probes));
        let (py, _) = read_gather(&py);
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
        let literal = parse_sh(&reply(&format!("{} -> /abs/gone", paths[1])), &probes[1..2]);
        assert_eq!(
            literal.unwrap().paths[0].target.as_deref(),
            Some("/abs/gone")
        );
        let quoted = reply(&format!("'{}' -> '/abs/gone'", paths[1]));
        assert!(parse_sh(&quoted, &probes[1..2]).is_err());
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
        let reply = parse_sh(&out, &probes).unwrap();
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
        let reply = parse_sh(&gather_sh(&["sh", a, b], &[]), &probes).unwrap();
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
        let reply = parse_sh(&out, &probes).unwrap();
        assert_eq!(reply.paths[0].path, format!("{home}/rel/x"));
        assert_eq!(reply.paths[1].path, format!("{home}/y"));
        // Without HOME: the password database's home, as Python's expanduser.
        let out = gather_sh(&["s", "~/y"], &[("HOME", None)]);
        let reply = parse_sh(&out, &probes[1..]).unwrap();
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
