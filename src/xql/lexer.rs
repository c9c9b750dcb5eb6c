//! Splits XQL text into tokens, each with the line and column it starts at, so every
//! later error can point at the place a hunter has to fix.
//!
//! Keywords are not tokens of their own: XQL keywords are case-insensitive and many of
//! them (`by`, `as`, `type`) are also plausible field names, so the parser decides from
//! context. Identifiers keep their dots (`xdm.asset.id`, `alias.field`, `ENUM.FILE`).

use std::fmt;

use super::ParseError;

/// Where a token or a tree node starts in the query text: 1-based line and column (in
/// characters) and the byte offset.
#[derive(Clone, Copy, Debug, Default, Eq)]
pub struct Span {
    pub line: u32,
    pub column: u32,
    pub offset: usize,
}

/// Two trees that differ only in where their parts were written are the same query, so
/// spans never make two nodes unequal.
impl PartialEq for Span {
    fn eq(&self, _other: &Span) -> bool {
        true
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// A bare identifier or keyword, dots included.
    Ident(String),
    /// A backtick-quoted identifier or literal.
    Quoted(String),
    Str(String),
    Int(i64),
    Float(f64),
    /// A number with a time suffix (`30d`, `1h`, `500ms`); the unit is lower-cased.
    Duration(u64, String),
    /// The path after `->`, kept as written (`B.D[1].E`, `["xdm.vulnerability.cve_id"]`).
    JsonPath(String),
    Pipe,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Match,
    NotMatch,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Arrow,
    Plus,
    Minus,
    Star,
    Slash,
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(name) => write!(f, "`{name}`"),
            Tok::Quoted(name) => write!(f, "`{name}`"),
            Tok::Str(text) => write!(f, "the string \"{text}\""),
            Tok::Int(value) => write!(f, "the number {value}"),
            Tok::Float(value) => write!(f, "the number {value}"),
            Tok::Duration(amount, unit) => write!(f, "the duration {amount}{unit}"),
            Tok::JsonPath(path) => write!(f, "the JSON path {path}"),
            Tok::Pipe => f.write_str("`|`"),
            Tok::Eq => f.write_str("`=`"),
            Tok::Ne => f.write_str("`!=`"),
            Tok::Lt => f.write_str("`<`"),
            Tok::Le => f.write_str("`<=`"),
            Tok::Gt => f.write_str("`>`"),
            Tok::Ge => f.write_str("`>=`"),
            Tok::Match => f.write_str("`~=`"),
            Tok::NotMatch => f.write_str("`!~=`"),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::LBracket => f.write_str("`[`"),
            Tok::RBracket => f.write_str("`]`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Arrow => f.write_str("`->`"),
            Tok::Plus => f.write_str("`+`"),
            Tok::Minus => f.write_str("`-`"),
            Tok::Star => f.write_str("`*`"),
            Tok::Slash => f.write_str("`/`"),
            Tok::Eof => f.write_str("the end of the query"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// Time suffixes XQL accepts after a number (`bin span`, `config timeframe`), longest
/// first so `ms` and `mo` win over `m`.
const DURATION_UNITS: [&str; 8] = ["ms", "mo", "s", "m", "h", "d", "w", "y"];

/// Tokenizes a whole query. The last token is always `Eof`.
pub fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let mut lexer = Lexer {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        line: 1,
        line_start: 0,
        counted_to: 0,
        counted_column: 1,
    };
    let mut tokens = Vec::with_capacity(text.len() / 4);
    loop {
        let token = lexer.next_token()?;
        let done = token.tok == Tok::Eof;
        let arrow = token.tok == Tok::Arrow;
        tokens.push(token);
        if done {
            return Ok(tokens);
        }
        if arrow {
            tokens.push(lexer.json_path()?);
        }
    }
}

struct Lexer<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: u32,
    line_start: usize,
    /// Columns are counted in characters from the last span taken, not from the line
    /// start, so a long one-line query costs linear time.
    counted_to: usize,
    counted_column: u32,
}

impl Lexer<'_> {
    fn span(&mut self) -> Span {
        if self.counted_to < self.line_start {
            self.counted_to = self.line_start;
            self.counted_column = 1;
        }
        self.counted_column += self.text[self.counted_to..self.pos].chars().count() as u32;
        self.counted_to = self.pos;
        Span { line: self.line, column: self.counted_column, offset: self.pos }
    }

    fn peek(&self, ahead: usize) -> u8 {
        self.bytes.get(self.pos + ahead).copied().unwrap_or(0)
    }

    fn bump_newline(&mut self) {
        self.pos += 1;
        self.line += 1;
        self.line_start = self.pos;
    }

    fn skip_blanks_and_comments(&mut self) {
        loop {
            match self.peek(0) {
                b'\n' => self.bump_newline(),
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'/' if self.peek(1) == b'/' => {
                    while self.pos < self.bytes.len() && self.bytes[self.pos] != b'\n' {
                        self.pos += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn next_token(&mut self) -> Result<Token, ParseError> {
        self.skip_blanks_and_comments();
        let span = self.span();
        let Some(&byte) = self.bytes.get(self.pos) else {
            return Ok(Token { tok: Tok::Eof, span });
        };
        let simple = |len: usize, tok: Tok| (len, tok);
        let (len, tok) = match byte {
            b'|' => simple(1, Tok::Pipe),
            b'(' => simple(1, Tok::LParen),
            b')' => simple(1, Tok::RParen),
            b'[' => simple(1, Tok::LBracket),
            b']' => simple(1, Tok::RBracket),
            b',' => simple(1, Tok::Comma),
            b'+' => simple(1, Tok::Plus),
            b'*' => simple(1, Tok::Star),
            b'/' => simple(1, Tok::Slash),
            b'-' if self.peek(1) == b'>' => simple(2, Tok::Arrow),
            b'-' => simple(1, Tok::Minus),
            b'=' if self.peek(1) == b'=' => simple(2, Tok::Eq),
            b'=' => simple(1, Tok::Eq),
            b'~' if self.peek(1) == b'=' => simple(2, Tok::Match),
            b'!' if self.peek(1) == b'=' => simple(2, Tok::Ne),
            b'!' if self.peek(1) == b'~' && self.peek(2) == b'=' => simple(3, Tok::NotMatch),
            b'<' if self.peek(1) == b'=' => simple(2, Tok::Le),
            b'<' if self.peek(1) == b'>' => simple(2, Tok::Ne),
            b'<' => simple(1, Tok::Lt),
            b'>' if self.peek(1) == b'=' => simple(2, Tok::Ge),
            b'>' => simple(1, Tok::Gt),
            b'"' | b'\'' => return self.string(span, byte),
            b'`' => return self.quoted(span),
            b'0'..=b'9' => return self.number(span),
            b'.' if self.peek(1).is_ascii_digit() => return self.number(span),
            b if b == b'_' || b.is_ascii_alphabetic() => return Ok(self.ident(span)),
            b'$' => {
                let start = self.pos;
                self.pos += 1;
                let name = self.ident(span);
                let name = match name.tok {
                    Tok::Ident(name) => name,
                    _ => self.text[start..self.pos].to_string(),
                };
                return Err(ParseError::at(
                    span,
                    format!(
                        "`${name}` is a template placeholder, not XQL; substitute a value \
                         before running the query"
                    ),
                ));
            }
            _ => {
                let found = self.text[self.pos..].chars().next().unwrap_or('?');
                return Err(ParseError::at(span, format!("unexpected character `{found}`")));
            }
        };
        self.pos += len;
        Ok(Token { tok, span })
    }

    fn ident(&mut self, span: Span) -> Token {
        let start = self.pos;
        loop {
            while self.pos < self.bytes.len()
                && (self.bytes[self.pos] == b'_' || self.bytes[self.pos].is_ascii_alphanumeric())
            {
                self.pos += 1;
            }
            // A dot continues the name only when a name part follows it.
            let next = self.peek(1);
            if self.peek(0) == b'.' && (next == b'_' || next.is_ascii_alphabetic()) {
                self.pos += 1;
                continue;
            }
            break;
        }
        Token { tok: Tok::Ident(self.text[start..self.pos].to_string()), span }
    }

    fn quoted(&mut self, span: Span) -> Result<Token, ParseError> {
        let start = self.pos + 1;
        let Some(len) = self.text[start..].find('`') else {
            return Err(ParseError::at(span, "a backtick-quoted name is never closed"));
        };
        let name = &self.text[start..start + len];
        if name.contains('\n') {
            return Err(ParseError::at(span, "a backtick-quoted name runs past the line end"));
        }
        self.pos = start + len + 1;
        Ok(Token { tok: Tok::Quoted(name.to_string()), span })
    }

    /// Reads a string literal. `"""…"""` is raw; in `"…"` and `'…'` a backslash escapes
    /// the quote and itself and is kept before anything else, so regular expressions
    /// such as `".*\$"` mean what they say.
    fn string(&mut self, span: Span, quote: u8) -> Result<Token, ParseError> {
        if quote == b'"' && self.peek(1) == b'"' && self.peek(2) == b'"' {
            let start = self.pos + 3;
            let Some(len) = self.text[start..].find("\"\"\"") else {
                return Err(ParseError::at(span, "a triple-quoted string is never closed"));
            };
            let body = &self.text[start..start + len];
            self.advance_over(start + len + 3);
            return Ok(Token { tok: Tok::Str(body.to_string()), span });
        }
        let mut value = String::new();
        let mut pos = self.pos + 1;
        loop {
            let Some(ch) = self.text[pos..].chars().next() else {
                return Err(ParseError::at(
                    span,
                    format!("a string opened with {} is never closed", quote as char),
                ));
            };
            match ch {
                '\\' => {
                    let next = self.text[pos + 1..].chars().next();
                    match next {
                        Some(escaped) if escaped == quote as char || escaped == '\\' => {
                            value.push(escaped);
                            pos += 2;
                        }
                        Some('n') => {
                            value.push('\n');
                            pos += 2;
                        }
                        Some('t') => {
                            value.push('\t');
                            pos += 2;
                        }
                        _ => {
                            value.push('\\');
                            pos += 1;
                        }
                    }
                }
                c if c == quote as char => {
                    pos += 1;
                    break;
                }
                c => {
                    value.push(c);
                    pos += c.len_utf8();
                }
            }
        }
        self.advance_over(pos);
        Ok(Token { tok: Tok::Str(value), span })
    }

    /// Moves to `end`, counting the newlines passed so later columns stay right.
    fn advance_over(&mut self, end: usize) {
        while self.pos < end {
            if self.bytes[self.pos] == b'\n' {
                self.bump_newline();
            } else {
                self.pos += 1;
            }
        }
    }

    fn number(&mut self, span: Span) -> Result<Token, ParseError> {
        let start = self.pos;
        while self.peek(0).is_ascii_digit() {
            self.pos += 1;
        }
        let mut float = false;
        if self.peek(0) == b'.' && self.peek(1).is_ascii_digit() {
            float = true;
            self.pos += 1;
            while self.peek(0).is_ascii_digit() {
                self.pos += 1;
            }
        }
        if matches!(self.peek(0), b'e' | b'E')
            && (self.peek(1).is_ascii_digit()
                || (matches!(self.peek(1), b'+' | b'-') && self.peek(2).is_ascii_digit()))
        {
            float = true;
            self.pos += 2;
            while self.peek(0).is_ascii_digit() {
                self.pos += 1;
            }
        }
        let digits = &self.text[start..self.pos];
        let suffix_end = self.text[self.pos..]
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .map_or(self.text.len(), |len| self.pos + len);
        let suffix = &self.text[self.pos..suffix_end];
        if !suffix.is_empty() {
            let unit = suffix.to_ascii_lowercase();
            if float || !DURATION_UNITS.contains(&unit.as_str()) {
                return Err(ParseError::at(
                    span,
                    format!(
                        "`{digits}{suffix}` is neither a number nor a duration; a duration \
                         is a whole number and one of ms, s, m, h, d, w, mo, y"
                    ),
                ));
            }
            let amount = digits
                .parse()
                .map_err(|_| ParseError::at(span, format!("`{digits}` is too large")))?;
            self.pos = suffix_end;
            return Ok(Token { tok: Tok::Duration(amount, unit), span });
        }
        let tok =
            if float {
                Tok::Float(
                    digits
                        .parse()
                        .map_err(|_| ParseError::at(span, format!("`{digits}` is not a number")))?,
                )
            } else {
                match digits.parse() {
                    Ok(value) => Tok::Int(value),
                    Err(_) => Tok::Float(digits.parse().map_err(|_| {
                        ParseError::at(span, format!("`{digits}` is not a number"))
                    })?),
                }
            };
        Ok(Token { tok, span })
    }

    /// Reads the JSON path that follows `->`, up to white space, a comma, a pipe or a
    /// closing parenthesis outside brackets and quotes.
    fn json_path(&mut self) -> Result<Token, ParseError> {
        while matches!(self.peek(0), b' ' | b'\t') {
            self.pos += 1;
        }
        let span = self.span();
        let start = self.pos;
        let mut depth = 0u32;
        let mut quote: Option<u8> = None;
        while let Some(&byte) = self.bytes.get(self.pos) {
            if let Some(open) = quote {
                if byte == open {
                    quote = None;
                }
                self.pos += 1;
                continue;
            }
            match byte {
                b'"' | b'\'' => quote = Some(byte),
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth = depth.saturating_sub(1),
                b' ' | b'\t' | b'\r' | b'\n' | b',' | b'|' | b')' if depth == 0 => break,
                _ => {}
            }
            self.pos += 1;
        }
        if quote.is_some() || depth > 0 {
            return Err(ParseError::at(span, "a JSON path after `->` is never closed"));
        }
        if self.pos == start {
            return Err(ParseError::at(span, "`->` needs a JSON path after it, such as `a.b`"));
        }
        Ok(Token { tok: Tok::JsonPath(self.text[start..self.pos].to_string()), span })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        tokenize(text).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn keeps_dots_in_names_and_reads_durations() {
        assert_eq!(
            toks("xdm.asset.id = ENUM.FILE | bin _time span = 1H"),
            vec![
                Tok::Ident("xdm.asset.id".into()),
                Tok::Eq,
                Tok::Ident("ENUM.FILE".into()),
                Tok::Pipe,
                Tok::Ident("bin".into()),
                Tok::Ident("_time".into()),
                Tok::Ident("span".into()),
                Tok::Eq,
                Tok::Duration(1, "h".into()),
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn strings_keep_regex_backslashes_and_triple_quotes_are_raw() {
        assert_eq!(toks(r#"".*\$""#)[0], Tok::Str(r".*\$".into()));
        assert_eq!(toks(r#""say \"hi\"""#)[0], Tok::Str(r#"say "hi""#.into()));
        assert_eq!(toks(r#""""VULN""""#)[0], Tok::Str("VULN".into()));
    }

    #[test]
    fn json_paths_are_read_whole() {
        assert_eq!(
            toks(r#"root->B.D[1].E, x -> ["a.b"])"#),
            vec![
                Tok::Ident("root".into()),
                Tok::Arrow,
                Tok::JsonPath("B.D[1].E".into()),
                Tok::Comma,
                Tok::Ident("x".into()),
                Tok::Arrow,
                Tok::JsonPath(r#"["a.b"]"#.into()),
                Tok::RParen,
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn comments_are_skipped_and_positions_count_lines() {
        let tokens = tokenize("dataset = x // a note\n| filter a").unwrap();
        let pipe = tokens.iter().find(|t| t.tok == Tok::Pipe).unwrap();
        assert_eq!((pipe.span.line, pipe.span.column), (2, 1));
    }

    #[test]
    fn explains_bad_input() {
        let err = tokenize("filter a = \"open").unwrap_err();
        assert!(err.message.contains("never closed"), "{err}");
        let err = tokenize("filter a in ($accounts)").unwrap_err();
        assert!(err.message.contains("placeholder"), "{err}");
        assert_eq!(err.column, 14);
        let err = tokenize("config timeframe = 3x").unwrap_err();
        assert!(err.message.contains("duration"), "{err}");
    }
}
