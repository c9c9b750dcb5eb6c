//! Runs XQL over local tables: the engine behind the replay tenant.
//!
//! Tables are columnar. Strings are dictionary-encoded, so a filter that compares a
//! string column with a literal is decided once per distinct value rather than once
//! per row, and grouping by such a column hashes a small integer. A filter narrows a
//! table to a selection of row numbers without copying any column; a stage that adds
//! columns first gathers the selected rows.
//!
//! Only what the engine runs correctly is accepted: a stage or function it does not
//! implement is an `ExecError::Unsupported` naming it and its place, never a result
//! that quietly differs from a tenant's.

mod eval;
mod run;
mod value;

use std::sync::Arc;

use thiserror::Error;

pub use run::{ExecOptions, Tenant, execute};
pub use value::{Column, DictBuilder, NULL_CODE, NULL_INT, Table, Value};

use super::Span;

#[derive(Clone, Debug, Error, PartialEq)]
pub enum ExecError {
    #[error("line {}, column {}: {what} is not supported by the local replay tenant", span.line, span.column)]
    Unsupported { what: String, span: Span },

    #[error("unknown dataset `{name}`{}; the replay tenant has {}", suggestion_text(.suggestion), .known.join(", "))]
    UnknownDataset { name: String, suggestion: Option<String>, known: Vec<String> },

    #[error("line {}, column {}: unknown field `{name}`{}", span.line, span.column, suggestion_text(.suggestion))]
    UnknownField { name: String, suggestion: Option<String>, span: Span },

    #[error("{0}")]
    Invalid(String),

    #[error(
        "the query would produce more than {limit} rows in `{stage}`; narrow it with filter or limit"
    )]
    TooLarge { stage: &'static str, limit: usize },
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default()
}

/// Shares a column between tables without copying it.
pub type SharedColumn = Arc<Column>;
