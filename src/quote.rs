//! Quoting for POSIX shells: the one place values become shell words.

/// A value that cannot be passed through a shell at all.
#[derive(Debug, PartialEq, Eq)]
pub struct NulByte;

impl std::fmt::Display for NulByte {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("contains a NUL byte, which no shell word can hold")
    }
}

/// `value` as a single shell word that the shell reads back byte for byte.
pub fn shell(value: &str) -> Result<String, NulByte> {
    shlex::try_quote(value)
        .map(|word| word.into_owned())
        .map_err(|_| NulByte)
}

/// A command line from words, each quoted.
pub fn join<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<String, NulByte> {
    shlex::try_join(words).map_err(|_| NulByte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_sh() {
        for value in [
            "plain",
            "",
            "a b",
            "$(touch /tmp/never)",
            "it's",
            "x\ny",
            "`id`;|&",
            "*",
            "~",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell(value).unwrap()))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
        }
        assert_eq!(shell("a\0b"), Err(NulByte));
    }
}
