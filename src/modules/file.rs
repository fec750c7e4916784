//! `file`: a directory that must exist (with a mode), a path that must not,
//! or a symlink that must point somewhere (Ansible's `state: link`, without
//! `force`: csdeploy never replaces a file it did not create).

use serde::Deserialize;

use super::{Decision, Facts, Installed, Mode, Module, ModuleKind, Op, RenderError, Run, render};
use crate::facts::{Kind, Probe};
use crate::template::Escape;
use crate::vars::Vars;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Directory,
    Absent,
    Link,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileArgs {
    pub path: String,
    pub state: State,
    pub mode: Option<Mode>,
    /// What a `state: link` points to.
    pub src: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FileAction {
    pub path: String,
    pub state: State,
    pub mode: Option<u32>,
    /// A link's target as the playbook wrote it. Like every path, `~` and a
    /// relative one start in the home directory; the link holds the
    /// absolute path the gather expanded it to.
    pub src: Option<String>,
}

impl FileArgs {
    pub fn render(&self, vars: &Vars) -> Result<FileAction, RenderError> {
        let refuse = |field, message: &str| {
            Err(RenderError {
                field,
                message: message.into(),
            })
        };
        let src = match (self.state, &self.src) {
            (State::Link, None) => {
                return refuse(
                    "src",
                    "state: link needs `src`, the path the link points to",
                );
            }
            (State::Link, Some(src)) => Some(render("src", src, vars, Escape::Path)?),
            (_, Some(_)) => return refuse("src", "`src` is only for state: link"),
            (_, None) => None,
        };
        if src.is_some() && self.mode.is_some() {
            return refuse(
                "mode",
                "a symlink has no mode of its own: drop `mode` (set it on what the link points to)",
            );
        }
        Ok(FileAction {
            path: render("path", &self.path, vars, Escape::Path)?,
            state: self.state,
            mode: self.mode.map(|m| m.0),
            src,
        })
    }
}

/// The directory `path` is created in, as the host will read it: relative
/// paths start in the home directory.
fn parent(path: &str) -> String {
    let path = path.trim_end_matches('/');
    match path.rfind('/') {
        Some(0) => "/".into(),
        Some(end) => path[..end].into(),
        None => "~".into(),
    }
}

fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::File => "a regular file",
        Kind::Dir => "a directory",
        Kind::Link => "a symlink",
        Kind::Other => "a special file",
        Kind::Missing => "missing",
    }
}

impl Module for FileAction {
    fn kind(&self) -> ModuleKind {
        ModuleKind::File
    }

    fn path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn installs(&self) -> Option<Installed> {
        let src = self.src.as_ref()?;
        Some(Installed::Link(self.path.clone(), src.clone()))
    }

    /// The paths a decision reads: the path; for a link, also its directory
    /// and what it points to (whose expanded path is the link's target).
    fn probes(&self, _want_diff: bool) -> Vec<Probe> {
        let mut probes = vec![Probe::stat(&self.path)];
        if let Some(src) = &self.src {
            probes.push(Probe::stat(&parent(&self.path)));
            probes.push(Probe::stat(src));
        }
        probes
    }

    fn decide(&self, facts: &mut Facts, run: Run) -> Decision {
        let state = facts.get(&self.path);
        match self.state {
            State::Absent if state.kind == Kind::Missing => Decision::default(),
            State::Absent => {
                facts.remove(&self.path);
                Decision {
                    changes: true,
                    op: Some(Op::remove(&self.path)),
                    msg: Some("removed".into()),
                    ..Decision::default()
                }
            }
            // No mode: an existing directory keeps the one it has.
            State::Directory => match state.kind {
                Kind::Dir if self.mode.is_none() || state.mode == self.mode => Decision::default(),
                Kind::Dir => {
                    facts.set(&self.path, Kind::Dir, self.mode, None);
                    Decision::chmod(&self.path, state.mode, self.mode.unwrap_or_default())
                }
                // A user's own ~/.local/bin may be a link to their dotfiles:
                // as Ansible (which follows it), it is the directory.
                Kind::Link if state.link_to_dir && self.mode.is_none() => Decision::default(),
                Kind::Link if state.link_to_dir => Decision {
                    failure: Some(format!(
                        "{} is a symlink to a directory: csdeploy sets no mode through a link; \
                         drop `mode` or name the directory itself",
                        state.path
                    )),
                    ..Decision::default()
                },
                Kind::Missing => {
                    facts.set(&self.path, Kind::Dir, self.mode, None);
                    Decision {
                        changes: true,
                        op: Some(Op::mkdir(&self.path, self.mode)),
                        msg: Some("created".into()),
                        ..Decision::default()
                    }
                }
                other => Decision {
                    failure: Some(format!(
                        "{} exists and is not a directory ({other:?})",
                        state.path
                    )),
                    ..Decision::default()
                },
            },
            State::Link => self.decide_link(facts, run.diff),
        }
    }
}

impl FileAction {
    fn decide_link(&self, facts: &mut Facts, want_diff: bool) -> Decision {
        let state = facts.get(&self.path);
        let src = facts.get(self.src.as_deref().unwrap_or_default());
        let target = src.path.as_str();
        let fail = |message: String| Decision {
            failure: Some(message),
            ..Decision::default()
        };
        match state.kind {
            Kind::Link if state.target.as_deref() == Some(target) => Decision::default(),
            Kind::Missing => {
                let dir = facts.get(&parent(&self.path));
                if !matches!(dir.kind, Kind::Dir | Kind::Link) {
                    return fail(format!(
                        "cannot link {} to {target}: its directory {} is {}",
                        state.path,
                        dir.path,
                        describe(dir.kind)
                    ));
                }
                if src.kind == Kind::Missing {
                    return fail(format!(
                        "cannot link {} to {target}: {target} does not exist",
                        state.path
                    ));
                }
                facts.set_link(&self.path, target);
                Decision {
                    changes: true,
                    op: Some(Op::link(&self.path, target)),
                    diff: want_diff.then(|| {
                        format!(
                            "--- before: {0}\n+++ after: {0}\n-(absent)\n+symlink -> {target}\n",
                            state.path
                        )
                    }),
                    msg: Some(format!("linked to {target}")),
                    ..Decision::default()
                }
            }
            kind => {
                let what = match (kind, &state.target) {
                    (Kind::Link, Some(old)) => format!("a symlink to {old}"),
                    _ => describe(kind).to_string(),
                };
                fail(format!(
                    "{} is {what}, not a link to {target}: csdeploy never replaces a file it did \
                     not create. To have it linked, remove it (or move it aside) and push again",
                    state.path
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::PathState;
    use crate::protocol::GatherReply;

    const LINK: &str = "~/.local/bin/claude-session";
    const SRC: &str = "~/.claude/bin/claude-session";

    fn link() -> FileAction {
        FileAction {
            path: LINK.into(),
            state: State::Link,
            mode: None,
            src: Some(SRC.into()),
        }
    }

    /// Facts for the link's probes: the link (`kind`, `target`), its
    /// directory and its source as `dir` and `src` say.
    fn facts(kind: Kind, target: Option<&str>, dir: Kind, src: Kind) -> Facts {
        let action = link();
        let state = |path: &str, kind: Kind| PathState {
            kind,
            mode: (kind != Kind::Missing).then_some(0o755),
            uid: Some(1000),
            ..PathState::missing(path)
        };
        let paths = vec![
            PathState {
                target: target.map(String::from),
                ..state("/h/.local/bin/claude-session", kind)
            },
            state("/h/.local/bin", dir),
            state("/h/.claude/bin/claude-session", src),
        ];
        Facts::new(&action.probes(false), GatherReply { uid: 1000, paths })
    }

    #[test]
    fn a_link_is_created_where_nothing_is_and_kept_where_it_points_right() {
        let mut missing = facts(Kind::Missing, None, Kind::Dir, Kind::File);
        let created = link().decide(&mut missing, Run::DIFF);
        assert!(created.changes && created.failure.is_none(), "{created:?}");
        let Some(Op::Link { path, target }) = created.op else {
            panic!("a link: {created:?}");
        };
        assert_eq!(path, LINK);
        assert_eq!(
            target, "/h/.claude/bin/claude-session",
            "the expanded target"
        );
        assert_eq!(
            created.msg.as_deref(),
            Some("linked to /h/.claude/bin/claude-session")
        );
        assert!(
            created
                .diff
                .unwrap()
                .contains("+symlink -> /h/.claude/bin/claude-session")
        );
        // The next task sees the planned link: deciding again changes nothing.
        let again = link().decide(&mut missing, Run::PLAIN);
        assert!(!again.changes && again.op.is_none() && again.failure.is_none());

        let right = Some("/h/.claude/bin/claude-session");
        let kept = link().decide(
            &mut facts(Kind::Link, right, Kind::Dir, Kind::File),
            Run::PLAIN,
        );
        assert!(
            !kept.changes && kept.op.is_none() && kept.failure.is_none(),
            "{kept:?}"
        );
    }

    #[test]
    fn a_link_never_replaces_what_it_did_not_create() {
        for (kind, target, what) in [
            (Kind::File, None, "is a regular file"),
            (Kind::Dir, None, "is a directory"),
            (Kind::Other, None, "is a special file"),
            (
                Kind::Link,
                Some("/usr/bin/other"),
                "is a symlink to /usr/bin/other",
            ),
            // A relative target that happens to resolve there is still not ours.
            (
                Kind::Link,
                Some("../../.claude/bin/claude-session"),
                "is a symlink to ../../",
            ),
        ] {
            let decision =
                link().decide(&mut facts(kind, target, Kind::Dir, Kind::File), Run::PLAIN);
            assert!(decision.op.is_none() && !decision.changes, "{kind:?}");
            let failure = decision.failure.expect("a failure");
            assert!(
                failure.starts_with(&format!("/h/.local/bin/claude-session {what}")),
                "{failure}"
            );
            assert!(
                failure.contains("never replaces a file it did not create")
                    && failure.contains("remove it"),
                "{failure}"
            );
        }
    }

    #[test]
    fn a_link_needs_its_directory_and_its_source() {
        let no_dir = link().decide(
            &mut facts(Kind::Missing, None, Kind::Missing, Kind::File),
            Run::PLAIN,
        );
        let failure = no_dir.failure.expect("a failure");
        assert!(
            failure.contains("its directory /h/.local/bin is missing"),
            "{failure}"
        );
        let no_src = link().decide(
            &mut facts(Kind::Missing, None, Kind::Dir, Kind::Missing),
            Run::PLAIN,
        );
        let failure = no_src.failure.expect("a failure");
        assert!(
            failure.contains("/h/.claude/bin/claude-session does not exist"),
            "{failure}"
        );
    }

    #[test]
    fn a_symlink_to_a_directory_serves_as_the_directory_without_a_mode() {
        let decide = |link_to_dir: bool, mode: Option<u32>| {
            let dir = FileAction {
                path: "/h/.local/bin".into(),
                state: State::Directory,
                mode,
                src: None,
            };
            let reply = GatherReply {
                uid: 1000,
                paths: vec![PathState {
                    kind: Kind::Link,
                    mode: Some(0o777),
                    target: Some("dotfiles/bin".into()),
                    link_to_dir,
                    ..PathState::missing("/h/.local/bin")
                }],
            };
            dir.decide(&mut Facts::new(&dir.probes(false), reply), Run::PLAIN)
        };
        let ok = decide(true, None);
        assert!(
            !ok.changes && ok.op.is_none() && ok.failure.is_none(),
            "{ok:?}"
        );
        let failure = decide(true, Some(0o755)).failure.expect("a failure");
        assert!(failure.contains("sets no mode through a link"), "{failure}");
        let failure = decide(false, None).failure.expect("a failure");
        assert!(failure.contains("is not a directory"), "{failure}");
    }

    #[test]
    fn a_directory_without_mode_keeps_the_mode_it_has() {
        let dir = FileAction {
            path: "/h/d".into(),
            state: State::Directory,
            mode: None,
            src: None,
        };
        let reply = GatherReply {
            uid: 1000,
            paths: vec![PathState {
                kind: Kind::Dir,
                mode: Some(0o700),
                ..PathState::missing("/h/d")
            }],
        };
        let mut facts = Facts::new(&dir.probes(false), reply);
        let decision = dir.decide(&mut facts, Run::PLAIN);
        assert!(!decision.changes && decision.op.is_none(), "{decision:?}");
        let with_mode = FileAction {
            mode: Some(0o755),
            ..dir
        };
        let op = with_mode.decide(&mut facts, Run::PLAIN).op;
        assert!(matches!(op, Some(Op::Chmod { mode: 0o755, .. })), "{op:?}");
    }

    /// The agent's results for `ops`, run here.
    fn apply(ops: &[Op]) -> Vec<crate::protocol::OpResult> {
        let (out, err, code) =
            crate::protocol::tests::run_agent(&crate::protocol::apply_request(ops));
        assert_eq!(code, Some(0), "{err}");
        let reply: crate::protocol::ApplyReply =
            crate::protocol::reply(out.trim_ascii_end()).unwrap();
        reply.results
    }

    #[test]
    fn apply_links_only_where_nothing_is_even_if_something_appeared_since_the_gather() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("claude-session");
        let link = link.to_str().unwrap();
        let target = "/x/.claude/bin/claude-session";
        let reply = apply(&[Op::link(link, target)]);
        assert!(reply[0].ok, "{reply:?}");
        assert_eq!(std::fs::read_link(link).unwrap().to_str(), Some(target));
        // Applied again (a rerun racing another): already right, fine.
        assert!(apply(&[Op::link(link, target)])[0].ok);
        // Anything else there is kept, and the op fails saying why.
        std::fs::remove_file(link).unwrap();
        std::fs::write(link, b"mine").unwrap();
        let reply = apply(&[Op::link(link, target)]);
        assert!(!reply[0].ok, "{reply:?}");
        let msg = reply[0].msg.as_deref().unwrap_or("");
        assert!(
            msg.contains("never replaces a file it did not create"),
            "{msg}"
        );
        assert_eq!(std::fs::read(link).unwrap(), b"mine");
    }

    #[test]
    fn link_arguments_are_checked_before_anything_runs() {
        let vars = Vars::new();
        let args = |state: State, src: Option<&str>, mode: Option<u32>| FileArgs {
            path: "~/x".into(),
            state,
            mode: mode.map(Mode),
            src: src.map(String::from),
        };
        let refused = |args: FileArgs| args.render(&vars).err().map(|e| (e.field, e.message));
        assert!(refused(args(State::Link, Some("~/y"), None)).is_none());
        assert!(refused(args(State::Link, Some("/y"), None)).is_none());
        assert!(refused(args(State::Link, Some("y"), None)).is_none());
        for (a, field, needle) in [
            (args(State::Link, None, None), "src", "needs `src`"),
            (
                args(State::Directory, Some("/y"), None),
                "src",
                "only for state: link",
            ),
            (
                args(State::Link, Some("/y"), Some(0o755)),
                "mode",
                "no mode of its own",
            ),
        ] {
            let (f, message) = refused(a).expect("refused");
            assert_eq!(f, field);
            assert!(message.contains(needle), "{message}");
        }
        assert_eq!(parent("~/.local/bin/x"), "~/.local/bin");
        assert_eq!(parent("/x"), "/");
        assert_eq!(parent("x"), "~");
        assert_eq!(parent("a/b/"), "a");
    }
}
