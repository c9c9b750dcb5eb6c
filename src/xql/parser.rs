//! A recursive-descent parser from tokens to the `ast`. Keywords are matched without
//! regard to case; every error names the line and column and, where a likely fix
//! exists, suggests it.

use super::ParseError;
use super::ast::*;
use super::lexer::{Span, Tok, Token, tokenize};
use super::suggest::nearest;

/// Parses a whole query.
pub fn parse(text: &str) -> Result<Query, ParseError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, pos: 0 };
    if parser.at(&Tok::Eof) {
        return Err(ParseError::at(parser.span(), "the query is empty"));
    }
    let query = parser.query()?;
    if !parser.at(&Tok::Eof) {
        let found = parser.peek().clone();
        return Err(ParseError::at(
            parser.span(),
            format!("unexpected {found}; stages are separated by `|`"),
        ));
    }
    Ok(query)
}

/// Words that end an expression or a list, so that they are never read as field names.
const RESERVED: [&str; 11] =
    ["and", "or", "not", "in", "contains", "incidr", "incidr6", "by", "as", "asc", "desc"];

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.tokens[self.pos.min(self.tokens.len() - 1)].tok
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        &self.tokens[(self.pos + ahead).min(self.tokens.len() - 1)].tok
    }

    fn span(&self) -> Span {
        self.tokens[self.pos.min(self.tokens.len() - 1)].span
    }

    fn at(&self, tok: &Tok) -> bool {
        self.peek() == tok
    }

    fn bump(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        tok
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.at(tok) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<(), ParseError> {
        if self.eat(tok) {
            return Ok(());
        }
        Err(self.unexpected(what))
    }

    fn unexpected(&self, what: &str) -> ParseError {
        ParseError::at(self.span(), format!("expected {what}, found {}", self.peek()))
    }

    fn is_kw_at(&self, ahead: usize, keyword: &str) -> bool {
        matches!(self.peek_at(ahead), Tok::Ident(word) if word.eq_ignore_ascii_case(keyword))
    }

    fn is_kw(&self, keyword: &str) -> bool {
        self.is_kw_at(0, keyword)
    }

    fn eat_kw(&mut self, keyword: &str) -> bool {
        if self.is_kw(keyword) {
            self.bump();
            true
        } else {
            false
        }
    }

    /// An identifier followed by `=`: the start of a `name = value` option.
    fn at_option(&self) -> bool {
        matches!(self.peek(), Tok::Ident(_)) && self.peek_at(1) == &Tok::Eq
    }

    fn at_stage_end(&self) -> bool {
        matches!(self.peek(), Tok::Pipe | Tok::RParen | Tok::Eof)
    }

    fn query(&mut self) -> Result<Query, ParseError> {
        let mut stages = vec![self.stage()?];
        while self.eat(&Tok::Pipe) {
            stages.push(self.stage()?);
        }
        Ok(Query { stages })
    }

    fn subquery(&mut self) -> Result<Query, ParseError> {
        self.expect(&Tok::LParen, "`(` to open a subquery")?;
        let query = self.query()?;
        self.expect(&Tok::RParen, "`)` to close the subquery")?;
        Ok(query)
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        let span = self.span();
        let keyword = match self.peek() {
            Tok::Ident(word) => word.to_ascii_lowercase(),
            Tok::Eof => return Err(ParseError::at(span, "expected a stage after `|`")),
            other => {
                return Err(ParseError::at(
                    span,
                    format!("expected a stage name such as `filter`, found {other}"),
                ));
            }
        };
        self.bump();
        let kind = match keyword.as_str() {
            "config" => self.config()?,
            "dataset" => self.source(SourceKind::Dataset)?,
            "preset" => self.source(SourceKind::Preset)?,
            "cold_dataset" => self.source(SourceKind::ColdDataset)?,
            "datamodel" => self.datamodel()?,
            "alter" => StageKind::Alter(self.assignments()?),
            "arrayexpand" => self.arrayexpand()?,
            "bin" => {
                let field = self.postfix()?;
                StageKind::Bin { field, options: self.options()? }
            }
            "call" => {
                let name = self.name("the name of a saved query")?;
                StageKind::Call { name, options: self.options()? }
            }
            "comp" => self.comp()?,
            "dedup" => self.dedup()?,
            "fields" => self.fields()?,
            "filter" => StageKind::Filter(self.expr()?),
            "join" => self.join()?,
            "limit" => StageKind::Limit(self.count("a row count after `limit`")?),
            "replacenull" => StageKind::ReplaceNull(self.assignments()?),
            "sort" => StageKind::Sort(self.sort_keys()?),
            "target" => {
                let options = self.options()?;
                let name = if self.at_stage_end() { None } else { Some(self.name("a name")?) };
                StageKind::Target { options, name }
            }
            "top" => self.top()?,
            "union" => self.union()?,
            "windowcomp" => self.windowcomp()?,
            "getrole" => self.generic(GenericStage::Getrole)?,
            "iploc" => self.generic(GenericStage::Iploc)?,
            "tag" => self.generic(GenericStage::Tag)?,
            "transaction" => self.generic(GenericStage::Transaction)?,
            "view" => self.generic(GenericStage::View)?,
            other => {
                let mut message = format!("unknown stage `{other}`");
                if let Some(near) = nearest(other, STAGE_KEYWORDS) {
                    message.push_str(&format!("; did you mean `{near}`?"));
                }
                return Err(ParseError::at(span, message));
            }
        };
        if !self.at_stage_end() {
            let found = self.peek().clone();
            return Err(ParseError::at(
                self.span(),
                format!("unexpected {found} in the `{keyword}` stage; stages are separated by `|`"),
            ));
        }
        Ok(Stage { kind, span })
    }

    fn config(&mut self) -> Result<StageKind, ParseError> {
        let name = self.name("a setting such as `timeframe` or `case_sensitive`")?;
        if self.eat_kw("between") {
            let from = self.additive()?;
            if !self.eat_kw("and") {
                return Err(self.unexpected("`and` between the two ends of the timeframe"));
            }
            let to = self.additive()?;
            return Ok(StageKind::Config { name, value: ConfigValue::Between(from, to) });
        }
        self.expect(&Tok::Eq, &format!("`=` after `config {}`", name.text))?;
        Ok(StageKind::Config { name, value: ConfigValue::Expr(self.additive()?) })
    }

    fn source(&mut self, kind: SourceKind) -> Result<StageKind, ParseError> {
        if self.eat_kw("in") {
            self.expect(&Tok::LParen, "`(` after `in`")?;
            let mut names = vec![self.name("a dataset name")?];
            while self.eat(&Tok::Comma) {
                names.push(self.name("a dataset name")?);
            }
            self.expect(&Tok::RParen, "`)` after the dataset names")?;
            return Ok(StageKind::Source(Source { kind, names, list: true }));
        }
        self.expect(&Tok::Eq, &format!("`=` after `{}`", kind.keyword()))?;
        let names = vec![self.name("a dataset name")?];
        Ok(StageKind::Source(Source { kind, names, list: false }))
    }

    fn datamodel(&mut self) -> Result<StageKind, ParseError> {
        if self.eat_kw("dataset") {
            let StageKind::Source(source) = self.source(SourceKind::Dataset)? else {
                return Err(self.unexpected("a dataset"));
            };
            return Ok(StageKind::Source(Source { kind: SourceKind::Datamodel, ..source }));
        }
        Ok(StageKind::Source(Source { kind: SourceKind::Datamodel, names: vec![], list: false }))
    }

    fn arrayexpand(&mut self) -> Result<StageKind, ParseError> {
        let field = self.postfix()?;
        let limit =
            if self.eat_kw("limit") { Some(self.count("a number after `limit`")?) } else { None };
        Ok(StageKind::ArrayExpand { field, limit })
    }

    fn comp(&mut self) -> Result<StageKind, ParseError> {
        let mut aggregates = Vec::new();
        loop {
            let span = self.span();
            let call = self.postfix()?;
            if !matches!(call, Expr::Call { .. }) {
                return Err(ParseError::at(
                    span,
                    "`comp` takes aggregate calls such as `count()` or `sum(bytes)`",
                ));
            }
            let alias = self.alias()?;
            aggregates.push(Aggregate { call, alias });
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        let by = if self.eat_kw("by") { self.expr_list()? } else { Vec::new() };
        let options = self.options()?;
        Ok(StageKind::Comp { aggregates, by, options })
    }

    fn dedup(&mut self) -> Result<StageKind, ParseError> {
        let fields = self.expr_list()?;
        let by = if self.eat_kw("by") {
            let order = self.order();
            Some(SortKey { order, field: self.postfix()? })
        } else {
            None
        };
        Ok(StageKind::Dedup { fields, by })
    }

    fn fields(&mut self) -> Result<StageKind, ParseError> {
        let exclude = self.eat(&Tok::Minus);
        let mut items = Vec::new();
        loop {
            let expr = self.postfix()?;
            let alias = self.alias()?;
            items.push(FieldItem { expr, alias });
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        Ok(StageKind::Fields { exclude, items })
    }

    fn join(&mut self) -> Result<StageKind, ParseError> {
        let options = self.options()?;
        let query = Box::new(self.subquery()?);
        if !self.eat_kw("as") {
            return Err(self.unexpected("`as <alias>` after the joined subquery"));
        }
        let alias = self.name("an alias for the joined subquery")?;
        let on = self.expr()?;
        Ok(StageKind::Join { options, query, alias, on })
    }

    fn top(&mut self) -> Result<StageKind, ParseError> {
        let count = match self.peek() {
            Tok::Int(_) => Some(self.count("a number")?),
            _ => None,
        };
        let fields = self.expr_list()?;
        let by = if self.eat_kw("by") { self.expr_list()? } else { Vec::new() };
        let options = self.options()?;
        Ok(StageKind::Top { count, fields, by, options })
    }

    fn union(&mut self) -> Result<StageKind, ParseError> {
        if self.at(&Tok::LParen) {
            return Ok(StageKind::Union(UnionSource::Query(Box::new(self.subquery()?))));
        }
        Ok(StageKind::Union(UnionSource::Dataset(self.name("a dataset or `(subquery)`")?)))
    }

    fn windowcomp(&mut self) -> Result<StageKind, ParseError> {
        let span = self.span();
        let call = self.postfix()?;
        if !matches!(call, Expr::Call { .. }) {
            return Err(ParseError::at(
                span,
                "`windowcomp` takes a function call such as `sum(x)`",
            ));
        }
        let by = if self.eat_kw("by") { self.expr_list()? } else { Vec::new() };
        let sort = if self.eat_kw("sort") { self.sort_keys()? } else { Vec::new() };
        let between = if self.eat_kw("between") {
            let from = self.unary()?;
            let to = if self.eat_kw("and") { Some(self.unary()?) } else { None };
            Some((from, to))
        } else {
            None
        };
        let options = self.options()?;
        let alias = self.alias()?;
        Ok(StageKind::Windowcomp(Box::new(Windowcomp { call, by, sort, between, options, alias })))
    }

    fn generic(&mut self, stage: GenericStage) -> Result<StageKind, ParseError> {
        let mut args = Vec::new();
        while !self.at_stage_end() {
            if self.eat(&Tok::Comma) {
                args.push(Arg::Comma);
            } else if self.at_option() {
                args.push(Arg::Opt(self.option()?));
            } else if self.is_kw("by") || self.is_kw("as") {
                let Tok::Ident(word) = self.bump() else { unreachable_tok()? };
                args.push(Arg::Word(word.to_ascii_lowercase()));
            } else {
                args.push(Arg::Expr(self.additive()?));
            }
        }
        Ok(StageKind::Generic { stage, args })
    }

    fn assignments(&mut self) -> Result<Vec<Assign>, ParseError> {
        let mut out = Vec::new();
        loop {
            let name = self.name("a field name")?;
            self.expect(&Tok::Eq, &format!("`=` after `{}`", name.text))?;
            out.push(Assign { name, value: self.expr()? });
            if !self.eat(&Tok::Comma) {
                return Ok(out);
            }
        }
    }

    fn options(&mut self) -> Result<Vec<Opt>, ParseError> {
        let mut out = Vec::new();
        while self.at_option() {
            out.push(self.option()?);
            // `comp … addrawdata = true as raw` names the extra column.
            if self.is_kw("as") {
                self.bump();
                let name = self.name("a name after `as`")?;
                out.push(Opt { name: "as".into(), value: Expr::Field(name) });
            }
        }
        Ok(out)
    }

    fn option(&mut self) -> Result<Opt, ParseError> {
        let Tok::Ident(name) = self.bump() else { unreachable_tok()? };
        self.expect(&Tok::Eq, "`=`")?;
        Ok(Opt { name: name.to_ascii_lowercase(), value: self.option_value()? })
    }

    /// An option's value: a literal, a duration or a bare word. A word is never read as
    /// a function call, so `join conflict_strategy = both (…)` keeps its subquery.
    fn option_value(&mut self) -> Result<Expr, ParseError> {
        let span = self.span();
        match self.peek().clone() {
            Tok::Ident(word)
                if !["true", "false", "null"].contains(&word.to_ascii_lowercase().as_str()) =>
            {
                self.bump();
                Ok(Expr::Field(Name { text: word, quoted: false, span }))
            }
            _ => self.additive(),
        }
    }

    fn alias(&mut self) -> Result<Option<Name>, ParseError> {
        if self.eat_kw("as") { Ok(Some(self.name("a name after `as`")?)) } else { Ok(None) }
    }

    fn order(&mut self) -> Option<Order> {
        if self.eat_kw("asc") {
            Some(Order::Asc)
        } else if self.eat_kw("desc") {
            Some(Order::Desc)
        } else {
            None
        }
    }

    fn sort_keys(&mut self) -> Result<Vec<SortKey>, ParseError> {
        let mut keys = Vec::new();
        loop {
            let prefix = self.order();
            let field = self.postfix()?;
            let order = prefix.or_else(|| self.order());
            keys.push(SortKey { order, field });
            if !self.eat(&Tok::Comma) {
                return Ok(keys);
            }
        }
    }

    fn expr_list(&mut self) -> Result<Vec<Expr>, ParseError> {
        let mut out = vec![self.additive()?];
        while self.eat(&Tok::Comma) {
            out.push(self.additive()?);
        }
        Ok(out)
    }

    fn count(&mut self, what: &str) -> Result<i64, ParseError> {
        match self.peek() {
            Tok::Int(value) if *value >= 0 => {
                let value = *value;
                self.bump();
                Ok(value)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn name(&mut self, what: &str) -> Result<Name, ParseError> {
        let span = self.span();
        match self.peek().clone() {
            Tok::Ident(text) => {
                self.bump();
                Ok(Name { text, quoted: false, span })
            }
            Tok::Quoted(text) => {
                self.bump();
                Ok(Name { text, quoted: true, span })
            }
            _ => Err(self.unexpected(what)),
        }
    }

    // Expressions, loosest binding first.

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.and()?;
        while self.eat_kw("or") {
            let rhs = self.and()?;
            lhs = Expr::Binary { op: BinOp::Or, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
        Ok(lhs)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.not()?;
        while self.eat_kw("and") {
            let rhs = self.not()?;
            lhs = Expr::Binary { op: BinOp::And, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
        Ok(lhs)
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.eat_kw("not") {
            return Ok(Expr::Unary { op: UnaryOp::Not, expr: Box::new(self.not()?) });
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let lhs = self.additive()?;
        let negated = self.is_kw("not")
            && ["in", "contains", "incidr", "incidr6"].iter().any(|kw| self.is_kw_at(1, kw));
        if negated {
            self.bump();
        }
        let op = match self.peek() {
            Tok::Eq => BinOp::Eq,
            Tok::Ne => BinOp::Ne,
            Tok::Lt => BinOp::Lt,
            Tok::Le => BinOp::Le,
            Tok::Gt => BinOp::Gt,
            Tok::Ge => BinOp::Ge,
            Tok::Match => BinOp::Match,
            Tok::NotMatch => BinOp::NotMatch,
            Tok::Ident(word) => match word.to_ascii_lowercase().as_str() {
                "contains" if negated => BinOp::NotContains,
                "contains" => BinOp::Contains,
                "incidr" if negated => BinOp::NotIncidr,
                "incidr" => BinOp::Incidr,
                "incidr6" if negated => BinOp::NotIncidr6,
                "incidr6" => BinOp::Incidr6,
                "in" => {
                    self.bump();
                    let set = self.in_set()?;
                    return Ok(Expr::In { expr: Box::new(lhs), negated, set });
                }
                _ => return Ok(lhs),
            },
            _ => return Ok(lhs),
        };
        self.bump();
        let rhs = self.additive()?;
        Ok(Expr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) })
    }

    fn in_set(&mut self) -> Result<InSet, ParseError> {
        let opens_query = ["dataset", "preset", "cold_dataset", "datamodel", "config"]
            .iter()
            .any(|kw| self.is_kw_at(1, kw))
            && matches!(self.peek_at(2), Tok::Eq | Tok::Ident(_));
        if self.at(&Tok::LParen) && opens_query {
            return Ok(InSet::Query(Box::new(self.subquery()?)));
        }
        self.expect(&Tok::LParen, "`(` after `in`")?;
        let mut items = Vec::new();
        if !self.at(&Tok::RParen) {
            items.push(self.additive()?);
            while self.eat(&Tok::Comma) {
                items.push(self.additive()?);
            }
        }
        self.expect(&Tok::RParen, "`)` to close the list")?;
        Ok(InSet::List(items))
    }

    fn additive(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => BinOp::Add,
                Tok::Minus => BinOp::Sub,
                _ => return Ok(lhs),
            };
            self.bump();
            let rhs = self.multiplicative()?;
            lhs = Expr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Star => BinOp::Mul,
                Tok::Slash => BinOp::Div,
                _ => return Ok(lhs),
            };
            self.bump();
            let rhs = self.unary()?;
            lhs = Expr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat(&Tok::Minus) {
            return Ok(match self.unary()? {
                Expr::Int(value) => Expr::Int(-value),
                Expr::Float(value) => Expr::Float(-value),
                other => Expr::Unary { op: UnaryOp::Neg, expr: Box::new(other) },
            });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut expr = self.primary()?;
        while self.eat(&Tok::Arrow) {
            let Tok::JsonPath(path) = self.bump() else {
                return Err(self.unexpected("a JSON path after `->`"));
            };
            expr = Expr::JsonPath { expr: Box::new(expr), path };
        }
        Ok(expr)
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let span = self.span();
        match self.peek().clone() {
            Tok::LParen => {
                self.bump();
                let inner = self.expr()?;
                self.expect(&Tok::RParen, "`)`")?;
                Ok(inner)
            }
            Tok::Str(text) => {
                self.bump();
                Ok(Expr::Str(text))
            }
            Tok::Int(value) => {
                self.bump();
                Ok(Expr::Int(value))
            }
            Tok::Float(value) => {
                self.bump();
                Ok(Expr::Float(value))
            }
            Tok::Duration(amount, unit) => {
                self.bump();
                Ok(Expr::Duration(amount, unit))
            }
            Tok::Quoted(text) => {
                self.bump();
                Ok(Expr::Field(Name { text, quoted: true, span }))
            }
            Tok::Ident(word) => {
                let lower = word.to_ascii_lowercase();
                // `incidr` is both an operator and a function; at the start of an
                // operand it can only be the function.
                let callable = !RESERVED.contains(&lower.as_str()) || lower.starts_with("incidr");
                if self.peek_at(1) == &Tok::LParen && callable {
                    self.bump();
                    return self.call(lower);
                }
                match lower.as_str() {
                    "true" | "false" => {
                        self.bump();
                        return Ok(Expr::Bool(lower == "true"));
                    }
                    "null" => {
                        self.bump();
                        return Ok(Expr::Null);
                    }
                    _ => {}
                }
                if RESERVED.contains(&lower.as_str()) {
                    return Err(ParseError::at(
                        span,
                        format!(
                            "expected a value, found the keyword `{word}`; write `{}` in \
                             backticks if it is a field name",
                            word
                        ),
                    ));
                }
                self.bump();
                if lower.starts_with("enum.") && word.len() > 5 {
                    return Ok(Expr::Enum(word[5..].to_string()));
                }
                Ok(Expr::Field(Name { text: word, quoted: false, span }))
            }
            _ => Err(self.unexpected("a value (a field, a literal or a function call)")),
        }
    }

    fn call(&mut self, name: String) -> Result<Expr, ParseError> {
        self.expect(&Tok::LParen, "`(`")?;
        let mut args = Vec::new();
        if !self.at(&Tok::RParen) {
            args.push(self.expr()?);
            while self.eat(&Tok::Comma) {
                args.push(self.expr()?);
            }
        }
        self.expect(&Tok::RParen, &format!("`)` to close the call to `{name}`"))?;
        Ok(Expr::Call { name, args })
    }
}

/// Reached only where the token was checked just before; returns an error rather
/// than panicking so that a logic slip cannot abort a server.
fn unreachable_tok<T>() -> Result<T, ParseError> {
    Err(ParseError::at(Span::default(), "internal parser error: unexpected token"))
}
