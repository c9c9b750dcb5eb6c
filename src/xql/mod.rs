//! XQL, the Cortex Query Language: lexer, parser, syntax tree, canonical printer,
//! validator and a local executor for the replay tenant.
//!
//! Everything that reaches a tenant goes through `validate` first: a query that could
//! write (`target`, a `call` of a saved query that is not on the allow-list) is refused
//! before it leaves the process, and the validator knows the tenant's datasets and
//! fields well enough to say which name was mistyped. This module depends only on
//! `model` and does no network I/O.

pub mod ast;
pub mod exec;
pub mod lexer;
pub mod parser;
mod printer;
pub mod schema;
mod suggest;
pub mod validate;

use std::fmt;

use serde::Serialize;

pub use ast::Query;
pub use lexer::Span;
pub use parser::parse;
pub use schema::Schema;
pub use validate::{Validation, ValidationOptions, validate};

/// A syntax error, with the place it was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ParseError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl ParseError {
    pub fn at(span: Span, message: impl Into<String>) -> ParseError {
        ParseError { line: span.line.max(1), column: span.column.max(1), message: message.into() }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses and prints a query in canonical form.
pub fn format(text: &str) -> Result<String, ParseError> {
    Ok(parse(text)?.to_string())
}
