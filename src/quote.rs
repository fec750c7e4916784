//! Quoting for POSIX shells: the one place values become shell words.

/// A value that cannot be passed through a shell at all.
#[derive(Debug, PartialEq, Eq)]
pub struct NulByte;

impl std::fmt::Display for NulByte {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("contains a NUL byte, which no shell word can hold")
    }
}

/// A command line from words, each quoted so that the shell reads it back
/// byte for byte.
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
                .arg(format!("printf %s {}", join([value]).unwrap()))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
        }
        assert_eq!(join(["a\0b"]), Err(NulByte));
    }
}
