//! What the gather step learned about a host, and the controller's running
//! picture of it as each task's planned change is applied in order, so later
//! tasks are judged against what earlier ones will have done.

use std::collections::HashMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
    /// For a file: the sha256 it should have; its old content comes back when it differs.
    pub want: Option<String>,
}

impl Probe {
    pub fn stat(path: &str) -> Probe {
        Probe {
            path: path.to_string(),
            want: None,
        }
    }

    pub fn file(path: &str, sha256: &str) -> Probe {
        Probe {
            path: path.to_string(),
            want: Some(sha256.to_string()),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({"path": self.path, "hash": self.want.is_some(), "want": self.want})
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PathState {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub sha256: Option<String>,
    /// Base64 of the old content, when it differs from what the task wants.
    pub content: Option<String>,
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
        }
    }

    pub fn old_content(&self) -> Option<Vec<u8>> {
        let text = self.content.as_ref()?;
        base64::engine::general_purpose::STANDARD.decode(text).ok()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct GatherReply {
    pub uid: u32,
    pub paths: Vec<PathState>,
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
            },
        );
    }

    /// Records the removal of a path and everything below it.
    pub fn remove(&mut self, path: &str) {
        let absolute = self.absolute(path);
        let below = format!("{}/", absolute.trim_end_matches('/'));
        self.states
            .retain(|p, _| p != &absolute && !p.starts_with(&below));
    }
}
