//! csdeploy: deploys the Claude Code parallel-session tooling to a fleet over
//! SSH, Ansible-style, and verifies it remotely.

mod app;
mod builtin;
pub mod cli;
mod engine;
pub mod error;
mod events;
mod facts;
mod host;
mod ini;
mod inventory;
mod modules;
mod plan;
mod playbook;
mod protocol;
mod quote;
mod report;
mod secrets;
mod select;
mod ssh_args;
mod template;
mod transport;
mod vars;
mod yaml;

pub use cli::run;
