//! Playbooks: a YAML list of plays `{name, hosts, vars, tasks}`, each task
//! `{name, <module>: {args}}`, parsed strictly: an unknown module or key, a
//! wrong type or a bad mode is an error naming file:line:column and the key.

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

use crate::builtin;
use crate::error::Result;
use std::sync::Arc;

use crate::modules::command::CommandArgs;
use crate::modules::copy::{CopyArgs, Source, SourceFiles};
use crate::modules::file::FileArgs;
use crate::modules::verify::VerifyArgs;
use crate::modules::{Action, RenderError};
use crate::yaml::{self, Locations};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlay {
    name: Option<String>,
    hosts: String,
    #[serde(default)]
    vars: IndexMap<String, Value>,
    #[serde(default)]
    tasks: Vec<RawTask>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: Option<String>,
    file: Option<FileArgs>,
    copy: Option<CopyArgs>,
    command: Option<CommandArgs>,
    verify: Option<VerifyArgs>,
}

#[derive(Debug, Clone)]
pub enum ModuleArgs {
    File(FileArgs),
    Copy(CopyArgs),
    Command(CommandArgs),
    Verify(VerifyArgs),
}

impl ModuleArgs {
    /// The task's module for one host, its templates rendered with `vars`.
    pub fn render(
        &self,
        vars: &crate::vars::Vars,
        files: &dyn SourceFiles,
    ) -> std::result::Result<Action, RenderError> {
        Ok(match self {
            ModuleArgs::File(args) => Arc::new(args.render(vars)?),
            ModuleArgs::Copy(args) => Arc::new(args.render(vars, files)?),
            ModuleArgs::Command(args) => Arc::new(args.render(vars)?),
            ModuleArgs::Verify(args) => Arc::new(args.render(vars)?),
        })
    }

    /// Whether the task changes the host (a verification does not).
    pub fn deploys(&self) -> bool {
        !matches!(self, ModuleArgs::Verify(_))
    }

    /// The module's key in a playbook.
    pub fn name(&self) -> &'static str {
        match self {
            ModuleArgs::File(_) => "file",
            ModuleArgs::Copy(_) => "copy",
            ModuleArgs::Command(_) => "command",
            ModuleArgs::Verify(_) => "verify",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    pub args: ModuleArgs,
    /// Key path of the task, e.g. `[0].tasks[3]`.
    pub at: String,
}

#[derive(Debug, Clone)]
pub struct Play {
    pub name: String,
    pub hosts: String,
    pub vars: IndexMap<String, Value>,
    pub tasks: Vec<Task>,
    pub at: String,
}

impl Play {
    /// The play behind `csdeploy verify` and `push --verify`.
    pub fn verification(args: VerifyArgs) -> Play {
        let name = VERIFICATION.to_string();
        Play {
            name: name.clone(),
            hosts: "all".into(),
            vars: IndexMap::new(),
            tasks: vec![Task {
                name,
                args: ModuleArgs::Verify(args),
                at: "(verify)".into(),
            }],
            at: "(verify)".into(),
        }
    }
}

/// The name of the verification's play and task, as `push --verify` adds it.
pub const VERIFICATION: &str = "Verify parallel-session isolation";

/// Where a playbook's `src` files are read from.
#[derive(Debug, Clone)]
pub enum Files {
    /// The playbook's directory: `files/<src>` first, then `<src>`.
    Dir(PathBuf),
    /// Compiled into the binary, for the built-in playbooks.
    Embedded,
}

impl SourceFiles for Files {
    fn read(&self, src: &str) -> Result<Source, String> {
        let bytes = match self {
            Files::Embedded => builtin::file(src)
                .map(|text| text.as_bytes().to_vec())
                .ok_or_else(|| format!("no built-in file `{src}`")),
            Files::Dir(dir) => {
                let candidates = [dir.join("files").join(src), dir.join(src)];
                let found = candidates
                    .iter()
                    .find(|p| p.is_file())
                    .unwrap_or(&candidates[1]);
                std::fs::read(found)
                    .map_err(|err| format!("cannot read {}: {err}", found.display()))
            }
        };
        bytes.map(Source::new)
    }
}

#[derive(Debug, Clone)]
pub struct Playbook {
    pub file: String,
    pub plays: Vec<Play>,
    pub locations: Locations,
    pub files: Files,
}

impl Playbook {
    pub fn parse(file: &str, text: &str, files: Files) -> Result<Playbook> {
        let (raw, locations) = yaml::load::<Vec<RawPlay>>(file, text)?;
        let mut plays = Vec::with_capacity(raw.len());
        for (p, play) in raw.into_iter().enumerate() {
            let at = format!("[{p}]");
            let mut tasks = Vec::with_capacity(play.tasks.len());
            for (t, task) in play.tasks.into_iter().enumerate() {
                let task_at = format!("{at}.tasks[{t}]");
                let mut modules: Vec<ModuleArgs> = Vec::new();
                modules.extend(task.file.map(ModuleArgs::File));
                modules.extend(task.copy.map(ModuleArgs::Copy));
                modules.extend(task.command.map(ModuleArgs::Command));
                modules.extend(task.verify.map(ModuleArgs::Verify));
                if modules.len() != 1 {
                    return Err(locations.error(
                        &task_at,
                        format!(
                            "a task takes exactly one module (file, copy, command or verify), found {}",
                            modules.len()
                        ),
                    ));
                }
                let args = modules.remove(0);
                tasks.push(Task {
                    name: task.name.unwrap_or_else(|| args.name().to_string()),
                    args,
                    at: task_at,
                });
            }
            plays.push(Play {
                name: play.name.unwrap_or_else(|| play.hosts.clone()),
                hosts: play.hosts,
                vars: play.vars,
                tasks,
                at,
            });
        }
        Ok(Playbook {
            file: file.to_string(),
            plays,
            locations,
            files,
        })
    }

    pub fn load(path: &std::path::Path) -> Result<Playbook> {
        let text = std::fs::read_to_string(path).map_err(|source| crate::error::Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path.parent().map(PathBuf::from).unwrap_or_default();
        Playbook::parse(&path.display().to_string(), &text, Files::Dir(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::Mode;

    fn parse(text: &str) -> Result<Playbook> {
        Playbook::parse("p.yml", text, Files::Embedded)
    }

    #[test]
    fn errors_name_line_and_key() {
        let cases = [
            (
                "- hosts: all\n  tasks:\n    - name: x\n      cpy: {dest: /x}\n",
                "p.yml:4:7: [0].tasks[0]: unknown field `cpy`",
            ),
            (
                "- hosts: all\n  tasks:\n    - copy:\n        dest: /x\n        mdoe: '0644'\n",
                "p.yml:5:9: [0].tasks[0].copy: unknown field `mdoe`",
            ),
            (
                "- hosts: all\n  tasks:\n    - file:\n        path: /x\n        state: directory\n        mode: '0999'\n",
                "p.yml:6:15: [0].tasks[0].file.mode: bad mode `0999`",
            ),
            (
                "- hosts: all\n  tasks:\n    - file:\n        path: [1]\n        state: directory\n",
                "p.yml:4:15: [0].tasks[0].file.path: invalid type",
            ),
            (
                "- hosts: all\n  tasks:\n    - name: two\n      file: {path: /x, state: absent}\n      command: {cmd: x}\n",
                "p.yml:3:7: [0].tasks[0]: a task takes exactly one module",
            ),
            ("- hosts: all\n  tasks: [\n", "p.yml:3:1:"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with(expected),
                "expected {expected:?}, got {err:?}"
            );
        }
    }

    #[test]
    fn builtin_push_playbook_parses() {
        let pb = parse(builtin::PUSH_PLAYBOOK).unwrap();
        assert!(pb.plays[0].tasks.len() >= 5);
    }

    #[test]
    fn play_vars_and_task_args_take_merge_keys() {
        let pb = parse(concat!(
            "- hosts: all\n",
            "  vars:\n",
            "    <<: &defaults {greeting: hello, name: world}\n",
            "    name: merge\n",
            "  tasks:\n",
            "    - file: &dir {path: /x, state: directory}\n",
            "    - file: {<<: *dir, path: /y}\n",
        ))
        .unwrap();
        let play = &pb.plays[0];
        assert_eq!(play.vars["greeting"], "hello");
        assert_eq!(play.vars["name"], "merge");
        assert!(!play.vars.contains_key("<<"), "{:?}", play.vars);
        let ModuleArgs::File(args) = &play.tasks[1].args else {
            panic!("{:?}", play.tasks[1].args)
        };
        assert_eq!(args.path, "/y");
        assert!(matches!(args.state, crate::modules::file::State::Directory));
    }

    #[test]
    fn yaml_1_1_values_mean_what_ansible_reads_and_strings_keep_their_text() {
        let pb = parse(concat!(
            "- hosts: all\n",
            "  name: 1.10\n",
            "  vars: {yes_: yes, off_: off, y: y, octal: 0755, time: 1:30, version: 1.10}\n",
            "  tasks:\n",
            "    - file: {path: 0755, state: directory, mode: 0755}\n",
            "    - copy: {dest: /y, content: yes, mode: \"0644\", backup: on}\n",
        ))
        .unwrap();
        let play = &pb.plays[0];
        assert_eq!(play.name, "1.10");
        let vars = serde_json::to_string(&play.vars).unwrap();
        assert_eq!(
            vars,
            r#"{"yes_":true,"off_":false,"y":"y","octal":493,"time":90,"version":1.1}"#
        );
        let ModuleArgs::File(file) = &play.tasks[0].args else {
            panic!("{:?}", play.tasks[0].args)
        };
        assert_eq!((file.path.as_str(), file.mode), ("0755", Some(Mode(0o755))));
        let ModuleArgs::Copy(copy) = &play.tasks[1].args else {
            panic!("{:?}", play.tasks[1].args)
        };
        assert_eq!(copy.content.as_deref(), Some("yes"));
        assert_eq!((copy.mode, copy.backup), (Some(Mode(0o644)), true));
    }

    #[test]
    fn a_repeated_key_is_an_error_naming_both_lines() {
        let cases = [
            (
                "- hosts: all\n  tasks:\n    - name: x\n      command: {cmd: a}\n      name: y\n",
                "p.yml:5:7: [0].tasks[0].name: duplicate key `name` (first at line 3)",
            ),
            (
                "- hosts: all\n  vars:\n    a: 1\n    a: 2\n",
                "p.yml:4:5: [0].vars.a: duplicate key `a` (first at line 3)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text).unwrap_err().to_string(), expected);
        }
        // A key the mapping sets over a merged one is no repeat.
        let pb = parse("- hosts: all\n  vars:\n    <<: {a: 1}\n    a: 2\n").unwrap();
        assert_eq!(pb.plays[0].vars["a"], 2);
    }

    #[test]
    fn errors_in_merged_tasks_name_where_the_key_is_written() {
        let cases = [
            (
                "- hosts: all\n  tasks:\n    - file: &dir {path: /x, state: directory}\n    - file:\n        <<: *dir\n        mdoe: '0644'\n",
                "p.yml:6:9: [0].tasks[1].file: unknown field `mdoe`",
            ),
            (
                "- hosts: all\n  vars:\n    bad: &bad {path: /x, state: directory, mode: '0999'}\n  tasks:\n    - file: {<<: *bad, path: /y}\n",
                "p.yml:3:50: [0].tasks[0].file.mode: bad mode `0999`",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with(expected),
                "expected {expected:?}, got {err:?}"
            );
        }
    }
}
