//! Variables: the values templates read, and csdeploy's built-in defaults.

use std::collections::BTreeMap;

use serde_json::Value;

pub type Vars = BTreeMap<String, Value>;

/// Lowest precedence: what a host gets when neither inventory nor play says
/// otherwise. The launcher reads these through the per-host `session.conf`.
pub fn builtin_defaults() -> Vars {
    let mut vars = Vars::new();
    vars.insert("claude_home".into(), Value::from("~/.claude"));
    vars.insert("max_sessions".into(), Value::from(4));
    vars.insert(
        "inherit_copy".into(),
        Value::from("settings.json CLAUDE.md"),
    );
    vars.insert("inherit_link".into(), Value::from(".credentials.json"));
    vars
}

/// What Claude Code writes for one session in its config directory: never
/// shared between sessions, whatever `inherit_copy`/`inherit_link` say. `push`
/// refuses an inventory that names one; the launcher skips it and `verify`
/// fails it. The deployed `session_registry.py` keeps its own copy of this
/// list (hosts run without csdeploy); a test checks that the two agree.
pub const PER_SESSION_STATE: &[&str] = &[
    ".claude.json",
    ".credentials.json",
    "history.jsonl",
    "projects",
    "sessions",
    "todos",
    "shell-snapshots",
    "statsig",
    "telemetry",
    "backups",
    "ide",
    "file-history",
    "session-env",
    "debug",
];

/// Variables plus the key path each one was set at, so a bad value can be
/// reported where it was written.
#[derive(Debug, Clone, Default)]
pub struct Scoped {
    pub values: Vars,
    pub origins: BTreeMap<String, String>,
}

impl Scoped {
    /// Sets every variable of `layer`, which was defined under key path `at`.
    pub fn overlay<'a>(
        &mut self,
        layer: impl IntoIterator<Item = (&'a String, &'a Value)>,
        at: &str,
    ) {
        for (key, value) in layer {
            self.values.insert(key.clone(), value.clone());
            self.origins.insert(key.clone(), format!("{at}.{key}"));
        }
    }

    pub fn origin(&self, key: &str) -> String {
        self.origins
            .get(key)
            .cloned()
            .unwrap_or_else(|| format!("(default).{key}"))
    }
}
