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
    vars.insert("inherit_copy".into(), Value::from(""));
    vars.insert("inherit_link".into(), Value::from(INHERIT_LINK.join(" ")));
    vars
}

/// What a new session links from `claude_home` by default: the user's
/// read-mostly configuration, so that it stays one thing to edit (a copy
/// would drift from the original at the first edit). Nothing is copied by
/// default. Login is not here: every session uses the default credential
/// store through `CLAUDE_SECURESTORAGE_CONFIG_DIR`, set by the launcher.
/// Not `plugins/`: Claude Code 2.1.x writes into it at start (the official
/// marketplace's auto-install), which through a link would change the
/// user's own directory from every session.
pub const INHERIT_LINK: &[&str] = &[
    "settings.json",
    "CLAUDE.md",
    "agents",
    "commands",
    "skills",
    "output-styles",
    "keybindings.json",
];

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

/// The most variable text csdeploy holds for one run, summed over the hosts
/// (each host gets its own resolved copy): past it the run is refused
/// before anything happens, rather than exhausting the controller's memory.
pub const MAX_RUN_VAR_BYTES: usize = 256 << 20;

/// Roughly how many bytes `vars` hold: their names and text.
pub fn bytes(vars: &Vars) -> usize {
    fn value(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(value).sum::<usize>() + items.len(),
            Value::Object(map) => map.iter().map(|(k, v)| k.len() + value(v)).sum(),
            _ => 8,
        }
    }
    vars.iter().map(|(k, v)| k.len() + value(v)).sum()
}

/// Adds one host's variables to a run's running total, refusing past
/// [`MAX_RUN_VAR_BYTES`].
pub fn account(
    total: &mut usize,
    vars: &Vars,
    hosts_so_far: usize,
    file: &str,
) -> crate::error::Result<()> {
    *total += bytes(vars);
    if *total > MAX_RUN_VAR_BYTES {
        return Err(crate::error::Error::Invalid {
            file: file.to_string(),
            key: "(variables)".into(),
            message: format!(
                "the variables of {hosts_so_far} host(s) already come to {} MiB, more than the {} MiB \
                 csdeploy holds for one run (each host resolves its own copy): keep big data in \
                 files (`copy: src`), not in inventory variables",
                *total >> 20,
                MAX_RUN_VAR_BYTES >> 20
            ),
        });
    }
    Ok(())
}

/// Variables plus the key path each one was set at, so a bad value can be
/// reported where it was written.
#[derive(Debug, Clone, Default)]
pub struct Scoped {
    pub values: Vars,
    pub origins: BTreeMap<String, String>,
    /// The variables whose Jinja csdeploy could not evaluate (kept as
    /// written), each with why: see [`crate::template::resolve_vars`].
    pub unresolved: BTreeMap<String, String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_refuses_more_variable_text_than_it_can_hold() {
        let mut vars = Vars::new();
        vars.insert("big".into(), Value::from("x".repeat(10 << 20)));
        vars.insert("list".into(), serde_json::json!(["a", {"k": "vv"}]));
        // names + text; a list adds one per item, a map its keys.
        assert_eq!(bytes(&vars), 3 + (10 << 20) + 4 + (1 + (1 + 2)) + 2);
        let mut total = 0;
        let mut refused = None;
        for n in 1..=100 {
            if let Err(err) = account(&mut total, &vars, n, "inv.yml") {
                refused = Some((n, err.to_string()));
                break;
            }
        }
        let (n, message) = refused.expect("never refused");
        assert_eq!(n, 26, "{message}");
        assert!(
            message.contains("inv.yml") && message.contains("26 host(s)"),
            "{message}"
        );
    }
}
