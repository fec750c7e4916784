//! Reporters: consumers of engine events. Which ones run, and where they
//! write, is a pure function of the format, the terminal, CI and `--output`,
//! so it can be tested without a terminal.

pub mod day2;
pub mod human;
pub mod json;
pub mod junit;
pub mod merge;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::events::{Command, Event};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Junit,
}

/// `--color`: whether the human text is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// When stdout is a terminal, unless NO_COLOR is set (or CLICOLOR_FORCE forces it).
    Auto,
    Always,
    Never,
}

/// The environment variables that speak about colour (no-color.org,
/// bixense.com/clicolors), as the CLI layer read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ColorEnv {
    /// `NO_COLOR` is set and not empty.
    pub no_color: bool,
    /// `CLICOLOR_FORCE` is set and not `0`.
    pub force: bool,
}

/// Whether the human text is coloured: the flag first, then NO_COLOR, then
/// CLICOLOR_FORCE, then whether stdout (where the text goes) is a terminal.
pub fn use_color(choice: ColorChoice, env: ColorEnv, stdout_is_terminal: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto if env.no_color => false,
        ColorChoice::Auto => env.force || stdout_is_terminal,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// indicatif bars on stderr, result lines on stdout.
    Progress,
    /// One plain line per event on stdout: logs, pipes, CI.
    Plain,
}

/// What gets printed where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outputs {
    /// Human text on stdout, if any.
    pub human: Option<Display>,
    /// A document (json, junit, or the text transcript) and where it goes:
    /// `None` is stdout.
    pub document: Option<(Format, Option<PathBuf>)>,
    /// Whether the human text on stdout is coloured (a file never is).
    pub color: bool,
}

pub fn outputs(
    format: Format,
    output: Option<&Path>,
    stderr_is_terminal: bool,
    ci: bool,
    color: bool,
) -> Outputs {
    let display = if stderr_is_terminal && !ci {
        Display::Progress
    } else {
        Display::Plain
    };
    match (format, output) {
        (Format::Text, None) => Outputs {
            human: Some(display),
            document: None,
            color,
        },
        // A document on stdout is all stdout holds.
        (format, None) => Outputs {
            human: None,
            document: Some((format, None)),
            color: false,
        },
        (format, Some(file)) => Outputs {
            human: Some(display),
            document: Some((format, Some(file.to_path_buf()))),
            color,
        },
    }
}

/// `n` and the word, in the singular for one: "1 host", "2 hosts".
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

pub trait Reporter: Send {
    fn event(&mut self, event: &Event);

    /// Whether everything this reporter had to write was written: a report
    /// file that could not be written fails the run.
    fn wrote_all(&self) -> bool {
        true
    }
}

/// The host reports of a run, gathered from its events, for the reporters
/// that write once it ends.
#[derive(Debug, Default)]
pub struct Collected {
    order: Vec<String>,
    reports: Vec<crate::events::HostReport>,
}

impl Collected {
    /// Takes what `event` adds to the collection.
    pub fn take(&mut self, event: &Event) {
        match event {
            Event::RunStarted { hosts, .. } => self.order = hosts.clone(),
            Event::HostDone(report) => self.reports.push(report.clone()),
            _ => {}
        }
    }

    /// The reports in inventory order, whatever order the hosts finished in.
    pub fn in_order(&mut self) -> &[crate::events::HostReport] {
        let order = &self.order;
        self.reports
            .sort_by_key(|r| order.iter().position(|h| *h == r.host));
        &self.reports
    }
}

/// The reporters for one run of `command` (push, run, verify).
pub fn reporters(outputs: &Outputs, command: Command, diff: bool) -> Vec<Box<dyn Reporter>> {
    let mut list: Vec<Box<dyn Reporter>> = Vec::new();
    if let Some(display) = outputs.human {
        let reporter = human::HumanReporter::new(display, diff, None).colored(outputs.color);
        list.push(Box::new(reporter));
    }
    if let Some((format, target)) = &outputs.document {
        let target = target.clone();
        list.push(match format {
            Format::Json => Box::new(json::JsonReporter::new(command, target)),
            Format::Junit => Box::new(junit::JunitReporter::new(command, target)),
            Format::Text => Box::new(human::HumanReporter::new(Display::Plain, diff, target)),
        });
    }
    list
}

/// Writes a finished document to stdout or, atomically, to a file; false
/// (and a message) if the file could not be written. A closed stdout (`| head`)
/// is the reader's choice, not a failure.
pub fn write_document(target: Option<&Path>, text: &str) -> bool {
    match target {
        None => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            true
        }
        Some(path) => match write_file(path, text) {
            Ok(()) => true,
            Err(err) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "csdeploy: error: cannot write {}: {err}",
                    path.display()
                );
                false
            }
        },
    }
}

/// Checks, before anything runs, that a report can be written to `path`:
/// a run whose report is lost would have changed hosts for nothing.
pub fn check_writable(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a directory",
        ));
    }
    // The directory first: std's own error says what is wrong with it.
    std::fs::metadata(parent_dir(path))?;
    tempfile::NamedTempFile::new_in(parent_dir(path))
        .map(drop)
        .map_err(without_temp_path)
}

/// The error without the temp file's name (`at path "/x/.tmpeu2p9y"`), which
/// the user never asked for: what failed is the report's own path.
fn without_temp_path(err: std::io::Error) -> std::io::Error {
    std::io::Error::new(err.kind(), err.kind().to_string())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = tempfile::NamedTempFile::new_in(parent_dir(path)).map_err(without_temp_path)?;
    file.write_all(text.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_that_cannot_be_written_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing").join("report.json");
        assert!(!write_document(Some(&missing), "{}"));
        let err = check_writable(&missing).unwrap_err().to_string();
        assert!(!err.contains(".tmp"), "{err}");
        assert!(err.contains("No such file or directory"), "{err}");
        assert!(check_writable(dir.path()).is_err(), "a directory");
        let fine = dir.path().join("report.json");
        check_writable(&fine).unwrap();
        assert!(write_document(Some(&fine), "{}"));
        assert_eq!(std::fs::read_to_string(&fine).unwrap(), "{}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn counts_are_singular_for_one() {
        assert_eq!(plural(1, "host"), "1 host");
        assert_eq!(plural(0, "host"), "0 hosts");
        assert_eq!(plural(2, "remote command"), "2 remote commands");
    }

    #[test]
    fn color_follows_the_flag_then_no_color_then_clicolor_force_then_the_terminal() {
        let none = ColorEnv::default();
        let no_color = ColorEnv {
            no_color: true,
            force: false,
        };
        let force = ColorEnv {
            no_color: false,
            force: true,
        };
        let both = ColorEnv {
            no_color: true,
            force: true,
        };
        assert!(use_color(ColorChoice::Auto, none, true));
        assert!(!use_color(ColorChoice::Auto, none, false));
        assert!(!use_color(ColorChoice::Auto, no_color, true));
        assert!(use_color(ColorChoice::Auto, force, false));
        assert!(!use_color(ColorChoice::Auto, both, true), "NO_COLOR wins");
        assert!(use_color(ColorChoice::Always, both, false), "the flag wins");
        assert!(!use_color(ColorChoice::Never, force, true), "the flag wins");
    }

    #[test]
    fn outputs_follow_format_terminal_ci_and_output() {
        let text = |tty, ci| outputs(Format::Text, None, tty, ci, false).human;
        assert_eq!(text(true, false), Some(Display::Progress));
        assert_eq!(text(true, true), Some(Display::Plain));
        assert_eq!(text(false, false), Some(Display::Plain));
        let json = outputs(Format::Json, None, true, false, true);
        assert!(!json.color, "a document is never coloured");
        assert_eq!(json.human, None, "stdout holds the document alone");
        assert_eq!(json.document, Some((Format::Json, None)));
        let file = outputs(Format::Junit, Some(Path::new("r.xml")), false, true, true);
        assert!(file.color, "the text beside a report file keeps its colour");
        assert_eq!(file.human, Some(Display::Plain));
        assert_eq!(
            file.document,
            Some((Format::Junit, Some(PathBuf::from("r.xml"))))
        );
    }
}
