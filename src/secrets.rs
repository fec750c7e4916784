//! What counts as a secret in output: values of secret-looking names, at any
//! depth, and the password of a URL's user info. `csdeploy inventory` ends up
//! in CI logs and tickets; Ansible keeps no such list, so this is a
//! heuristic, documented in the README.

use serde_json::Value;

/// Shown instead of a secret.
pub const MASK: &str = "********";

/// Name fragments that mark a value as secret (compared lowercased).
const SECRET_WORDS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "credential",
    "api_key",
    "apikey",
    "private_key",
    "access_key",
];

/// A name whose value is a secret. A `*_file`/`*_path` name holds where a
/// secret is, not the secret (`ansible_ssh_private_key_file`).
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    !name.ends_with("_file")
        && !name.ends_with("_path")
        && SECRET_WORDS.iter().any(|word| name.contains(word))
}

/// `value` with every secret masked: the values of secret names in maps at
/// any depth (lists included), and URL passwords (`ssh://user:pw@host`) in
/// every string.
pub fn masked(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(name, value)| {
                    let shown = match value {
                        Value::Null => Value::Null,
                        _ if is_secret_name(name) => Value::from(MASK),
                        _ => masked(value),
                    };
                    (name.clone(), shown)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(masked).collect()),
        Value::String(text) => Value::String(without_url_password(text)),
        other => other.clone(),
    }
}

/// `scheme://user:password@host` → `scheme://user:********@host`, for every
/// URL in `text`.
fn without_url_password(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end = after.find(['/', '?', '#', ' ']).unwrap_or(after.len());
        let authority = &after[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(userinfo_end), Some(colon)) if colon < userinfo_end => {
                out.push_str(&authority[..=colon]);
                out.push_str(MASK);
                out.push_str(&authority[userinfo_end..]);
            }
            _ => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_at_every_depth() {
        let vars = json!({
            "ansible_password": "p1",
            "db": {"password": "p2", "host": "db1"},
            "users": [{"name": "u", "password": "p3"}],
            "environment": {"GITHUB_TOKEN": "p4", "PGPASSWORD": "p5", "ANTHROPIC_API_KEY": "p6"},
            "api_key": "p7",
            "private_key": "p8",
            "pwd": "p9",
            "aws": {"secret_access_key": "p10", "access_key_id": "p11"},
            "repo": "ssh://deploy:p12@git.example/x.git",
            "mirrors": ["https://u:p13@a.example", "https://b.example/path:x@y"],
            "ansible_ssh_private_key_file": "~/.ssh/id_ed25519",
            "color": "blue",
            "nothing_secret": null,
        });
        let shown = masked(&vars).to_string();
        for n in 1..=13 {
            assert!(
                !shown.contains(&format!("\"p{n}\"")) && !shown.contains(&format!(":p{n}@")),
                "p{n} shown: {shown}"
            );
        }
        for kept in [
            "db1",
            "blue",
            "~/.ssh/id_ed25519",
            "ssh://deploy:********@git.example/x.git",
            "https://b.example/path:x@y",
        ] {
            assert!(shown.contains(kept), "{kept} lost: {shown}");
        }
    }
}
