//! Where in a shell command line a `{{ placeholder }}` sits.
//!
//! A substituted value is written as one single-quoted word. That is inert
//! only where the shell reads a plain word: inside double quotes, a
//! here-document or a comment, single quotes are literal characters and the
//! value's `$(...)` would run; in bash's arithmetic (`((`, `let`, `[[`, array
//! subscripts, `declare -i`) a quoted value is still evaluated, array
//! subscripts and their command substitutions included. So the template
//! renderer asks this scanner, fed the command's own text up to the
//! placeholder, whether the placeholder stands where a word may; anywhere
//! else the playbook is refused, never guessed at.
//!
//! The scanner follows what POSIX sh does with quotes, backslashes, `$(...)`,
//! `${...}` and comments, and no further: once the text holds something it
//! does not follow closely (a here-document, arithmetic, backquotes, a line
//! continuation, bash's own syntax, `case` inside `$(...)`, quotes inside
//! `${...}`), every later placeholder is refused. A differential fuzzer
//! (dash, bash --posix, bash) found each of these able to hide a context.

/// Where the next character of a command line stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Where the shell reads words: a quoted value is one word of data.
    Word,
    SingleQuotes,
    DoubleQuotes,
    ParameterExpansion,
    Comment,
    /// Right after a backslash, which would quote the value's opening quote.
    Escaped,
    /// Right after a `$`: `$'...'` is bash's escape-interpreting quote, and
    /// `$name` would expand a variable the value names.
    AfterDollar,
    /// In a word with a `[`: a bash array subscript is arithmetic.
    Subscript,
    /// After something the scanner does not follow (named): it cannot vouch
    /// for any later position.
    Unfollowed(&'static str),
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Context::Word => f.write_str("a word"),
            Context::SingleQuotes => f.write_str("single quotes"),
            Context::DoubleQuotes => f.write_str("double quotes"),
            Context::ParameterExpansion => f.write_str("a parameter expansion `${...}`"),
            Context::Comment => f.write_str("a comment"),
            Context::Escaped => f.write_str("a backslash's reach"),
            Context::AfterDollar => f.write_str("a `$`'s reach"),
            Context::Subscript => f.write_str("a word with `[` (a bash array subscript)"),
            Context::Unfollowed(what) => write!(f, "a command after {what}"),
        }
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
    Brace,
    Comment,
}

/// Words that make bash evaluate their arguments as arithmetic (`let`,
/// `declare -i`, ...), or whose `)` patterns this scanner cannot pair
/// inside `$(...)` (`case`).
const UNFOLLOWED_WORDS: [&str; 4] = ["let", "declare", "typeset", "local"];

/// Reads a command line piece by piece, between placeholders.
#[derive(Debug)]
pub struct Scanner {
    frames: Vec<Frame>,
    escaped: bool,
    at_word_start: bool,
    after_dollar: bool,
    /// The unquoted characters of the current word, one per `Words` frame:
    /// a `[` in any of them puts what follows in a subscript.
    words: Vec<String>,
    unfollowed: Option<&'static str>,
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
            after_dollar: false,
            words: vec![String::new()],
            unfollowed: None,
        }
    }
}

impl Scanner {
    /// The context after everything fed so far.
    pub fn context(&self) -> Context {
        if let Some(what) = self.unfollowed {
            return Context::Unfollowed(what);
        }
        if self.escaped {
            return Context::Escaped;
        }
        if self.after_dollar {
            return Context::AfterDollar;
        }
        match self.top() {
            Frame::Words { .. } if self.words.iter().any(|w| w.contains('[')) => Context::Subscript,
            Frame::Words { .. } => Context::Word,
            Frame::Single => Context::SingleQuotes,
            Frame::Double => Context::DoubleQuotes,
            Frame::Brace => Context::ParameterExpansion,
            Frame::Comment => Context::Comment,
        }
    }

    /// A substituted word was written: the next character continues it.
    pub fn word_written(&mut self) {
        self.at_word_start = false;
        self.after_dollar = false;
        self.word().push('\'');
    }

    fn word(&mut self) -> &mut String {
        self.words
            .last_mut()
            .expect("the outermost word is never popped")
    }

    pub fn feed(&mut self, text: &str) {
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() && self.unfollowed.is_none() {
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

    fn push(&mut self, frame: Frame) {
        self.frames.push(frame);
    }

    fn pop(&mut self) {
        if self.frames.len() > 1 && matches!(self.frames.pop(), Some(Frame::Words { .. })) {
            self.words.pop();
        }
    }

    fn give_up(&mut self, what: &'static str) -> usize {
        self.unfollowed = Some(what);
        1
    }

    /// `$(`, `${` or something unfollowed at a `$`; None for a plain `$`.
    /// Returns how many characters it took.
    fn dollar(&mut self, next: Option<char>, after: Option<char>) -> Option<usize> {
        match (next, after) {
            (Some('('), Some('(')) => Some(self.give_up("an arithmetic expansion `$((`")),
            (Some('('), _) if self.top() == Frame::Brace => {
                // `${x:$(...)}` is an arithmetic offset in bash.
                Some(self.give_up("a command substitution inside `${...}`"))
            }
            (Some('('), _) => {
                self.push(Frame::Words {
                    subshell: true,
                    parens: 0,
                });
                self.words.push(String::new());
                // A command starts inside: `$(#...` is a comment.
                self.at_word_start = true;
                Some(2)
            }
            (Some('{'), _) => {
                self.push(Frame::Brace);
                Some(2)
            }
            (Some('['), _) => Some(self.give_up("bash's `$[`")),
            // `$$` is the shell's pid: in `$$(` the `(` opens nothing.
            (Some('$'), _) => {
                self.word().push_str("$$");
                Some(2)
            }
            (Some('\''), _) => Some(self.give_up("bash's `$'...'`")),
            _ => None,
        }
    }

    /// The current word ended (at a separator): what it was may matter.
    fn end_word(&mut self, subshell: bool) {
        let word = std::mem::take(self.word());
        if UNFOLLOWED_WORDS.contains(&word.as_str()) {
            self.unfollowed = Some("`let`, `declare`, `typeset` or `local` (bash arithmetic)");
        } else if subshell && word == "case" {
            self.unfollowed = Some("`case` inside `$(...)`");
        }
    }

    /// Reads `c` (followed by `next`, `after`); returns how many characters it took.
    fn step(&mut self, c: char, next: Option<char>, after: Option<char>) -> usize {
        self.after_dollar = false;
        if self.escaped {
            self.escaped = false;
            self.at_word_start = false;
            if c == '\n' {
                return self.give_up("a line continuation (`\\` at the end of a line)");
            }
            return 1;
        }
        match self.top() {
            Frame::Words { subshell, parens } => self.step_words(c, next, after, subshell, parens),
            Frame::Single => {
                if c == '\'' {
                    self.pop();
                }
                1
            }
            Frame::Double | Frame::Brace => {
                let brace = self.top() == Frame::Brace;
                match c {
                    '$' => return self.dollar(next, after).unwrap_or(1),
                    '\\' => self.escaped = true,
                    '`' => return self.give_up("backquotes (write `$(...)`)"),
                    '"' if !brace => self.pop(),
                    '"' | '\'' if brace => return self.give_up("quotes inside `${...}`"),
                    '}' if brace => self.pop(),
                    _ => {}
                }
                1
            }
            Frame::Comment => {
                if c == '\n' {
                    self.pop();
                    self.at_word_start = true;
                    self.word().clear();
                }
                1
            }
        }
    }

    fn step_words(
        &mut self,
        c: char,
        next: Option<char>,
        after: Option<char>,
        subshell: bool,
        parens: u32,
    ) -> usize {
        let word_start = self.at_word_start;
        if c == '$' {
            if let Some(taken) = self.dollar(next, after) {
                return taken;
            }
            self.after_dollar = true;
        }
        let separator = matches!(
            c,
            ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>'
        );
        if separator {
            self.end_word(subshell);
            if self.unfollowed.is_some() {
                return 1;
            }
        } else if !matches!(c, '\'' | '"' | '\\') {
            self.word().push(c);
        }
        self.at_word_start = separator;
        match c {
            '\\' => self.escaped = true,
            '\'' => self.push(Frame::Single),
            '"' => self.push(Frame::Double),
            '`' => return self.give_up("backquotes (write `$(...)`)"),
            '#' if word_start => self.push(Frame::Comment),
            '<' if next == Some('<') => return self.give_up("a here-document or here-string `<<`"),
            '(' if word_start && next == Some('(') => return self.give_up("bash's `((`"),
            '[' if word_start && next == Some('[') => return self.give_up("bash's `[[`"),
            '=' if next == Some('(') => return self.give_up("an array assignment `=(`"),
            // bash reads `name[...` up to its `]` as one subscript, blanks and `&` included.
            '[' if is_name(self.word().trim_end_matches('[')) => {
                return self.give_up("a bash array subscript `name[`");
            }
            '(' if subshell => {
                *self.top_mut() = Frame::Words {
                    subshell,
                    parens: parens + 1,
                }
            }
            ')' if subshell && parens == 0 => {
                self.pop();
                // `$(...)` is part of a word: `$(true)#x` is no comment.
                self.at_word_start = false;
                self.word().push(')');
            }
            ')' if subshell => {
                *self.top_mut() = Frame::Words {
                    subshell,
                    parens: parens - 1,
                }
            }
            _ => {}
        }
        1
    }
}

/// A shell variable name: what `name[` makes a bash array subscript of.
fn is_name(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
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
            "echo ${HOME:-/root} ",
            "echo a\\\"b ",
            "echo a#b ",
            "echo $(true)#",
            "# note\nls ",
            "true && ",
            "x | ",
            "case x in a) ",
            "r=$(id -u) ",
            "find . -exec rm {} \\; ",
            "echo \"$(id -u)\" ",
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
            ("echo \"$$(", Context::DoubleQuotes),
            ("echo \"${x:-", Context::ParameterExpansion),
            ("echo ${x:-", Context::ParameterExpansion),
            ("ls # ", Context::Comment),
            ("#", Context::Comment),
            ("echo $(#", Context::Comment),
            ("echo \\", Context::Escaped),
            ("echo $", Context::AfterDollar),
            ("echo a$", Context::AfterDollar),
            ("x=a[1]", Context::Subscript),
            ("*.[ch]", Context::Subscript),
        ] {
            assert_eq!(context_after(text), context, "{text:?}");
        }
    }

    /// Each of these hid a context from an earlier, less careful scanner
    /// (found by a differential fuzzer over dash, bash --posix and bash).
    #[test]
    fn what_it_does_not_follow_refuses_every_later_placeholder() {
        for text in [
            "cat <<EOF\n",
            "cat <<'EOF'\nEOF\nls ",
            "cat <\\\n<EOF\n",
            "echo $\\\n(( ",
            "echo \"$\\\n(echo \"",
            "echo \\\n#",
            "echo $((1 + ",
            "echo $(( (1) + 2 )) ",
            "echo $((true); echo \")) ",
            "echo `ls ",
            "echo `date` ",
            "echo \"`ls ",
            "echo \"$(case a in a) echo \"$(true) ",
            "echo \"${x:-'}\"'\"$(",
            "echo $[ ",
            "(( x = ",
            "for ((i=0;i<",
            "echo $( (( ",
            "x=((",
            "x=(",
            "[[ $x -eq ",
            "echo $'\\'' '",
            "let x=",
            "declare -i x=",
            "local -i n=",
            "tr a-z A-Z <<< hi; mkdir ",
            "echo ${x:$(echo ",
            "a[",
            "a[$(echo ",
            "\ta[ & ",
            "# c\na[ ",
        ] {
            assert!(
                matches!(context_after(text), Context::Unfollowed(_)),
                "{text:?}: {:?}",
                context_after(text)
            );
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
