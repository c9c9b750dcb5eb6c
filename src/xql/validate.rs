//! Decides whether a parsed query may be run: read-only (no `target`, `call` only for
//! allow-listed saved queries), well ordered (`config` first, one source), bounded (a
//! timeframe set by the query or by the caller) and, given a schema, naming only
//! datasets and fields the tenant has.
//!
//! Field checks follow the pipeline: `alter` adds fields, `fields` and `comp` replace
//! them, `join` and `union` merge the other side's. Where a stage's output cannot be
//! known (`top`, `transaction`, `call`), checking stops for the rest of the query rather
//! than report names that may well exist.

use std::collections::BTreeSet;

use serde::Serialize;

use super::ast::*;
use super::schema::Schema;
use super::suggest::nearest;
use super::{ParseError, Span};

/// Aggregate functions `comp` accepts.
pub const AGGREGATES: [&str; 19] = [
    "count",
    "count_distinct",
    "sum",
    "min",
    "max",
    "avg",
    "values",
    "list",
    "first",
    "last",
    "earliest",
    "latest",
    "median",
    "stddev_population",
    "stddev_sample",
    "var",
    "approx_count_distinct",
    "approx_quantiles",
    "approx_top",
];

/// Scalar functions XQL documents; a name outside this list is a warning, not an
/// error, because tenants gain functions faster than any list.
pub const FUNCTIONS: [&str; 70] = [
    "add",
    "array_all",
    "array_any",
    "arrayconcat",
    "arraycreate",
    "arraydistinct",
    "arrayfilter",
    "arrayindex",
    "arrayindexof",
    "arraylen",
    "arraymap",
    "arraymerge",
    "arrayrange",
    "arraystring",
    "ceil",
    "coalesce",
    "concat",
    "current_time",
    "date_floor",
    "divide",
    "extract_time",
    "extract_url_host",
    "extract_url_pub_suffix",
    "extract_url_registered_domain",
    "floor",
    "format_string",
    "format_timestamp",
    "if",
    "incidr",
    "incidr6",
    "int_to_ip",
    "ip_to_int",
    "is_ipv4",
    "is_ipv6",
    "is_known_private_ipv4",
    "json_extract",
    "json_extract_array",
    "json_extract_scalar",
    "json_extract_scalar_array",
    "len",
    "lowercase",
    "ltrim",
    "multiply",
    "object_create",
    "object_merge",
    "parse_epoch",
    "parse_timestamp",
    "pow",
    "regexcapture",
    "regextract",
    "replace",
    "round",
    "rtrim",
    "split",
    "string_count",
    "subtract",
    "timestamp_diff",
    "timestamp_seconds",
    "timestamp_sub",
    "to_boolean",
    "to_epoch",
    "to_float",
    "to_integer",
    "to_json_string",
    "to_number",
    "to_string",
    "to_timestamp",
    "trim",
    "uppercase",
    "wildcard_match",
];

/// One finding of the validator, at a place in the query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl Diagnostic {
    fn at(span: Span, message: impl Into<String>) -> Diagnostic {
        let ParseError { line, column, message } = ParseError::at(span, message);
        Diagnostic { line, column, message }
    }
}

impl From<ParseError> for Diagnostic {
    fn from(err: ParseError) -> Diagnostic {
        Diagnostic { line: err.line, column: err.column, message: err.message }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
    }
}

/// The verdict on one query, in the shape `xql check --json` prints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Validation {
    pub valid: bool,
    pub read_only: bool,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    /// The refusals among `errors`: what makes the query not read-only.
    #[serde(skip)]
    pub refusals: Vec<Diagnostic>,
}

impl Validation {
    /// A query that did not parse.
    pub fn syntax_error(err: ParseError) -> Validation {
        Validation { valid: false, read_only: true, errors: vec![err.into()], ..Default::default() }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ValidationOptions<'a> {
    /// Datasets and fields of the tenant; without one, only syntax, order and the
    /// read-only rules are checked.
    pub schema: Option<&'a Schema>,
    /// The caller sends a timeframe with the query (the API's `timeframe`).
    pub caller_timeframe: bool,
    /// A query without any timeframe is an error rather than a warning.
    pub require_timeframe: bool,
    /// Saved queries `call` may run.
    pub call_allow_list: &'a [String],
}

/// Parses and validates query text in one step.
pub fn check(text: &str, options: &ValidationOptions<'_>) -> (Option<Query>, Validation) {
    match super::parse(text) {
        Ok(query) => {
            let validation = validate(&query, options);
            (Some(query), validation)
        }
        Err(err) => (None, Validation::syntax_error(err)),
    }
}

pub fn validate(query: &Query, options: &ValidationOptions<'_>) -> Validation {
    let mut checker = Checker { options, errors: vec![], warnings: vec![], refusals: vec![] };
    checker.query(query, true);

    let has_timeframe = query.stages.iter().any(|stage| {
        matches!(&stage.kind, StageKind::Config { name, .. } if name.text.eq_ignore_ascii_case("timeframe"))
    });
    if !has_timeframe && !options.caller_timeframe {
        let span = query.stages.first().map(|s| s.span).unwrap_or_default();
        let message = "no timeframe is set, so the query would scan the tenant's whole \
                       default window; start it with `config timeframe = 24h` (or pass one)";
        if options.require_timeframe {
            checker.errors.push(Diagnostic::at(span, message));
        } else {
            checker.warnings.push(Diagnostic::at(span, message));
        }
    }

    Validation {
        valid: checker.errors.is_empty(),
        read_only: checker.refusals.is_empty(),
        errors: checker.errors,
        warnings: checker.warnings,
        refusals: checker.refusals,
    }
}

/// The fields a stage can see, or `None` when they cannot be known.
type Known = Option<BTreeSet<String>>;

struct Checker<'o, 'a> {
    options: &'o ValidationOptions<'a>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    refusals: Vec<Diagnostic>,
}

impl Checker<'_, '_> {
    fn refuse(&mut self, span: Span, message: String) {
        let diagnostic = Diagnostic::at(span, message);
        self.refusals.push(diagnostic.clone());
        self.errors.push(diagnostic);
    }

    /// Checks one query or subquery and returns the fields its output has.
    fn query(&mut self, query: &Query, top: bool) -> Known {
        let mut known: Known = None;
        let mut seen_source = false;
        let mut seen_other = false;
        let last = query.stages.len().saturating_sub(1);

        for (idx, stage) in query.stages.iter().enumerate() {
            match &stage.kind {
                StageKind::Config { name, value } => {
                    if seen_source || seen_other {
                        self.errors.push(Diagnostic::at(
                            stage.span,
                            "`config` must come before the dataset and every other stage",
                        ));
                    }
                    self.config(stage.span, name, value, top);
                    continue;
                }
                StageKind::Source(source) => {
                    if seen_source || seen_other {
                        self.errors.push(Diagnostic::at(
                            stage.span,
                            format!(
                                "`{}` must be the first stage after `config`; use `union` or \
                                 `join` to bring in another dataset",
                                source.kind.keyword()
                            ),
                        ));
                    }
                    seen_source = true;
                    known = self.source(source);
                    continue;
                }
                _ => {}
            }
            if !seen_source && !seen_other {
                // No source: the tenant's default dataset.
                known = self.dataset_fields(&Name::new("xdr_data"));
            }
            seen_other = true;
            known = self.stage(stage, idx == last, known);
        }
        known
    }

    fn config(&mut self, span: Span, name: &Name, value: &ConfigValue, top: bool) {
        let setting = name.text.to_ascii_lowercase();
        match (setting.as_str(), value) {
            ("timeframe", ConfigValue::Expr(Expr::Duration(..))) => {}
            ("timeframe", ConfigValue::Between(Expr::Str(_), Expr::Str(_))) => {}
            ("timeframe", _) => self.errors.push(Diagnostic::at(
                span,
                "`config timeframe` takes a duration such as `24h` or `7d`, or \
                 `between \"<start>\" and \"<end>\"`",
            )),
            ("case_sensitive", ConfigValue::Expr(Expr::Bool(_))) => {}
            ("case_sensitive", ConfigValue::Expr(Expr::Field(f)))
                if f.quoted && matches!(f.text.as_str(), "true" | "false") => {}
            ("case_sensitive", _) => self
                .errors
                .push(Diagnostic::at(span, "`config case_sensitive` takes `true` or `false`")),
            (other, _) => self.warnings.push(Diagnostic::at(
                span,
                format!("`config {other}` is not a setting pivotwatch knows; it is passed on"),
            )),
        }
        if !top && setting == "timeframe" {
            self.warnings.push(Diagnostic::at(
                span,
                "a timeframe inside a subquery is decided by the outer query",
            ));
        }
    }

    fn source(&mut self, source: &Source) -> Known {
        if source.kind != SourceKind::Dataset || self.options.schema.is_none() {
            return None;
        }
        let mut fields = BTreeSet::new();
        for name in &source.names {
            fields.extend(self.dataset_fields(name)?);
        }
        Some(fields)
    }

    fn dataset_fields(&mut self, name: &Name) -> Known {
        let schema = self.options.schema?;
        match schema.dataset(&name.text) {
            Some(fields) => Some(fields.keys().cloned().collect()),
            None => {
                let mut message = format!("unknown dataset `{}`", name.text);
                match nearest(&name.text, schema.datasets.keys().map(String::as_str)) {
                    Some(near) => message.push_str(&format!("; did you mean `{near}`?")),
                    None => {
                        let names: Vec<&str> = schema.datasets.keys().map(String::as_str).collect();
                        message.push_str(&format!("; this tenant has {}", names.join(", ")));
                    }
                }
                self.errors.push(Diagnostic::at(name.span, message));
                None
            }
        }
    }

    fn stage(&mut self, stage: &Stage, is_last: bool, known: Known) -> Known {
        match &stage.kind {
            StageKind::Config { .. } | StageKind::Source(_) => known,
            StageKind::Target { .. } => {
                let mut message = "the `target` stage writes results into a dataset or lookup; \
                                   pivotwatch runs read-only queries only"
                    .to_string();
                if !is_last {
                    message.push_str(" (and `target` must be the last stage in any case)");
                }
                self.refuse(stage.span, message);
                known
            }
            StageKind::Call { name, .. } => {
                let allowed =
                    self.options.call_allow_list.iter().any(|n| n.eq_ignore_ascii_case(&name.text));
                if !allowed {
                    self.refuse(
                        stage.span,
                        format!(
                            "`call {}` runs a saved query whose stages pivotwatch cannot see, and \
                             it is not on the allow-list",
                            name.text
                        ),
                    );
                }
                None
            }
            StageKind::Alter(assigns) => {
                let mut known = known;
                for assign in assigns {
                    self.expr(&assign.value, known.as_ref());
                    if let Some(fields) = known.as_mut() {
                        fields.insert(assign.name.text.clone());
                    }
                }
                known
            }
            StageKind::ReplaceNull(assigns) => {
                for assign in assigns {
                    self.field_name(&assign.name, known.as_ref());
                    self.expr(&assign.value, known.as_ref());
                }
                known
            }
            StageKind::ArrayExpand { field, .. } | StageKind::Bin { field, .. } => {
                self.expr(field, known.as_ref());
                known
            }
            StageKind::Comp { aggregates, by, .. } => {
                for e in by {
                    self.expr(e, known.as_ref());
                }
                let mut out = BTreeSet::new();
                for e in by {
                    out.insert(output_name(e));
                }
                for agg in aggregates {
                    if let Expr::Call { name, args } = &agg.call {
                        if !AGGREGATES.contains(&name.as_str()) {
                            let mut message = format!("`{name}` is not an aggregate function");
                            if let Some(near) = nearest(name, AGGREGATES) {
                                message.push_str(&format!("; did you mean `{near}`?"));
                            }
                            self.errors.push(Diagnostic::at(stage.span, message));
                        }
                        for arg in args {
                            self.expr(arg, known.as_ref());
                        }
                    }
                    out.insert(aggregate_name(agg));
                }
                known.map(|_| out)
            }
            StageKind::Dedup { fields, by } => {
                for e in fields {
                    self.expr(e, known.as_ref());
                }
                if let Some(key) = by {
                    self.expr(&key.field, known.as_ref());
                }
                known
            }
            StageKind::Fields { exclude, items } => {
                for item in items {
                    self.expr(&item.expr, known.as_ref());
                }
                let mut known = known;
                if let Some(fields) = known.as_mut() {
                    if *exclude {
                        for item in items {
                            fields.remove(&output_name(&item.expr));
                        }
                    } else {
                        *fields = items
                            .iter()
                            .map(|item| {
                                item.alias
                                    .as_ref()
                                    .map_or_else(|| output_name(&item.expr), |a| a.text.clone())
                            })
                            .collect();
                    }
                }
                known
            }
            StageKind::Filter(condition) => {
                self.expr(condition, known.as_ref());
                known
            }
            StageKind::Join { query, alias, on, .. } => {
                let right = self.query(query, false);
                let on_fields = match (&known, &right) {
                    (Some(left), Some(right)) => {
                        let mut fields = left.clone();
                        fields.extend(right.iter().map(|f| format!("{}.{f}", alias.text)));
                        Some(fields)
                    }
                    _ => None,
                };
                self.expr(on, on_fields.as_ref());
                match (known, right) {
                    (Some(mut left), Some(right)) => {
                        left.extend(right);
                        Some(left)
                    }
                    _ => None,
                }
            }
            StageKind::Union(source) => {
                let other = match source {
                    UnionSource::Query(q) => self.query(q, false),
                    UnionSource::Dataset(name) => self.dataset_fields(name),
                };
                match (known, other) {
                    (Some(mut left), Some(other)) => {
                        left.extend(other);
                        Some(left)
                    }
                    _ => None,
                }
            }
            StageKind::Sort(keys) => {
                for key in keys {
                    self.expr(&key.field, known.as_ref());
                }
                known
            }
            StageKind::Limit(_) => known,
            StageKind::Top { fields, by, .. } => {
                for e in fields.iter().chain(by) {
                    self.expr(e, known.as_ref());
                }
                None
            }
            StageKind::Windowcomp(w) => {
                self.expr(&w.call, known.as_ref());
                for e in &w.by {
                    self.expr(e, known.as_ref());
                }
                let mut known = known;
                if let (Some(fields), Some(alias)) = (known.as_mut(), &w.alias) {
                    fields.insert(alias.text.clone());
                }
                known
            }
            StageKind::Generic { .. } => None,
        }
    }

    fn field_name(&mut self, name: &Name, known: Option<&BTreeSet<String>>) {
        let Some(known) = known else { return };
        if known.contains(&name.text) || looks_like_enum(name) {
            return;
        }
        let mut message = format!("unknown field `{}`", name.text);
        if let Some(near) = nearest(&name.text, known.iter().map(String::as_str)) {
            message.push_str(&format!("; did you mean `{near}`?"));
        }
        self.errors.push(Diagnostic::at(name.span, message));
    }

    fn expr(&mut self, e: &Expr, known: Option<&BTreeSet<String>>) {
        match e {
            Expr::Field(name) => self.field_name(name, known),
            Expr::Call { name, args } => {
                if !FUNCTIONS.contains(&name.as_str()) && !AGGREGATES.contains(&name.as_str()) {
                    let mut message = format!("`{name}` is not a function pivotwatch knows");
                    if let Some(near) = nearest(name, FUNCTIONS.iter().copied()) {
                        message.push_str(&format!("; did you mean `{near}`?"));
                    }
                    let span = args.iter().find_map(first_span).unwrap_or_default();
                    self.warnings.push(Diagnostic::at(span, message));
                }
                for arg in args {
                    self.expr(arg, known);
                }
            }
            Expr::Unary { expr, .. } | Expr::JsonPath { expr, .. } => self.expr(expr, known),
            Expr::Binary { lhs, rhs, .. } => {
                self.expr(lhs, known);
                self.expr(rhs, known);
            }
            Expr::In { expr, set, .. } => {
                self.expr(expr, known);
                match set {
                    InSet::List(items) => {
                        for item in items {
                            self.expr(item, known);
                        }
                    }
                    InSet::Query(q) => {
                        self.query(q, false);
                    }
                }
            }
            Expr::Str(_)
            | Expr::Int(_)
            | Expr::Float(_)
            | Expr::Bool(_)
            | Expr::Null
            | Expr::Duration(..)
            | Expr::Enum(_) => {}
        }
    }
}

/// An all-capitals bare name (`STORY`, `FILE_WRITE`) is an enum value where no field
/// of that name exists, as in `event_type = STORY`.
pub fn looks_like_enum(name: &Name) -> bool {
    !name.quoted
        && name.text.chars().any(|c| c.is_ascii_uppercase())
        && name.text.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The column a `by` or `fields` item produces.
pub fn output_name(e: &Expr) -> String {
    match e {
        Expr::Field(name) => name.text.clone(),
        other => other.to_string(),
    }
}

/// The column an aggregate produces: its alias, or `count` for `count()` and
/// `<function>_<field>` otherwise (our convention for the local tenant; a real tenant
/// may name unaliased aggregates differently, so hunts always alias them).
pub fn aggregate_name(agg: &Aggregate) -> String {
    if let Some(alias) = &agg.alias {
        return alias.text.clone();
    }
    match &agg.call {
        Expr::Call { name, args } => match args.first() {
            None => name.clone(),
            Some(arg) => format!("{name}_{}", output_name(arg)),
        },
        other => other.to_string(),
    }
}

fn first_span(e: &Expr) -> Option<Span> {
    match e {
        Expr::Field(name) => Some(name.span),
        Expr::Call { args, .. } => args.iter().find_map(first_span),
        Expr::Unary { expr, .. } | Expr::JsonPath { expr, .. } | Expr::In { expr, .. } => {
            first_span(expr)
        }
        Expr::Binary { lhs, rhs, .. } => first_span(lhs).or_else(|| first_span(rhs)),
        _ => None,
    }
}
