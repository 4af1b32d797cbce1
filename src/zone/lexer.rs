//! The lexer of a master file: characters into entries, each the tokens of one logical line
//! (joined across parentheses), with the line where it starts. Comments are dropped;
//! quotes and escapes are kept in the tokens so that hickory-proto sees RDATA as written.

/// One logical entry: the tokens of a line, joined across parentheses.
pub struct Entry {
    pub line: usize,
    /// The entry began with white space: its owner is the previous entry's.
    pub blank_owner: bool,
    /// Raw tokens, quotes and escapes kept.
    pub tokens: Vec<String>,
}

/// A problem the lexer found: the line, and what is wrong there.
pub type LexProblem = (usize, String);

/// Splits a master file into entries, or reports the line of an unbalanced quote or
/// parenthesis.
pub fn entries(text: &str) -> Vec<Result<Entry, LexProblem>> {
    let mut lexer = Lexer {
        chars: text.chars().peekable(),
        line: 1,
        at_line_start: true,
        current: None,
        token: String::new(),
        depth: 0,
        paren_line: 0,
        out: Vec::new(),
    };
    while let Some(c) = lexer.chars.next() {
        lexer.start_entry(c);
        match c {
            '\\' => lexer.escape(),
            '"' => {
                if !lexer.quoted() {
                    return lexer.out;
                }
            }
            ';' => lexer.comment(),
            '(' => lexer.open(),
            ')' => lexer.close(),
            '\n' => lexer.newline(),
            c if c.is_whitespace() => lexer.flush(),
            c => lexer.token.push(c),
        }
    }
    lexer.finish()
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    at_line_start: bool,
    current: Option<Entry>,
    token: String,
    /// Open parentheses.
    depth: usize,
    /// Where the outermost open parenthesis is, for its problem.
    paren_line: usize,
    out: Vec<Result<Entry, LexProblem>>,
}

impl Lexer<'_> {
    /// Begins an entry at the first character of a line that is not an empty line.
    fn start_entry(&mut self, c: char) {
        if self.current.is_none() && c != '\n' && c != '\r' {
            self.current = Some(Entry {
                line: self.line,
                blank_owner: self.at_line_start && (c == ' ' || c == '\t'),
                tokens: Vec::new(),
            });
        }
        self.at_line_start = false;
    }

    fn flush(&mut self) {
        if !self.token.is_empty()
            && let Some(entry) = self.current.as_mut()
        {
            entry.tokens.push(std::mem::take(&mut self.token));
        }
    }

    fn escape(&mut self) {
        self.token.push('\\');
        if let Some(next) = self.chars.next() {
            if next == '\n' {
                self.line += 1;
            }
            self.token.push(next);
        }
    }

    /// A quoted string, up to its closing quote; `false` when it never closes.
    fn quoted(&mut self) -> bool {
        let start = self.line;
        self.token.push('"');
        loop {
            match self.chars.next() {
                Some('"') => {
                    self.token.push('"');
                    return true;
                }
                Some('\\') => {
                    self.token.push('\\');
                    if let Some(next) = self.chars.next() {
                        self.token.push(next);
                    }
                }
                Some(c) => {
                    if c == '\n' {
                        self.line += 1;
                    }
                    self.token.push(c);
                }
                None => {
                    self.out
                        .push(Err((start, "unterminated quoted string".to_string())));
                    return false;
                }
            }
        }
    }

    fn comment(&mut self) {
        self.flush();
        while self.chars.peek().is_some_and(|&c| c != '\n') {
            self.chars.next();
        }
    }

    fn open(&mut self) {
        self.flush();
        if self.depth == 0 {
            self.paren_line = self.line;
        }
        self.depth += 1;
    }

    fn close(&mut self) {
        self.flush();
        if self.depth == 0 {
            self.out
                .push(Err((self.line, "`)` without a matching `(`".to_string())));
        } else {
            self.depth -= 1;
        }
    }

    fn newline(&mut self) {
        self.flush();
        self.line += 1;
        self.at_line_start = true;
        if self.depth == 0 {
            self.end_entry();
        }
    }

    fn end_entry(&mut self) {
        if let Some(entry) = self.current.take()
            && !entry.tokens.is_empty()
        {
            self.out.push(Ok(entry));
        }
    }

    fn finish(mut self) -> Vec<Result<Entry, LexProblem>> {
        self.flush();
        if self.depth > 0 {
            self.out
                .push(Err((self.paren_line, "`(` is never closed".to_string())));
        } else {
            self.end_entry();
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<(usize, bool, Vec<String>)> {
        entries(text)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                (e.line, e.blank_owner, e.tokens)
            })
            .collect()
    }

    #[test]
    fn entries_join_parentheses_and_keep_quotes() {
        let found = tokens("a IN TXT \"x y\" ; comment\n\n  IN SOA ( 1\n 2 )\nb\\ c IN A 1\n");
        assert_eq!(
            found[0],
            (
                1,
                false,
                vec!["a".into(), "IN".into(), "TXT".into(), "\"x y\"".into()]
            )
        );
        assert_eq!(
            found[1],
            (
                3,
                true,
                vec!["IN".into(), "SOA".into(), "1".into(), "2".into()]
            )
        );
        assert_eq!(found[2].2[0], "b\\ c");
    }

    #[test]
    fn unbalanced_input_names_its_line() {
        let found = entries("a (\n b\n");
        assert_eq!(found.last().unwrap().as_ref().err().unwrap().0, 1);
        let found = entries("a )\n");
        assert_eq!(
            found[0].as_ref().err().unwrap().1,
            "`)` without a matching `(`"
        );
        let found = entries("\na \"open\n");
        assert_eq!(found[0].as_ref().err().unwrap().0, 2);
    }
}
