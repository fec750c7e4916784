//! Reporters: consumers of engine events. The display mode is chosen by a
//! pure function of the terminal, CI and the flags, so it can be tested.

pub mod human;
pub mod json;

use crate::events::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// indicatif bars on stderr, results on stdout.
    Progress,
    /// One plain line per event on stdout: logs, pipes, CI.
    Plain,
    /// One JSON document on stdout, nothing else there.
    Json,
}

pub fn display(format: Format, stderr_is_terminal: bool, ci: bool) -> Display {
    match format {
        Format::Json => Display::Json,
        Format::Text if stderr_is_terminal && !ci => Display::Progress,
        Format::Text => Display::Plain,
    }
}

pub trait Reporter: Send {
    fn event(&mut self, event: &Event);
}

pub fn reporter(display: Display, command: &str, diff: bool) -> Box<dyn Reporter> {
    match display {
        Display::Json => Box::new(json::JsonReporter::new(command)),
        Display::Progress => Box::new(human::HumanReporter::new(true, diff)),
        Display::Plain => Box::new(human::HumanReporter::new(false, diff)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_mode() {
        assert_eq!(display(Format::Text, true, false), Display::Progress);
        assert_eq!(display(Format::Text, true, true), Display::Plain);
        assert_eq!(display(Format::Text, false, false), Display::Plain);
        assert_eq!(display(Format::Json, true, false), Display::Json);
        assert_eq!(display(Format::Json, false, true), Display::Json);
    }
}
