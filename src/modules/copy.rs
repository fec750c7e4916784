//! `copy`: a file with given content and mode, replaced atomically, with an
//! optional backup of what it replaced.

use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    Decision, Facts, Installed, Mode, Module, ModuleKind, Op, Probe, RenderError, Run, render,
};
use crate::facts::Kind;
use crate::template::Escape;
use crate::vars::Vars;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyArgs {
    pub src: Option<String>,
    pub content: Option<String>,
    pub dest: String,
    pub mode: Option<Mode>,
    #[serde(default)]
    pub backup: bool,
}

#[derive(Debug, Clone)]
pub struct CopyAction {
    pub dest: String,
    pub content: Arc<Vec<u8>>,
    pub sha256: String,
    pub mode: Option<u32>,
    pub backup: bool,
}

/// A file's bytes and their sha256: what every host's copy of it shares.
#[derive(Debug, Clone)]
pub struct Source {
    pub content: Arc<Vec<u8>>,
    pub sha256: String,
}

impl Source {
    pub fn new(content: Vec<u8>) -> Source {
        Source {
            sha256: hex::encode(Sha256::digest(&content)),
            content: Arc::new(content),
        }
    }
}

/// Where `src` files come from: the playbook's directory, or the binary.
pub trait SourceFiles {
    fn read(&self, src: &str) -> Result<Source, String>;
}

/// Reads each distinct `src` once per run and hands every host the same
/// bytes: a fleet of 500 hosts holds one copy of each file, hashed once,
/// not 500 (measured: ~90 KB a host with the built-in playbook).
pub struct SharedSources<'a> {
    files: &'a dyn SourceFiles,
    read: std::sync::Mutex<std::collections::HashMap<String, Source>>,
}

impl<'a> SharedSources<'a> {
    pub fn new(files: &'a dyn SourceFiles) -> SharedSources<'a> {
        SharedSources {
            files,
            read: Default::default(),
        }
    }
}

impl SourceFiles for SharedSources<'_> {
    fn read(&self, src: &str) -> Result<Source, String> {
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(source) = read.get(src) {
            return Ok(source.clone());
        }
        let source = self.files.read(src)?;
        read.insert(src.to_string(), source.clone());
        Ok(source)
    }
}

impl CopyArgs {
    pub fn render(&self, vars: &Vars, files: &dyn SourceFiles) -> Result<CopyAction, RenderError> {
        let source = match (&self.src, &self.content) {
            (Some(src), None) => {
                let src = render("src", src, vars, Escape::Path)?;
                files.read(&src).map_err(|message| RenderError {
                    field: "src",
                    message,
                })?
            }
            (None, Some(content)) => {
                Source::new(render("content", content, vars, Escape::None)?.into_bytes())
            }
            _ => {
                return Err(RenderError {
                    field: "src",
                    message: "copy takes exactly one of `src` and `content`".into(),
                });
            }
        };
        Ok(CopyAction {
            dest: render("dest", &self.dest, vars, Escape::Path)?,
            sha256: source.sha256,
            content: source.content,
            mode: self.mode.map(|m| m.0),
            backup: self.backup,
        })
    }
}

impl Module for CopyAction {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Copy
    }

    fn path(&self) -> Option<&str> {
        Some(&self.dest)
    }

    fn installs(&self) -> Option<Installed> {
        Some(Installed::File(self.dest.clone()))
    }

    fn probes(&self, want_diff: bool) -> Vec<Probe> {
        vec![Probe::file(
            &self.dest,
            want_diff.then_some(self.sha256.as_str()),
        )]
    }

    fn decide(&self, facts: &mut Facts, run: Run) -> Decision {
        let want_diff = run.diff;
        let state = facts.get(&self.dest);
        if !matches!(state.kind, Kind::File | Kind::Missing) {
            return Decision {
                failure: Some(format!(
                    "{} is {}, not a regular file: csdeploy replaces only files; move it away \
                     or give `dest` the file's own path (`dest: {}/NAME`)",
                    state.path,
                    match state.kind {
                        Kind::Dir => "a directory",
                        Kind::Link => "a symlink",
                        _ => "a special file (FIFO, socket or device)",
                    },
                    state.path.trim_end_matches('/')
                )),
                ..Decision::default()
            };
        }
        if state.kind == Kind::File && state.sha256.is_none() {
            // Rewriting what cannot be compared would "update" it on every run.
            return Decision {
                failure: Some(format!(
                    "{} exists but cannot be read to compare its content (mode {}): make it readable or remove it",
                    state.path,
                    state.mode.map(super::octal).unwrap_or_default()
                )),
                ..Decision::default()
            };
        }
        let same_content = state.sha256.as_deref() == Some(self.sha256.as_str());
        let same_mode = self.mode.is_none() || state.mode == self.mode;
        // Rewriting a file someone else owns gives it to the login user.
        let same_owner = state.uid.is_none() || state.uid == Some(facts.uid);
        if state.kind == Kind::File && same_content && same_mode && same_owner {
            return Decision::default();
        }
        let mode = self.mode.or(state.mode);
        facts.set(&self.dest, Kind::File, mode, Some(self.sha256.clone()));
        if state.kind == Kind::File && same_content && same_owner {
            return Decision::chmod(&self.dest, state.mode, self.mode.unwrap_or_default());
        }
        let diff = (want_diff && !same_content).then(|| {
            let old = state.old_content().unwrap_or_default();
            unified_diff(&state.path, &old, &self.content)
        });
        Decision {
            changes: true,
            op: Some(Op::write(
                &self.dest,
                self.mode,
                self.backup,
                self.content.clone(),
            )),
            diff,
            msg: Some(
                if state.kind == Kind::Missing {
                    "created"
                } else {
                    "updated"
                }
                .into(),
            ),
            ..Decision::default()
        }
    }
}

pub fn unified_diff(path: &str, old: &[u8], new: &[u8]) -> String {
    match (std::str::from_utf8(old), std::str::from_utf8(new)) {
        (Ok(old), Ok(new)) => similar::TextDiff::from_lines(old, new)
            .unified_diff()
            .context_radius(3)
            .header(&format!("before: {path}"), &format!("after: {path}"))
            .to_string(),
        _ => format!("Binary files before: {path} and after: {path} differ\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_shares_one_copy_of_a_source_read_once() {
        struct Counting(std::cell::Cell<usize>);
        impl SourceFiles for Counting {
            fn read(&self, src: &str) -> Result<Source, String> {
                self.0.set(self.0.get() + 1);
                Ok(Source::new(src.as_bytes().to_vec()))
            }
        }
        let files = Counting(std::cell::Cell::new(0));
        let shared = SharedSources::new(&files);
        let (a, b) = (shared.read("x").unwrap(), shared.read("x").unwrap());
        assert!(Arc::ptr_eq(&a.content, &b.content));
        assert_eq!(a.sha256, b.sha256);
        shared.read("y").unwrap();
        assert_eq!(files.0.get(), 2);
    }

    #[test]
    fn a_file_that_cannot_be_read_fails_rather_than_being_rewritten_every_run() {
        use crate::facts::{GatherReply, PathState, Probe};
        let dest = "/h/unreadable";
        let state = |sha256: Option<&str>| PathState {
            kind: Kind::File,
            mode: Some(0o200),
            uid: Some(1000),
            sha256: sha256.map(String::from),
            ..PathState::missing(dest)
        };
        let action = CopyAction {
            dest: dest.into(),
            content: Arc::new(b"hi".to_vec()),
            sha256: "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4".into(),
            mode: None,
            backup: true,
        };
        let facts = |sha256| {
            Facts::new(
                &[Probe::file(dest, None)],
                GatherReply {
                    uid: 1000,
                    paths: vec![state(sha256)],
                },
            )
        };
        let decision = action.decide(&mut facts(None), Run::PLAIN);
        let failure = decision.failure.expect("a failure");
        assert!(
            failure.contains("cannot be read") && failure.contains("0200"),
            "{failure}"
        );
        assert!(decision.op.is_none());
        let same = action.decide(&mut facts(Some(action.sha256.as_str())), Run::PLAIN);
        assert!(
            same.failure.is_none() && same.op.is_none(),
            "readable and equal: ok"
        );
    }

    #[test]
    fn a_destination_that_is_not_a_file_is_named_for_what_it_is() {
        use crate::facts::{GatherReply, PathState, Probe};
        let dest = "/h/conf";
        let action = CopyAction {
            dest: dest.into(),
            content: Arc::new(b"hi".to_vec()),
            sha256: String::new(),
            mode: None,
            backup: false,
        };
        for (kind, named) in [
            (Kind::Dir, "a directory"),
            (Kind::Link, "a symlink"),
            (Kind::Other, "a special file"),
        ] {
            let state = PathState {
                kind,
                ..PathState::missing(dest)
            };
            let mut facts = Facts::new(
                &[Probe::file(dest, None)],
                GatherReply {
                    uid: 0,
                    paths: vec![state],
                },
            );
            let failure = action
                .decide(&mut facts, Run::PLAIN)
                .failure
                .expect("a failure");
            assert!(
                failure.contains(named) && !failure.contains("Dir)"),
                "{failure}"
            );
            assert!(failure.contains("dest: /h/conf/NAME"), "{failure}");
        }
    }

    #[test]
    fn diff_is_unified() {
        let d = unified_diff("/x", b"a\nb\n", b"a\nc\n");
        assert!(
            d.starts_with("--- before: /x\n+++ after: /x\n@@ -1,2 +1,2 @@\n"),
            "{d}"
        );
        assert!(d.contains("-b\n+c\n"), "{d}");
    }
}
