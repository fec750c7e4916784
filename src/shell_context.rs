//! Where in a shell command line a `{{ placeholder }}` sits.
//!
//! A substituted value is written as one single-quoted word. That is inert
//! only where the shell reads a plain word: inside double quotes, a
//! here-document, an arithmetic expansion or a comment, single quotes are
//! literal characters and the value's `$(...)` would run. So the template
//! renderer asks this scanner, fed the command's own text up to the
//! placeholder, whether the placeholder stands where a word may; anywhere
//! else the playbook is refused, never guessed at.
//!
//! The scanner follows POSIX sh's quoting rules: quotes, backslashes,
//! `$(...)`, `$((...))`, `${...}`, backquotes, comments and `<<`. Where it
//! could misread a rare construct it errs towards "not a word", which refuses
//! a playbook rather than running a value.

/// Where the next character of a command line stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Where the shell reads words: a quoted value is one word of data.
    Word,
    SingleQuotes,
    DoubleQuotes,
    Backquotes,
    Arithmetic,
    ParameterExpansion,
    Comment,
    /// After `<<`: the lines that follow may be a here-document's body.
    HereDocument,
    /// Right after a backslash, which would quote the value's opening quote.
    Escaped,
    /// Right after a `$`: `$'...'` is bash's escape-interpreting quote, and
    /// `$name` would expand a variable the value names.
    AfterDollar,
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Context::Word => "a word",
            Context::SingleQuotes => "single quotes",
            Context::DoubleQuotes => "double quotes",
            Context::Backquotes => "backquotes",
            Context::Arithmetic => "an arithmetic expansion `$((...))`",
            Context::ParameterExpansion => "a parameter expansion `${...}`",
            Context::Comment => "a comment",
            Context::HereDocument => "a command with a here-document (`<<`)",
            Context::Escaped => "a backslash's reach",
            Context::AfterDollar => "a `$`'s reach",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Words: the command line itself, or a `$(...)` (open parentheses inside it).
    Words {
        subshell: bool,
        parens: u32,
    },
    Single,
    Double,
    Backquotes,
    Arithmetic {
        parens: u32,
    },
    Brace,
    Comment,
}

/// Reads a command line piece by piece, between placeholders.
#[derive(Debug)]
pub struct Scanner {
    frames: Vec<Frame>,
    escaped: bool,
    at_word_start: bool,
    here_document: bool,
    after_dollar: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            frames: vec![Frame::Words {
                subshell: false,
                parens: 0,
            }],
            escaped: false,
            at_word_start: true,
            here_document: false,
            after_dollar: false,
        }
    }
}

impl Scanner {
    /// The context after everything fed so far.
    pub fn context(&self) -> Context {
        if self.here_document {
            return Context::HereDocument;
        }
        if self.escaped {
            return Context::Escaped;
        }
        if self.after_dollar {
            return Context::AfterDollar;
        }
        match self.top() {
            Frame::Words { .. } => Context::Word,
            Frame::Single => Context::SingleQuotes,
            Frame::Double => Context::DoubleQuotes,
            Frame::Backquotes => Context::Backquotes,
            Frame::Arithmetic { .. } => Context::Arithmetic,
            Frame::Brace => Context::ParameterExpansion,
            Frame::Comment => Context::Comment,
        }
    }

    /// A substituted word was written: the next character continues it.
    pub fn word_written(&mut self) {
        self.at_word_start = false;
        self.after_dollar = false;
    }

    pub fn feed(&mut self, text: &str) {
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            i += self.step(
                chars[i],
                chars.get(i + 1).copied(),
                chars.get(i + 2).copied(),
            );
        }
    }

    fn top(&self) -> Frame {
        *self
            .frames
            .last()
            .expect("the outermost frame is never popped")
    }

    fn top_mut(&mut self) -> &mut Frame {
        self.frames
            .last_mut()
            .expect("the outermost frame is never popped")
    }

    fn pop(&mut self) {
        if self.frames.len() > 1 {
            self.frames.pop();
        }
    }

    /// `$(`, `$((` or `${` at `c`: the frame it opens and how many characters it takes.
    fn dollar(c: char, next: Option<char>, after: Option<char>) -> Option<(Frame, usize)> {
        match (c, next, after) {
            ('$', Some('('), Some('(')) => Some((Frame::Arithmetic { parens: 0 }, 3)),
            ('$', Some('('), _) => Some((
                Frame::Words {
                    subshell: true,
                    parens: 0,
                },
                2,
            )),
            ('$', Some('{'), _) => Some((Frame::Brace, 2)),
            _ => None,
        }
    }

    /// Reads `c` (followed by `next`, `after`); returns how many characters it took.
    fn step(&mut self, c: char, next: Option<char>, after: Option<char>) -> usize {
        self.after_dollar = false;
        if self.escaped {
            self.escaped = false;
            self.at_word_start = false;
            return 1;
        }
        match self.top() {
            Frame::Words { subshell, parens } => {
                if let Some((frame, taken)) = Self::dollar(c, next, after) {
                    self.frames.push(frame);
                    self.at_word_start = false;
                    return taken;
                }
                self.after_dollar = c == '$';
                let word_start = self.at_word_start;
                self.at_word_start = matches!(
                    c,
                    ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>'
                );
                match c {
                    '\\' => self.escaped = true,
                    '\'' => self.frames.push(Frame::Single),
                    '"' => self.frames.push(Frame::Double),
                    '`' => self.frames.push(Frame::Backquotes),
                    '#' if word_start => self.frames.push(Frame::Comment),
                    '<' if next == Some('<') => {
                        self.here_document = true;
                        return 2;
                    }
                    '(' if subshell => {
                        *self.top_mut() = Frame::Words {
                            subshell,
                            parens: parens + 1,
                        }
                    }
                    ')' if subshell && parens == 0 => self.pop(),
                    ')' if subshell => {
                        *self.top_mut() = Frame::Words {
                            subshell,
                            parens: parens - 1,
                        }
                    }
                    _ => {}
                }
            }
            Frame::Single => {
                if c == '\'' {
                    self.pop();
                }
            }
            Frame::Double | Frame::Brace => {
                if let Some((frame, taken)) = Self::dollar(c, next, after) {
                    self.frames.push(frame);
                    return taken;
                }
                match c {
                    '\\' => self.escaped = true,
                    '`' => self.frames.push(Frame::Backquotes),
                    '"' if self.top() == Frame::Double => self.pop(),
                    '"' => self.frames.push(Frame::Double),
                    '\'' if self.top() == Frame::Brace => self.frames.push(Frame::Single),
                    '}' if self.top() == Frame::Brace => self.pop(),
                    _ => {}
                }
            }
            Frame::Backquotes => match c {
                '\\' => self.escaped = true,
                '`' => self.pop(),
                _ => {}
            },
            Frame::Arithmetic { parens } => match c {
                '(' => *self.top_mut() = Frame::Arithmetic { parens: parens + 1 },
                ')' if parens > 0 => *self.top_mut() = Frame::Arithmetic { parens: parens - 1 },
                ')' if next == Some(')') => {
                    self.pop();
                    return 2;
                }
                _ => {}
            },
            Frame::Comment => {
                if c == '\n' {
                    self.pop();
                    self.at_word_start = true;
                }
            }
        }
        1
    }
}

/// The context at the end of `text`.
#[cfg(test)]
pub fn context_after(text: &str) -> Context {
    let mut scanner = Scanner::default();
    scanner.feed(text);
    scanner.context()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_where_the_shell_reads_words() {
        for text in [
            "",
            "ls ",
            "ls -l ",
            "mkdir -p ",
            "a=1 ",
            "--dir=",
            "echo 'x' ",
            "echo \"x\" ",
            "echo $(cat ",
            "echo \"$(cat ",
            "echo $(printf '%s' \")\") ",
            "echo $( (cd /; pwd) ) ",
            "echo ${HOME} ",
            "echo $((1 + 2)) ",
            "echo `date` ",
            "echo a\\\"b ",
            "echo a#b ",
            "# note\nls ",
            "true && ",
            "x | ",
        ] {
            assert_eq!(context_after(text), Context::Word, "{text:?}");
        }
    }

    #[test]
    fn everything_else_is_named() {
        for (text, context) in [
            ("echo '", Context::SingleQuotes),
            ("echo 'a b ", Context::SingleQuotes),
            ("echo \"", Context::DoubleQuotes),
            ("echo \"a 'b' ", Context::DoubleQuotes),
            ("echo \"$(cat x)", Context::DoubleQuotes),
            ("echo \"${x:-", Context::ParameterExpansion),
            ("echo ${x:-", Context::ParameterExpansion),
            ("echo $((1 + ", Context::Arithmetic),
            ("echo $(( (1) + ", Context::Arithmetic),
            ("echo `ls ", Context::Backquotes),
            ("echo \"`ls ", Context::Backquotes),
            ("ls # ", Context::Comment),
            ("#", Context::Comment),
            ("cat <<EOF\n", Context::HereDocument),
            ("cat <<'EOF'\nEOF\nls ", Context::HereDocument),
            ("echo \\", Context::Escaped),
            ("echo $", Context::AfterDollar),
            ("echo a$", Context::AfterDollar),
        ] {
            assert_eq!(context_after(text), context, "{text:?}");
        }
    }

    #[test]
    fn a_written_word_is_not_a_comment_start() {
        let mut scanner = Scanner::default();
        scanner.feed("echo ");
        scanner.word_written();
        scanner.feed("#x ");
        assert_eq!(scanner.context(), Context::Word);
    }
}
