//! Host patterns, as in Ansible: names of hosts or groups, `*` globs, `a:b`
//! union, `!x` exclusion, `&x` intersection. A pattern of exclusions and
//! intersections only starts from `all`, as Ansible's does. `localhost`
//! (or `127.0.0.1`, `::1`), named exactly where the inventory lacks it, is
//! Ansible's implicit localhost: a local connection, in no group. A selection that
//! matches nothing is an error, never a silent success.

use globset::{GlobBuilder, GlobMatcher};

use crate::error::{Error, Result};
use crate::inventory::Inventory;

/// The hosts (in inventory order) that `pattern` selects.
pub fn matching(inventory: &Inventory, pattern: &str) -> Result<Vec<String>> {
    let mut included: Vec<String> = Vec::new();
    let mut excluded: Vec<String> = Vec::new();
    let mut intersections: Vec<Vec<String>> = Vec::new();
    let mut any_plain = false;
    for part in pattern
        .split([':', ','])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if let Some(rest) = part.strip_prefix('!') {
            excluded.extend(term(inventory, rest)?);
        } else if let Some(rest) = part.strip_prefix('&') {
            intersections.push(term(inventory, rest)?);
        } else {
            any_plain = true;
            included.extend(term(inventory, part)?);
        }
    }
    if !any_plain {
        included = inventory.hosts.clone();
    }
    let implicit = included.iter().filter(|h| !inventory.hosts.contains(h));
    let mut implicit: Vec<&String> = implicit.collect();
    implicit.dedup();
    Ok(inventory
        .hosts
        .iter()
        .chain(implicit)
        .filter(|h| included.contains(h) && !excluded.contains(h))
        .filter(|h| intersections.iter().all(|set| set.contains(h)))
        .cloned()
        .collect())
}

/// Hosts named by `--host`, checked against the inventory.
pub fn named(inventory: &Inventory, names: &[String]) -> Result<Vec<String>> {
    for name in names {
        if !inventory.hosts.contains(name)
            && !inventory.groups.contains_key(name)
            && !inventory.is_implicit_localhost(name)
        {
            return Err(unknown(inventory, name));
        }
    }
    let implicit = names.iter().filter(|n| inventory.is_implicit_localhost(n));
    Ok(inventory
        .hosts
        .iter()
        .chain(implicit)
        .filter(|h| {
            names
                .iter()
                .any(|n| n == *h || inventory.group_contains(n, h))
        })
        .cloned()
        .collect())
}

fn term(inventory: &Inventory, word: &str) -> Result<Vec<String>> {
    if word.contains(['*', '?', '[']) {
        let glob = glob(word)?;
        return Ok(inventory
            .hosts
            .iter()
            .filter(|h| {
                glob.is_match(h.as_str())
                    || inventory
                        .groups
                        .keys()
                        .any(|g| glob.is_match(g.as_str()) && inventory.group_contains(g, h))
            })
            .cloned()
            .collect());
    }
    if inventory.hosts.iter().any(|h| h == word) {
        return Ok(vec![word.to_string()]);
    }
    if inventory.is_implicit_localhost(word) {
        return Ok(vec![word.to_string()]);
    }
    if inventory.groups.contains_key(word) {
        return Ok(inventory
            .hosts
            .iter()
            .filter(|h| inventory.group_contains(word, h))
            .cloned()
            .collect());
    }
    Err(unknown(inventory, word))
}

fn glob(word: &str) -> Result<GlobMatcher> {
    GlobBuilder::new(word)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|err| Error::Selection(format!("bad host pattern `{word}`: {err}")))
}

fn unknown(inventory: &Inventory, name: &str) -> Error {
    let groups: Vec<&str> = inventory.groups.keys().map(String::as_str).collect();
    Error::Selection(format!(
        "no host or group named `{name}` in {}; hosts: {}; groups: {}",
        inventory.file,
        inventory.hosts.join(", "),
        groups.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> Inventory {
        Inventory::parse(
            "h.yml",
            "all:\n  hosts:\n    local:\n  children:\n    lxc:\n      hosts:\n        lxc122:\n        lxc123:\n    web:\n      hosts:\n        web1:\n        lxc123:\n",
        )
        .unwrap()
    }

    #[test]
    fn patterns() {
        let i = inv();
        assert_eq!(matching(&i, "lxc").unwrap(), ["lxc122", "lxc123"]);
        assert_eq!(matching(&i, "lxc:!lxc123").unwrap(), ["lxc122"]);
        assert_eq!(matching(&i, "lxc:&web").unwrap(), ["lxc123"]);
        assert_eq!(
            matching(&i, "lxc12*:local").unwrap(),
            ["local", "lxc122", "lxc123"]
        );
        assert_eq!(matching(&i, "all:!lxc").unwrap(), ["local", "web1"]);
        assert_eq!(matching(&i, "nomatch*").unwrap(), Vec::<String>::new());
        assert_eq!(matching(&i, "!lxc").unwrap(), ["local", "web1"]);
        assert_eq!(matching(&i, "&web").unwrap(), ["lxc123", "web1"]);
        assert_eq!(matching(&i, "!web:&lxc").unwrap(), ["lxc122"]);
    }

    #[test]
    fn localhost_is_implicit_where_the_inventory_lacks_it() {
        let i = inv();
        assert_eq!(matching(&i, "localhost").unwrap(), ["localhost"]);
        assert_eq!(
            matching(&i, "web:127.0.0.1").unwrap(),
            ["lxc123", "web1", "127.0.0.1"]
        );
        assert!(
            !matching(&i, "all")
                .unwrap()
                .contains(&"localhost".to_string())
        );
        assert_eq!(
            matching(&i, "localhost:!localhost").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(named(&i, &["localhost".into()]).unwrap(), ["localhost"]);
        let host = crate::host::Host::resolve(&i, "localhost").unwrap();
        assert_eq!(host.connection, crate::host::Connection::Local);
    }

    #[test]
    fn unknown_names_list_the_inventory() {
        let err = matching(&inv(), "lxc:lxc999").unwrap_err().to_string();
        assert!(
            err.contains("`lxc999`") && err.contains("hosts: local, lxc122"),
            "{err}"
        );
        assert!(named(&inv(), &["nope".into()]).is_err());
        assert_eq!(
            named(&inv(), &["web".into(), "local".into()]).unwrap(),
            ["local", "lxc123", "web1"]
        );
    }
}
