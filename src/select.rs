//! Host patterns, as Ansible's `InventoryManager` matches them: names of
//! hosts or groups, `*` globs, `~regex`, subscripts (`g[0]`, `g[-1]`,
//! `g[0:1]`, `g[1:]`), terms separated by `,` (or `:` outside brackets),
//! `!x` exclusion, `&x` intersection. A pattern of exclusions and
//! intersections only starts from `all`, as Ansible's does. A term that
//! matches nothing is reported by [`unmatched`] for a warning, and the rest
//! goes on. `localhost`
//! (or `127.0.0.1`, `::1`), named exactly where the inventory lacks it, is
//! Ansible's implicit localhost: a local connection, in no group. A selection that
//! matches nothing is an error, never a silent success.

use globset::{GlobBuilder, GlobMatcher};

use crate::error::{Error, Result};
use crate::inventory::Inventory;

/// The hosts (in inventory order) that `pattern` selects.
pub fn matching(inventory: &Inventory, pattern: &str) -> Result<Vec<String>> {
    Ok(evaluate(inventory, pattern)?.0)
}

/// The terms of `pattern` that match no host or group. Ansible warns about
/// each ("Could not match supplied host pattern, ignoring") and goes on.
pub fn unmatched(inventory: &Inventory, pattern: &str) -> Vec<String> {
    evaluate(inventory, pattern)
        .map(|(_, unmatched)| unmatched)
        .unwrap_or_default()
}

/// Ansible's `split_host_pattern`: `,` separates terms; without one, `:`
/// does, except inside `[...]` (a subscript or a range) and in an IPv6
/// address.
pub fn split(pattern: &str) -> Vec<String> {
    let terms: Vec<String> = if pattern.contains(',') {
        pattern.split(',').map(String::from).collect()
    } else if pattern.matches(':').count() >= 2
        && pattern
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    {
        vec![pattern.to_string()]
    } else {
        let mut terms = Vec::new();
        let mut term = String::new();
        let mut in_brackets = false;
        for c in pattern.chars() {
            match c {
                '[' => in_brackets = true,
                ']' => in_brackets = false,
                ':' if !in_brackets => {
                    terms.push(std::mem::take(&mut term));
                    continue;
                }
                c if c.is_whitespace() && !in_brackets => {
                    terms.push(std::mem::take(&mut term));
                    continue;
                }
                _ => {}
            }
            term.push(c);
        }
        terms.push(term);
        terms
    };
    terms
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Ansible's `_evaluate_patterns`: the plain terms (or `all`, if there are
/// none) in order, then the `&` intersections, then the `!` exclusions.
fn evaluate(inventory: &Inventory, pattern: &str) -> Result<(Vec<String>, Vec<String>)> {
    let terms = split(pattern);
    let plain: Vec<&String> = terms
        .iter()
        .filter(|t| !t.starts_with(['!', '&']))
        .collect();
    let all = "all".to_string();
    let mut ordered: Vec<&String> = if plain.is_empty() { vec![&all] } else { plain };
    ordered.extend(terms.iter().filter(|t| t.starts_with('&')));
    ordered.extend(terms.iter().filter(|t| t.starts_with('!')));
    let mut hosts: Vec<String> = Vec::new();
    let mut unmatched = Vec::new();
    for term in ordered {
        let word = term.trim_start_matches(['!', '&']);
        let found = one(inventory, word, &mut unmatched)?;
        match term.chars().next() {
            Some('!') => hosts.retain(|h| !found.contains(h)),
            Some('&') => hosts.retain(|h| found.contains(h)),
            _ => {
                for host in found {
                    if !hosts.contains(&host) {
                        hosts.push(host);
                    }
                }
            }
        }
    }
    // csdeploy runs hosts in inventory order; an implicit localhost last.
    let position = |h: &String| {
        inventory
            .hosts
            .iter()
            .position(|x| x == h)
            .unwrap_or(usize::MAX)
    };
    hosts.sort_by_key(position);
    Ok((hosts, unmatched))
}

/// Ansible's `_match_one_pattern`: `~regex` (anchored at the start, as
/// Python's `re.match`), else a glob; the groups it names give their hosts,
/// and hosts match by name where no group did or the term is a glob; then a
/// subscript (`[0]`, `[-1]`, `[0:1]`, `[1:]`) picks from what matched.
fn one(inventory: &Inventory, word: &str, unmatched: &mut Vec<String>) -> Result<Vec<String>> {
    let (expr, subscript) = split_subscript(word)?;
    let regex = expr.strip_prefix('~');
    let is_match: Box<dyn Fn(&str) -> bool> = match regex {
        Some(re) => {
            let re = regex::Regex::new(&format!("^(?:{re})"))
                .map_err(|err| Error::Selection(format!("bad host pattern `{word}`: {err}")))?;
            Box::new(move |name| re.is_match(name))
        }
        None if expr.contains(['*', '?', '[']) => {
            let glob = glob(expr)?;
            Box::new(move |name| glob.is_match(name))
        }
        None => {
            let expr = expr.to_string();
            Box::new(move |name| name == expr)
        }
    };
    let mut results: Vec<String> = Vec::new();
    let groups: Vec<&String> = inventory.groups.keys().filter(|g| is_match(g)).collect();
    for group in &groups {
        for host in group_hosts(inventory, group) {
            if !results.contains(&host) {
                results.push(host);
            }
        }
    }
    if groups.is_empty() || regex.is_some() || expr.contains(['.', '?', '*', '[']) {
        for host in inventory.hosts.iter().filter(|h| is_match(h)) {
            if !results.contains(host) {
                results.push(host.clone());
            }
        }
    }
    if results.is_empty() && inventory.is_implicit_localhost(expr) {
        results.push(expr.to_string());
    }
    if results.is_empty() && groups.is_empty() && expr != "all" {
        unmatched.push(word.to_string());
    }
    match subscript {
        None => Ok(results),
        Some(_) if results.is_empty() => Ok(results),
        Some((start, None)) => {
            let index = if start < 0 {
                results.len() as i64 + start
            } else {
                start
            };
            usize::try_from(index)
                .ok()
                .and_then(|i| results.get(i).cloned())
                .map(|h| vec![h])
                .ok_or_else(|| {
                    Error::Selection(format!(
                        "no host at `{word}`: {expr} matches {} host(s)",
                        results.len()
                    ))
                })
        }
        Some((start, Some(end))) => {
            let start = start as usize;
            let end = end.unwrap_or(results.len().saturating_sub(1));
            Ok(results
                .iter()
                .skip(start)
                .take((end + 1).saturating_sub(start))
                .cloned()
                .collect())
        }
    }
}

/// An index `[n]` or a range `[a:b]`/`[a:]` at the end of a term (not of a
/// `~regex`), as Ansible's `PATTERN_WITH_SUBSCRIPT` reads it. `[a:0]` is
/// Ansible's `[a]` (it tests the end for truth).
type Subscript = (i64, Option<Option<usize>>);

fn split_subscript(word: &str) -> Result<(&str, Option<Subscript>)> {
    if word.starts_with('~') || !word.ends_with(']') {
        return Ok((word, None));
    }
    let Some(open) = word.rfind('[').filter(|&i| i > 0) else {
        return Ok((word, None));
    };
    let (expr, inner) = (&word[..open], &word[open + 1..word.len() - 1]);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let number = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| Error::Selection(format!("bad subscript in host pattern `{word}`")))
    };
    if digits(inner.strip_prefix('-').unwrap_or(inner)) {
        return Ok((expr, Some((number(inner)?, None))));
    }
    if let Some((start, end)) = inner.split_once(':')
        && digits(start)
        && (end.is_empty() || digits(end))
    {
        let start = number(start)?;
        if end.is_empty() {
            return Ok((expr, Some((start, Some(None)))));
        }
        let end = number(end)? as usize;
        if end == 0 {
            return Ok((expr, Some((start, None))));
        }
        return Ok((expr, Some((start, Some(Some(end))))));
    }
    Ok((word, None))
}

/// A group's hosts in Ansible's order (`Group._get_hosts`): its own, then
/// its children's, level by level, each once.
fn group_hosts(inventory: &Inventory, group: &str) -> Vec<String> {
    if group == "all" {
        return inventory.hosts.clone();
    }
    let mut hosts = Vec::new();
    let mut seen = vec![group.to_string()];
    let mut level = vec![group.to_string()];
    while !level.is_empty() {
        let mut next = Vec::new();
        for name in &level {
            let Some(g) = inventory.groups.get(name) else {
                continue;
            };
            for host in &g.hosts {
                if !hosts.contains(host) {
                    hosts.push(host.clone());
                }
            }
            for child in &g.children {
                if !seen.contains(child) {
                    seen.push(child.clone());
                    next.push(child.clone());
                }
            }
        }
        level = next;
    }
    hosts
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
    fn unknown_names_warn_and_the_rest_goes_on() {
        let i = inv();
        assert_eq!(matching(&i, "lxc:lxc999").unwrap(), ["lxc122", "lxc123"]);
        assert_eq!(unmatched(&i, "lxc:lxc999:!nosuch"), ["lxc999", "nosuch"]);
        assert_eq!(matching(&i, "all:!nosuch").unwrap().len(), 4);
        assert!(unmatched(&i, "lxc*:!lxc123").is_empty());
        assert!(matching(&i, "nosuch").unwrap().is_empty());
    }

    #[test]
    fn regexes_subscripts_and_commas_as_ansible_reads_them() {
        let i = inv();
        assert_eq!(matching(&i, "~lxc12[23]").unwrap(), ["lxc122", "lxc123"]);
        // Anchored at the start only, as Python's re.match.
        assert_eq!(matching(&i, "~web").unwrap(), ["lxc123", "web1"]);
        assert_eq!(matching(&i, "~l.c").unwrap(), ["local", "lxc122", "lxc123"]);
        assert_eq!(matching(&i, "lxc[0]").unwrap(), ["lxc122"]);
        assert_eq!(matching(&i, "lxc[-1]").unwrap(), ["lxc123"]);
        assert_eq!(matching(&i, "lxc[0:1]").unwrap(), ["lxc122", "lxc123"]);
        assert_eq!(matching(&i, "lxc[1:]").unwrap(), ["lxc123"]);
        assert_eq!(matching(&i, "web[1],lxc[0]").unwrap(), ["lxc122", "lxc123"]);
        // With a comma, `:` separates nothing: `web:!lxc123` is one name.
        assert_eq!(
            matching(&i, "lxc, web:!lxc123").unwrap(),
            ["lxc122", "lxc123"]
        );
        assert_eq!(unmatched(&i, "lxc, web:!lxc123"), ["web:!lxc123"]);
        assert_eq!(matching(&i, "lxc,!lxc123").unwrap(), ["lxc122"]);
        let err = matching(&i, "lxc[5]").unwrap_err().to_string();
        assert!(err.contains("lxc[5]") && err.contains("2 host(s)"), "{err}");
        assert_eq!(split("a,b[1], c[2:3] , d"), ["a", "b[1]", "c[2:3]", "d"]);
        assert_eq!(split("a:b[0:2]:!c"), ["a", "b[0:2]", "!c"]);
        assert_eq!(split("fe80::1"), ["fe80::1"]);
    }

    #[test]
    fn unknown_names_in_host_are_errors() {
        assert!(named(&inv(), &["nope".into()]).is_err());
        assert_eq!(
            named(&inv(), &["web".into(), "local".into()]).unwrap(),
            ["local", "lxc123", "web1"]
        );
    }
}
