//! The one protocol between the controller and a host: what crosses the
//! wire in a host's one remote command, and the Rust side of its codec
//! (the host side is `src/remote/agent.py`; `src/remote/gather.sh` starts
//! the command).
//!
//! # The command
//!
//! `/bin/sh -c GATHER_SH csdeploy-gather PYTHON FALLBACK MARKER WANTS PATH...`
//! talks on its stdin and stdout:
//!
//! 1. With a MARKER, the shell gathers first: no interpreter starts, so a
//!    push with nothing to change costs one `sh`, one `stat` and one
//!    `sha256sum`. It prints NUL-separated records (see gather.sh; the one
//!    format that is not JSON, since sh cannot write JSON for arbitrary path
//!    bytes), then `\0MARKER\n`; MARKER is fresh for each run, so no path
//!    can hold it. [`parse_sh_gather`] reads them into a [`GatherReply`].
//! 2. The shell then reads one line: EOF (or anything but `agent`) ends the
//!    command, exit 0. `agent` starts the Python agent (the configured
//!    interpreter, else the platform python3 first, then PATH's), which
//!    reads its own source as the frame `{"agent": SIZE}\n` + SIZE bytes.
//!    Where no python3 exists and the plan brings a FALLBACK (doctor.sh),
//!    stdin is drained and the fallback answers the one request in the
//!    agent's place.
//! 3. The agent reads requests until EOF and answers each with one JSON
//!    line. A request is one JSON line, a header with named fields; the
//!    contents of files follow it as raw bytes whose sizes the header names:
//!    - `{"request": "gather", "probes": [{"path", "want"}]}` (want: null,
//!      stat only; `"hash"`, and the sha256; a sha256, and the old content
//!      when the file differs from it, for --diff). Reply:
//!      `{"uid", "paths": [{"path", "kind", "mode", "uid", "sha256",
//!      "target", "link_to_dir", "content_size"}]}`, then each old content
//!      (`content_size` bytes, in order).
//!    - `{"request": "apply", "ops": [Op...]}` then, in op order, each
//!      `write` op's `size` bytes and each `program` op's `source_size`
//!      bytes of source. Every byte is read before anything changes,
//!      so a connection dropped while contents stream changes nothing.
//!      Reply: `{"results": [{"ok", "skipped", "msg", "backup", "rc",
//!      "stdout", "stderr", "checks", "data"}]}`, one per op that ran: it
//!      stops at the first failure, as Ansible stops a host.
//!
//!    A frame it cannot read is answered `{"error": "..."}` and ends the
//!    agent (exit 2).
//!
//! The one other command a host may see: when a step outlives its time,
//! the engine runs `true` there (`engine::answers`), only to tell a slow
//! step from a link gone silent. It carries no data and counts in
//! `remote_commands` like any other.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::events::CheckResult;
use crate::facts::{Kind, PathState, Probe};

/// The line that starts the agent, and the header of its source.
pub const START_AGENT: &[u8] = b"agent\n";

/// The `python3 -c` program gather.sh starts the agent with: one line that
/// `ps` shows starting with `'csdeploy-agent'`; it reads the agent's source
/// from stdin. (Here for the tests, which start the agent as a host does.)
#[cfg(test)]
pub const BOOT: &str = "'csdeploy-agent'; import sys, json; i = sys.stdin.buffer; \
    exec(compile(i.read(json.loads(i.readline())['agent']), 'csdeploy-agent', 'exec'))";

/// What a program is: argv run without a shell, or shell text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Program {
    #[serde(rename = "argv")]
    Argv(Vec<String>),
    #[serde(rename = "sh")]
    Shell(String),
}

/// One change the agent's apply request carries.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Mkdir {
        path: String,
        mode: Option<u32>,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    /// A path and everything below it.
    Remove {
        path: String,
    },
    /// A symlink at `path` to `target`, never replacing anything.
    Link {
        path: String,
        target: String,
    },
    /// A file replaced atomically; its content follows the header.
    Write {
        path: String,
        mode: Option<u32>,
        backup: bool,
        #[serde(rename = "size", serialize_with = "byte_count")]
        content: Arc<Vec<u8>>,
    },
    Command {
        #[serde(flatten)]
        program: Program,
        env: std::collections::BTreeMap<String, String>,
        creates: Option<String>,
    },
    /// A program's `run(args)` (the verifier, a day-two program), in the
    /// agent's process; its source follows the header, as a write's content
    /// does.
    Program {
        args: Value,
        #[serde(rename = "source_size", serialize_with = "text_size")]
        source: &'static str,
        /// It honours check mode itself, so it is sent in check mode too.
        #[serde(skip)]
        check_mode: bool,
    },
}

fn byte_count<S: Serializer>(content: &Arc<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(content.len() as u64)
}

fn text_size<S: Serializer>(text: &&'static str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(text.len() as u64)
}

impl Op {
    /// Whether the op is sent in check mode (it changes nothing then).
    pub fn honours_check_mode(&self) -> bool {
        matches!(
            self,
            Op::Program {
                check_mode: true,
                ..
            }
        )
    }

    pub fn mkdir(path: &str, mode: Option<u32>) -> Op {
        Op::Mkdir {
            path: path.into(),
            mode,
        }
    }

    pub fn chmod(path: &str, mode: u32) -> Op {
        Op::Chmod {
            path: path.into(),
            mode,
        }
    }

    pub fn remove(path: &str) -> Op {
        Op::Remove { path: path.into() }
    }

    pub fn link(path: &str, target: &str) -> Op {
        Op::Link {
            path: path.into(),
            target: target.into(),
        }
    }

    pub fn write(path: &str, mode: Option<u32>, backup: bool, content: Arc<Vec<u8>>) -> Op {
        Op::Write {
            path: path.into(),
            mode,
            backup,
            content,
        }
    }

    /// A program (`run(args)` in `source`, see agent.py): the verifier or
    /// a day-two program.
    pub fn program(args: &Value, source: &'static str, check_mode: bool) -> Op {
        Op::Program {
            args: args.clone(),
            source,
            check_mode,
        }
    }
}

/// The agent's source, as the frame that follows [`START_AGENT`].
#[cfg(test)]
pub fn agent_frame(source: &str) -> Vec<u8> {
    let (mut frame, source) = agent_pieces(source);
    frame.extend_from_slice(source);
    frame
}

/// [`agent_frame`] as the header and the source, sent one after the
/// other: the source is borrowed, never copied for each host.
pub fn agent_pieces(source: &str) -> (Vec<u8>, &[u8]) {
    let header = format!("{{\"agent\": {}}}\n", source.len()).into_bytes();
    (header, source.as_bytes())
}

#[derive(Serialize)]
struct WireProbe<'a> {
    path: &'a str,
    want: Option<&'a str>,
}

/// `{"request": "gather", "probes": [...]}`.
pub fn gather_request(probes: &[Probe]) -> Vec<u8> {
    let probes: Vec<WireProbe> = probes
        .iter()
        .map(|p| WireProbe {
            path: &p.path,
            want: p.want.as_deref(),
        })
        .collect();
    let mut line = serde_json::to_vec(&serde_json::json!({"request": "gather", "probes": probes}))
        .expect("a probe list serialises");
    line.push(b'\n');
    line
}

/// `{"request": "apply", "ops": [...]}`, then the contents of the writes.
#[cfg(test)]
pub fn apply_request(ops: &[Op]) -> Vec<u8> {
    let (mut frame, contents) = apply_pieces(ops);
    for content in contents {
        frame.extend_from_slice(content);
    }
    frame
}

/// [`apply_request`] as its header line and what follows it in op order
/// (the contents of the writes, the sources of programs), sent one after
/// the other: what every host of a fleet shares is borrowed, never copied
/// for each host.
pub fn apply_pieces(ops: &[Op]) -> (Vec<u8>, Vec<&[u8]>) {
    let mut header = serde_json::to_vec(&serde_json::json!({"request": "apply", "ops": ops}))
        .expect("ops serialise");
    header.push(b'\n');
    let contents = ops
        .iter()
        .filter_map(|op| match op {
            Op::Write { content, .. } => Some(content.as_slice()),
            Op::Program { source, .. } => Some(source.as_bytes()),
            _ => None,
        })
        .collect();
    (header, contents)
}

/// What a reply that is not JSON most likely means.
const NOT_JSON: &str = "something that is not the agent's reply: does the login shell print \
    (from ~/.bashrc, say) even when it only runs a command? Every csdeploy step needs a quiet one";

/// Reads one reply line of the agent's as `T`; `{"error"}` is its refusal.
pub fn reply<T: serde::de::DeserializeOwned>(line: &[u8]) -> Result<T, String> {
    let bad = |what: String| format!("the csdeploy agent answered with {what}");
    let value: Value = serde_json::from_slice(line).map_err(|_| bad(NOT_JSON.into()))?;
    if let Some(error) = value.get("error") {
        let error = error.as_str().unwrap_or("an error");
        return Err(format!("the csdeploy agent refused a request: {error}"));
    }
    serde_json::from_value(value).map_err(|e| bad(format!("a malformed reply: {e}")))
}

/// The state of the paths a plan touches.
#[derive(Debug, Clone, Deserialize)]
pub struct GatherReply {
    pub uid: u32,
    pub paths: Vec<PathState>,
}

/// What the agent did for one op.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OpResult {
    pub ok: bool,
    pub skipped: bool,
    pub msg: Option<String>,
    pub backup: Option<String>,
    pub rc: Option<i32>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    #[serde(deserialize_with = "null_is_empty")]
    pub checks: Vec<CheckResult>,
    pub data: Option<Value>,
}

fn null_is_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<CheckResult>, D::Error> {
    Ok(Option::<Vec<CheckResult>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
pub struct ApplyReply {
    pub results: Vec<OpResult>,
}

/// Parses gather.sh's records (everything before its marker) for `probes`.
pub fn parse_sh_gather(reply: &[u8], probes: &[Probe]) -> Result<GatherReply, String> {
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
    let uid = field()?.parse().map_err(|_| bad(NOT_JSON))?;
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
                // `PATH -> TARGET`, unquoted; anything else is a stat that
                // quotes (older than coreutils 8.26): the agent gathers then.
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
                content_size: None,
                target,
                link_to_dir: kind == Kind::Link && to_dirs.contains(&path),
                path,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(GatherReply { uid, paths })
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

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};

    /// The real agent, started as a host starts it, fed `frames`; its
    /// stdout, stderr and exit code. Stdin is closed after the frames.
    pub fn run_agent(frames: &[u8]) -> (Vec<u8>, String, Option<i32>) {
        let mut child = Command::new("timeout")
            .args(["20", "python3", "-I", "-S", "-c", BOOT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(&agent_frame(crate::builtin::AGENT))
            .unwrap();
        let _ = stdin.write_all(frames);
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.stdout, err, out.status.code())
    }

    /// Splits an agent's gather reply into the reply and its contents.
    pub fn read_gather(out: &[u8]) -> (GatherReply, Vec<u8>) {
        let mut reader = BufReader::new(out);
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).unwrap();
        let reply: GatherReply = reply(&line).unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        (reply, rest)
    }

    #[test]
    fn contents_and_paths_with_any_bytes_round_trip_through_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let path = format!("{}/new\nline \"file\"", dir.path().display());
        let content: Vec<u8> = b"a\0b\nc\r\n\xff{\"request\": \"apply\"}\n".to_vec();
        let write = Op::Write {
            path: path.clone(),
            mode: Some(0o640),
            backup: false,
            content: Arc::new(content.clone()),
        };
        let link = Op::Link {
            path: format!("{}/l", dir.path().display()),
            target: "t\narget".into(),
        };
        let mut frames = apply_request(&[write, link]);
        frames.extend(gather_request(&[Probe::file(&path, Some("0000"))]));
        let (out, err, code) = run_agent(&frames);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), content);
        let newline = out.iter().position(|&b| b == b'\n').unwrap();
        let applied: ApplyReply = reply(&out[..newline]).unwrap();
        assert_eq!(applied.results.len(), 2);
        assert!(applied.results.iter().all(|r| r.ok), "{applied:?}");
        let (gathered, rest) = read_gather(&out[newline + 1..]);
        let state = &gathered.paths[0];
        assert_eq!(state.path, path);
        assert_eq!((state.kind, state.mode), (Kind::File, Some(0o640)));
        assert_eq!(state.content_size, Some(content.len()));
        assert_eq!(rest, content, "the old content, byte for byte");
        assert_eq!(
            std::fs::read_link(format!("{}/l", dir.path().display()))
                .unwrap()
                .to_str(),
            Some("t\narget")
        );
    }

    #[test]
    fn a_malformed_frame_is_refused_clearly_and_ends_the_agent() {
        for (frame, says) in [
            (&b"not json\n"[..], "malformed frame"),
            (b"{\"request\": \"dance\"}\n", "unknown request"),
            (b"{\"request\": \"apply\", \"ops\": [{\"op\": \"write\", \"path\": \"/x\", \"size\": 10}]}\nabc", "input ended after 3 of 10 bytes"),
            (b"{\"request\": \"apply\", \"ops\": [{\"op\": \"fly\"}]}\n", "unknown op"),
        ] {
            let started = std::time::Instant::now();
            let (out, err, code) = run_agent(frame);
            assert_eq!(code, Some(2), "{err}");
            let line = String::from_utf8(out).unwrap();
            let refused = reply::<ApplyReply>(line.trim_end().as_bytes()).unwrap_err();
            assert!(refused.contains(says), "{refused}");
            assert!(started.elapsed() < std::time::Duration::from_secs(10));
        }
        let chatty = reply::<ApplyReply>(b"Welcome to host!").unwrap_err();
        assert!(chatty.contains("login shell print"), "{chatty}");
    }

    #[test]
    fn an_interrupted_program_stops_the_agent_rather_than_reporting_a_crash() {
        const INTERRUPTED: &str = "import os, signal, time\n\
            def run(args):\n    os.kill(os.getpid(), signal.SIGPIPE)\n    time.sleep(10)\n";
        let op = Op::program(&Value::Null, INTERRUPTED, false);
        let (out, err, code) = run_agent(&apply_request(&[op]));
        assert_eq!(code, Some(128 + 15), "{err}");
        assert!(
            out.is_empty(),
            "no reply: {}",
            String::from_utf8_lossy(&out)
        );
        assert!(err.contains("stopped where it was"), "{err}");
    }

    #[test]
    fn ops_carry_named_fields() {
        let op = Op::Command {
            program: Program::Argv(vec!["echo".into(), "hi".into()]),
            env: [("A".to_string(), "b".to_string())].into(),
            creates: None,
        };
        let json = serde_json::to_value(&op).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"op": "command", "argv": ["echo", "hi"], "env": {"A": "b"}, "creates": null})
        );
        let write = Op::Write {
            path: "/x".into(),
            mode: None,
            backup: true,
            content: Arc::new(vec![0; 5]),
        };
        let frame = apply_request(&[write]);
        assert!(frame.ends_with(b"\n\0\0\0\0\0"));
        assert!(String::from_utf8_lossy(&frame).contains("\"size\":5"));
    }
}
