//! Runs a query stage by stage over the tables a `Tenant` provides.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::ExecError;
use super::eval::{CExpr, Ctx, compile};
use super::value::{Column, Key, Table, Value};
use crate::xql::Span;
use crate::xql::ast::*;
use crate::xql::suggest::nearest;
use crate::xql::validate::{AGGREGATES, aggregate_name, output_name};

/// Where the engine finds datasets, and what "now" is for relative timeframes.
pub trait Tenant {
    fn dataset(&self, name: &str) -> Option<Table>;
    fn dataset_names(&self) -> Vec<String>;
    /// Unix milliseconds; a replay of recorded telemetry answers with the end of its
    /// data, so "the last 24 hours" means the last day that was recorded.
    fn now_ms(&self) -> i64;
}

#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// `[from, to)` in Unix milliseconds, as the API's `timeframe` gives it.
    pub timeframe: Option<(i64, i64)>,
    /// The most rows a join or an expansion may produce.
    pub max_rows: usize,
}

impl Default for ExecOptions {
    fn default() -> ExecOptions {
        ExecOptions { timeframe: None, max_rows: 20_000_000 }
    }
}

pub fn execute(
    query: &Query,
    tenant: &dyn Tenant,
    options: &ExecOptions,
) -> Result<Table, ExecError> {
    let mut runner = Runner { tenant, options, case_sensitive: false, window: options.timeframe };
    runner.configure(query)?;
    runner.run(query)
}

struct Runner<'a> {
    tenant: &'a dyn Tenant,
    options: &'a ExecOptions,
    case_sensitive: bool,
    window: Option<(i64, i64)>,
}

fn duration_ms(amount: u64, unit: &str) -> Option<i64> {
    let scale: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "mo" => 30 * 86_400_000,
        "y" => 365 * 86_400_000,
        _ => return None,
    };
    i64::try_from(amount).ok()?.checked_mul(scale)
}

impl Runner<'_> {
    /// Applies the top-level `config` stages: the timeframe narrows the caller's.
    fn configure(&mut self, query: &Query) -> Result<(), ExecError> {
        for stage in &query.stages {
            let StageKind::Config { name, value } = &stage.kind else { continue };
            match (name.text.to_ascii_lowercase().as_str(), value) {
                ("case_sensitive", ConfigValue::Expr(Expr::Bool(on))) => self.case_sensitive = *on,
                ("case_sensitive", ConfigValue::Expr(Expr::Field(f))) if f.quoted => {
                    self.case_sensitive = f.text.eq_ignore_ascii_case("true");
                }
                ("timeframe", ConfigValue::Expr(Expr::Duration(amount, unit))) => {
                    let span = duration_ms(*amount, unit).ok_or_else(|| {
                        ExecError::Invalid(format!("timeframe {amount}{unit} is out of range"))
                    })?;
                    let now = self.tenant.now_ms();
                    self.narrow((now - span, now + 1));
                }
                ("timeframe", ConfigValue::Between(Expr::Str(from), Expr::Str(to))) => {
                    let parse = |text: &str| -> Result<i64, ExecError> {
                        if text.eq_ignore_ascii_case("now") {
                            return Ok(self.tenant.now_ms() + 1);
                        }
                        crate::timefmt::parse_time(text)
                            .map(|secs| (secs * 1000.0) as i64)
                            .map_err(ExecError::Invalid)
                    };
                    let window = (parse(from)?, parse(to)?);
                    self.narrow(window);
                }
                _ => {
                    return Err(ExecError::Unsupported {
                        what: format!("`config {}` with that value", name.text),
                        span: stage.span,
                    });
                }
            }
        }
        Ok(())
    }

    fn narrow(&mut self, (from, to): (i64, i64)) {
        self.window = Some(match self.window {
            Some((a, b)) => (a.max(from), b.min(to)),
            None => (from, to),
        });
    }

    fn run(&self, query: &Query) -> Result<Table, ExecError> {
        let mut table: Option<Table> = None;
        for stage in &query.stages {
            let current = match (&stage.kind, table.take()) {
                (StageKind::Config { .. }, current) => {
                    table = current;
                    continue;
                }
                (StageKind::Source(source), None) => self.source(source, stage.span)?,
                (StageKind::Source(_), Some(_)) => {
                    return Err(ExecError::Invalid(format!(
                        "line {}, column {}: a dataset can only start a query",
                        stage.span.line, stage.span.column
                    )));
                }
                (kind, current) => {
                    let input = match current {
                        Some(t) => t,
                        None => self.dataset(&Name::new("xdr_data"))?,
                    };
                    self.stage(kind, stage.span, input)?
                }
            };
            table = Some(current);
        }
        match table {
            Some(t) => Ok(t),
            None => self.dataset(&Name::new("xdr_data")),
        }
    }

    fn ctx<'s>(
        &'s self,
        span: Span,
        run_subquery: &'s dyn Fn(&Query) -> Result<Table, ExecError>,
    ) -> Ctx<'s> {
        Ctx {
            case_sensitive: self.case_sensitive,
            now_ms: self.tenant.now_ms(),
            span,
            run_subquery,
        }
    }

    fn source(&self, source: &Source, span: Span) -> Result<Table, ExecError> {
        if source.kind != SourceKind::Dataset {
            return Err(ExecError::Unsupported {
                what: format!("`{}`", source.kind.keyword()),
                span,
            });
        }
        let mut tables = Vec::new();
        for name in &source.names {
            tables.push(self.dataset(name)?);
        }
        let mut tables = tables.into_iter();
        let first = tables.next().unwrap_or_default();
        tables.try_fold(first, |acc, next| self.concat(&acc, &next))
    }

    /// A dataset, narrowed to the timeframe on its `_time` column.
    fn dataset(&self, name: &Name) -> Result<Table, ExecError> {
        let Some(table) = self.tenant.dataset(&name.text) else {
            let known = self.tenant.dataset_names();
            return Err(ExecError::UnknownDataset {
                name: name.text.clone(),
                suggestion: nearest(&name.text, known.iter().map(String::as_str))
                    .map(str::to_string),
                known,
            });
        };
        let (Some((from, to)), Some(idx)) = (self.window, table.column_index("_time")) else {
            return Ok(table);
        };
        let Column::Time(times) = &*table.columns[idx] else { return Ok(table) };
        let rows = table
            .row_ids()
            .filter(|&row| times[row] >= from && times[row] < to)
            .map(|row| row as u32)
            .collect();
        Ok(table.with_selection(rows))
    }

    fn stage(&self, kind: &StageKind, span: Span, t: Table) -> Result<Table, ExecError> {
        let sub = |q: &Query| self.run(q);
        let ctx = self.ctx(span, &sub);
        match kind {
            StageKind::Filter(condition) => {
                let condition = compile(condition, &t, &ctx)?;
                let rows =
                    t.row_ids().filter(|&row| condition.test(&t, row)).map(|r| r as u32).collect();
                Ok(t.with_selection(rows))
            }
            StageKind::Alter(assigns) => {
                let mut t = t.compact();
                for assign in assigns {
                    let value = compile(&assign.value, &t, &ctx)?;
                    let values = (0..t.len).map(|row| value.eval(&t, row)).collect();
                    t.set_column(&assign.name.text, Column::from_values(values));
                }
                Ok(t)
            }
            StageKind::Fields { exclude, items } => fields(&t, *exclude, items, &ctx),
            StageKind::Comp { aggregates, by, options } => {
                if let Some(opt) = options.first() {
                    return Err(ctx_unsupported(span, format!("the `comp` option `{}`", opt.name)));
                }
                comp(&t, aggregates, by, &ctx)
            }
            StageKind::Sort(keys) => {
                let rows = sorted_rows(&t, keys, &ctx)?;
                Ok(t.with_selection(rows))
            }
            StageKind::Limit(n) => {
                let rows =
                    t.row_ids().take(usize::try_from(*n).unwrap_or(0)).map(|r| r as u32).collect();
                Ok(t.with_selection(rows))
            }
            StageKind::Dedup { fields, by } => {
                let t = match by {
                    Some(key) => {
                        let rows = sorted_rows(&t, std::slice::from_ref(key), &ctx)?;
                        t.with_selection(rows)
                    }
                    None => t,
                };
                let keys =
                    fields.iter().map(|f| compile(f, &t, &ctx)).collect::<Result<Vec<_>, _>>()?;
                let mut seen = HashSet::new();
                let rows = t
                    .row_ids()
                    .filter(|&row| {
                        seen.insert(keys.iter().map(|k| k.eval(&t, row).key()).collect::<Vec<_>>())
                    })
                    .map(|r| r as u32)
                    .collect();
                Ok(t.with_selection(rows))
            }
            StageKind::Bin { field, options } => bin(t, field, options, &ctx),
            StageKind::Join { options, query, alias, on } => {
                let right = self.run(query)?;
                self.join(&t, &right, options, alias, on, &ctx)
            }
            StageKind::Union(source) => {
                let other = match source {
                    UnionSource::Query(q) => self.run(q)?,
                    UnionSource::Dataset(name) => self.dataset(name)?,
                };
                self.concat(&t, &other)
            }
            StageKind::Top { count, fields, by, options } => {
                if let Some(opt) = options.first() {
                    return Err(ctx_unsupported(span, format!("the `top` option `{}`", opt.name)));
                }
                top(&t, *count, fields, by, &ctx)
            }
            StageKind::ReplaceNull(assigns) => {
                let mut t = t.compact();
                for assign in assigns {
                    let Some(idx) = t.column_index(&assign.name.text) else {
                        return Err(unknown_field(&t, &assign.name));
                    };
                    let replacement = compile(&assign.value, &t, &ctx)?.eval(&t, 0);
                    let column = t.columns[idx].clone();
                    let values = (0..t.len)
                        .map(|row| match column.get(row) {
                            Value::Null => replacement.clone(),
                            v => v,
                        })
                        .collect();
                    t.set_column(&assign.name.text, Column::from_values(values));
                }
                Ok(t)
            }
            StageKind::ArrayExpand { field, limit } => self.arrayexpand(t, field, *limit, &ctx),
            StageKind::Generic { stage: GenericStage::View, .. } => Ok(t),
            StageKind::Target { .. } | StageKind::Call { .. } => Err(ExecError::Invalid(format!(
                "line {}, column {}: `{}` is refused: the replay tenant runs read-only queries",
                span.line,
                span.column,
                kind.keyword()
            ))),
            other => Err(ctx_unsupported(span, format!("the `{}` stage", other.keyword()))),
        }
    }

    fn join(
        &self,
        left: &Table,
        right: &Table,
        options: &[Opt],
        alias: &Name,
        on: &Expr,
        ctx: &Ctx<'_>,
    ) -> Result<Table, ExecError> {
        let mut kind = "inner".to_string();
        let mut strategy = "right".to_string();
        for opt in options {
            let value = match &opt.value {
                Expr::Field(name) => name.text.to_ascii_lowercase(),
                other => other.to_string(),
            };
            match opt.name.as_str() {
                "type" if ["inner", "left", "right"].contains(&value.as_str()) => kind = value,
                "conflict_strategy" if ["left", "right", "both"].contains(&value.as_str()) => {
                    strategy = value
                }
                _ => {
                    return Err(ctx_unsupported(
                        ctx.span,
                        format!("the join option `{} = {value}`", opt.name),
                    ));
                }
            }
        }

        // Equality conditions between the two sides become a hash join; whatever is
        // left is checked on each matched pair.
        let prefix = format!("{}.", alias.text);
        let mut keys: Vec<(Expr, String)> = Vec::new();
        let mut residual: Vec<&Expr> = Vec::new();
        for part in conjuncts(on) {
            match equi_key(part, &prefix, right) {
                Some(key) => keys.push(key),
                None => residual.push(part),
            }
        }
        let left_keys =
            keys.iter().map(|(e, _)| compile(e, left, ctx)).collect::<Result<Vec<_>, _>>()?;
        let right_cols: Vec<usize> =
            keys.iter().filter_map(|(_, name)| right.column_index(name)).collect();

        let mut index: HashMap<Vec<Key>, Vec<u32>> = HashMap::new();
        for row in right.row_ids() {
            let key: Vec<Key> =
                right_cols.iter().map(|&c| right.columns[c].get(row).key()).collect();
            if key.contains(&Key::Null) {
                continue;
            }
            index.entry(key).or_default().push(row as u32);
        }
        let all_right: Vec<u32> = right.row_ids().map(|r| r as u32).collect();
        let mut pairs: Vec<(Option<u32>, Option<u32>)> = Vec::new();
        for row in left.row_ids() {
            let matches = if keys.is_empty() {
                Some(&all_right)
            } else {
                let key: Vec<Key> = left_keys.iter().map(|k| k.eval(left, row).key()).collect();
                index.get(&key)
            };
            match matches {
                Some(rows) => pairs.extend(rows.iter().map(|&r| (Some(row as u32), Some(r)))),
                None if kind == "left" => pairs.push((Some(row as u32), None)),
                None => {}
            }
            if pairs.len() > self.options.max_rows {
                return Err(ExecError::TooLarge { stage: "join", limit: self.options.max_rows });
            }
        }

        // The matched pairs as one table: the left columns, then the right columns
        // under `alias.name`.
        let gather = |pairs: &[(Option<u32>, Option<u32>)]| {
            let left_ids: Vec<Option<u32>> = pairs.iter().map(|p| p.0).collect();
            let right_ids: Vec<Option<u32>> = pairs.iter().map(|p| p.1).collect();
            let mut names = left.names.clone();
            let mut columns: Vec<Arc<Column>> =
                left.columns.iter().map(|c| Arc::new(c.gather_opt(&left_ids))).collect();
            for (name, column) in right.names.iter().zip(&right.columns) {
                names.push(format!("{prefix}{name}"));
                columns.push(Arc::new(column.gather_opt(&right_ids)));
            }
            Table::new(names, columns)
        };
        let mut joined = gather(&pairs);
        if !residual.is_empty() {
            let mut condition = residual[0].clone();
            for part in &residual[1..] {
                condition = Expr::Binary {
                    op: BinOp::And,
                    lhs: Box::new(condition),
                    rhs: Box::new((*part).clone()),
                };
            }
            let condition = compile(&condition, &joined, ctx)?;
            let passed: Vec<bool> = (0..pairs.len())
                .map(|row| pairs[row].1.is_some() && condition.test(&joined, row))
                .collect();
            pairs = residual_survivors(&pairs, &passed, kind == "left");
            joined = gather(&pairs);
        }
        if kind == "right" {
            let matched: HashSet<u32> = pairs.iter().filter_map(|p| p.1).collect();
            let missing: Vec<Option<u32>> =
                all_right.iter().filter(|r| !matched.contains(r)).map(|&r| Some(r)).collect();
            if !missing.is_empty() {
                let none: Vec<Option<u32>> = vec![None; missing.len()];
                let mut extra_cols: Vec<Arc<Column>> =
                    left.columns.iter().map(|c| Arc::new(c.gather_opt(&none))).collect();
                extra_cols.extend(right.columns.iter().map(|c| Arc::new(c.gather_opt(&missing))));
                let extra = Table::new(joined.names.clone(), extra_cols);
                joined = self.concat(&joined, &extra)?;
            }
        }

        // Fold the prefixed right columns back under their own names.
        let mut out_names = Vec::new();
        let mut out_cols = Vec::new();
        let n_left = left.names.len();
        for (idx, name) in left.names.iter().enumerate() {
            let right_idx = right.column_index(name).map(|r| n_left + r);
            let column = match (right_idx, strategy.as_str()) {
                (Some(r), "right") => {
                    coalesce_columns(&joined.columns[r], &joined.columns[idx], joined.len)
                }
                _ => joined.columns[idx].clone(),
            };
            out_names.push(name.clone());
            out_cols.push(column);
        }
        for (r, name) in right.names.iter().enumerate() {
            let column = joined.columns[n_left + r].clone();
            if left.column_index(name).is_none() {
                out_names.push(name.clone());
                out_cols.push(column);
            } else if strategy == "both" {
                out_names.push(format!("{prefix}{name}"));
                out_cols.push(column);
            }
        }
        Ok(Table::new(out_names, out_cols))
    }

    /// The rows of both tables; a column missing on one side is null there.
    fn concat(&self, a: &Table, b: &Table) -> Result<Table, ExecError> {
        let total = a.n_rows() + b.n_rows();
        if total > self.options.max_rows {
            return Err(ExecError::TooLarge { stage: "union", limit: self.options.max_rows });
        }
        let mut names: Vec<String> = a.names.clone();
        for name in &b.names {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let columns = names
            .iter()
            .map(|name| {
                let mut values = Vec::with_capacity(total);
                for t in [a, b] {
                    match t.column_index(name) {
                        Some(idx) => values.extend(t.row_ids().map(|row| t.columns[idx].get(row))),
                        None => values.extend(std::iter::repeat_n(Value::Null, t.n_rows())),
                    }
                }
                Arc::new(Column::from_values(values))
            })
            .collect();
        Ok(Table::new(names, columns))
    }

    fn arrayexpand(
        &self,
        t: Table,
        field: &Expr,
        limit: Option<i64>,
        ctx: &Ctx<'_>,
    ) -> Result<Table, ExecError> {
        let Some(name) = field.as_field() else {
            return Err(ctx_unsupported(ctx.span, "`arrayexpand` of an expression"));
        };
        let t = t.compact();
        let Some(idx) = t.column_index(&name.text) else { return Err(unknown_field(&t, name)) };
        let limit = limit.and_then(|l| usize::try_from(l).ok()).unwrap_or(usize::MAX);
        let mut rows = Vec::new();
        let mut expanded = Vec::new();
        for row in 0..t.len {
            match t.columns[idx].get(row) {
                Value::Array(items) => {
                    for item in items.iter().take(limit) {
                        rows.push(row as u32);
                        expanded.push(item.clone());
                    }
                }
                other => {
                    rows.push(row as u32);
                    expanded.push(other);
                }
            }
            if rows.len() > self.options.max_rows {
                return Err(ExecError::TooLarge {
                    stage: "arrayexpand",
                    limit: self.options.max_rows,
                });
            }
        }
        let mut out = t.with_selection(rows).compact();
        out.set_column(&name.text, Column::from_values(expanded));
        Ok(out)
    }
}

/// The pairs of a join that remain once its non-equality conditions are applied:
/// those whose condition `passed`. Pairs come grouped by left row, in order. With
/// `keep_left` (a left join) a left row none of whose pairs passed, or that had no
/// match at all, stays once with no right row, as SQL's left join keeps it.
fn residual_survivors(
    pairs: &[(Option<u32>, Option<u32>)],
    passed: &[bool],
    keep_left: bool,
) -> Vec<(Option<u32>, Option<u32>)> {
    let mut kept = Vec::with_capacity(pairs.len());
    let mut start = 0;
    while start < pairs.len() {
        let left_row = pairs[start].0;
        let end = start + pairs[start..].iter().take_while(|p| p.0 == left_row).count();
        let before = kept.len();
        kept.extend((start..end).filter(|&i| passed[i]).map(|i| pairs[i]));
        if keep_left && kept.len() == before {
            kept.push((left_row, None));
        }
        start = end;
    }
    kept
}

fn ctx_unsupported(span: Span, what: impl Into<String>) -> ExecError {
    ExecError::Unsupported { what: what.into(), span }
}

fn unknown_field(t: &Table, name: &Name) -> ExecError {
    ExecError::UnknownField {
        name: name.text.clone(),
        suggestion: nearest(&name.text, t.names.iter().map(String::as_str)).map(str::to_string),
        span: name.span,
    }
}

fn coalesce_columns(first: &Arc<Column>, second: &Arc<Column>, len: usize) -> Arc<Column> {
    let values = (0..len)
        .map(|row| match first.get(row) {
            Value::Null => second.get(row),
            v => v,
        })
        .collect();
    Arc::new(Column::from_values(values))
}

fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::Binary { op: BinOp::And, lhs, rhs } => {
            let mut out = conjuncts(lhs);
            out.extend(conjuncts(rhs));
            out
        }
        other => vec![other],
    }
}

/// `alias.f = g` (either way round) as (left expression, right column name).
fn equi_key(e: &Expr, prefix: &str, right: &Table) -> Option<(Expr, String)> {
    let Expr::Binary { op: BinOp::Eq, lhs, rhs } = e else { return None };
    let right_name = |x: &Expr| {
        x.as_field()
            .and_then(|n| n.text.strip_prefix(prefix))
            .filter(|name| right.column_index(name).is_some())
            .map(str::to_string)
    };
    match (right_name(lhs), right_name(rhs)) {
        (Some(name), None) => Some(((**rhs).clone(), name)),
        (None, Some(name)) => Some(((**lhs).clone(), name)),
        _ => None,
    }
}

fn fields(
    t: &Table,
    exclude: bool,
    items: &[FieldItem],
    ctx: &Ctx<'_>,
) -> Result<Table, ExecError> {
    let mut names = Vec::new();
    let mut columns = Vec::new();
    let mut picked = BTreeSet::new();
    for item in items {
        let Some(name) = item.expr.as_field() else {
            return Err(ctx_unsupported(ctx.span, "an expression in `fields`; use `alter` first"));
        };
        let Some(idx) = t.column_index(&name.text) else { return Err(unknown_field(t, name)) };
        picked.insert(idx);
        if !exclude {
            names.push(item.alias.as_ref().map_or_else(|| name.text.clone(), |a| a.text.clone()));
            columns.push(t.columns[idx].clone());
        }
    }
    if exclude {
        for (idx, (name, column)) in t.names.iter().zip(&t.columns).enumerate() {
            if !picked.contains(&idx) {
                names.push(name.clone());
                columns.push(column.clone());
            }
        }
    }
    Ok(Table { names, columns, len: t.len, selection: t.selection.clone() })
}

fn sorted_rows(t: &Table, keys: &[SortKey], ctx: &Ctx<'_>) -> Result<Vec<u32>, ExecError> {
    let compiled = keys.iter().map(|k| compile(&k.field, t, ctx)).collect::<Result<Vec<_>, _>>()?;
    let mut rows: Vec<(u32, Vec<Value>)> = t
        .row_ids()
        .map(|row| (row as u32, compiled.iter().map(|k| k.eval(t, row)).collect()))
        .collect();
    rows.sort_by(|(_, a), (_, b)| {
        for ((x, y), key) in a.iter().zip(b).zip(keys) {
            // Nulls go last whichever way the sort runs.
            let ordering = match (x.is_null(), y.is_null()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ if key.order == Some(Order::Desc) => y.sort_cmp(x),
                _ => x.sort_cmp(y),
            };
            if ordering != std::cmp::Ordering::Equal {
                return ordering;
            }
        }
        std::cmp::Ordering::Equal
    });
    Ok(rows.into_iter().map(|(row, _)| row).collect())
}

fn bin(t: Table, field: &Expr, options: &[Opt], ctx: &Ctx<'_>) -> Result<Table, ExecError> {
    let Some(name) = field.as_field() else {
        return Err(ctx_unsupported(ctx.span, "`bin` of an expression"));
    };
    let mut span_ms = None;
    let mut shift_ms = 0i64;
    for opt in options {
        match (opt.name.as_str(), &opt.value) {
            ("span", Expr::Duration(amount, unit)) => span_ms = duration_ms(*amount, unit),
            ("timeshift", Expr::Int(secs)) => shift_ms = secs.saturating_mul(1000),
            (other, _) => {
                return Err(ctx_unsupported(ctx.span, format!("the `bin` option `{other}`")));
            }
        }
    }
    let Some(span_ms) = span_ms.filter(|s| *s > 0) else {
        return Err(ExecError::Invalid(
            "`bin` needs `span = <duration>`, such as `span = 1h`".into(),
        ));
    };
    let mut t = t.compact();
    let Some(idx) = t.column_index(&name.text) else { return Err(unknown_field(&t, name)) };
    let Column::Time(times) = &*t.columns[idx] else {
        return Err(ExecError::Invalid(format!("`bin {}` needs a timestamp field", name.text)));
    };
    let binned = times
        .iter()
        .map(|&ms| {
            if ms == super::NULL_INT {
                ms
            } else {
                shift_ms + (ms - shift_ms).div_euclid(span_ms) * span_ms
            }
        })
        .collect();
    t.set_column(&name.text, Column::Time(binned));
    Ok(t)
}

/// Accumulates one aggregate for one group.
enum Acc {
    Count(u64),
    Distinct(HashSet<Key>),
    Sum { int: i64, float: f64, any_float: bool, any: bool },
    MinMax(Option<Value>, bool),
    Avg(f64, u64),
    Values(Vec<Value>, bool),
    First(Option<Value>),
    Last(Option<Value>),
}

struct AggSpec {
    func: String,
    arg: Option<CExpr>,
}

impl AggSpec {
    fn new_acc(&self) -> Acc {
        match self.func.as_str() {
            "count" => Acc::Count(0),
            "count_distinct" => Acc::Distinct(HashSet::new()),
            "sum" => Acc::Sum { int: 0, float: 0.0, any_float: false, any: false },
            "min" => Acc::MinMax(None, false),
            "max" => Acc::MinMax(None, true),
            "avg" => Acc::Avg(0.0, 0),
            "values" => Acc::Values(Vec::new(), true),
            "list" => Acc::Values(Vec::new(), false),
            "first" => Acc::First(None),
            _ => Acc::Last(None),
        }
    }
}

impl Acc {
    fn add(&mut self, value: Option<Value>) {
        let Some(value) = value else {
            if let Acc::Count(n) = self {
                *n += 1;
            }
            return;
        };
        if value.is_null() {
            return;
        }
        match self {
            Acc::Count(n) => *n += 1,
            Acc::Distinct(set) => {
                set.insert(value.key());
            }
            Acc::Sum { int, float, any_float, any } => {
                *any = true;
                match value {
                    Value::Int(v) => *int = int.saturating_add(v),
                    other => {
                        *any_float = true;
                        *float += other.as_f64().unwrap_or(0.0);
                    }
                }
            }
            Acc::MinMax(best, is_max) => {
                let replace = best.as_ref().is_none_or(|b| {
                    let ordering = value.sort_cmp(b);
                    if *is_max { ordering.is_gt() } else { ordering.is_lt() }
                });
                if replace {
                    *best = Some(value);
                }
            }
            Acc::Avg(sum, n) => {
                if let Some(x) = value.as_f64() {
                    *sum += x;
                    *n += 1;
                }
            }
            Acc::Values(items, _) => {
                if items.len() < 10_000 {
                    items.push(value);
                }
            }
            Acc::First(slot) => {
                if slot.is_none() {
                    *slot = Some(value);
                }
            }
            Acc::Last(slot) => *slot = Some(value),
        }
    }

    fn finish(self) -> Value {
        match self {
            Acc::Count(n) => Value::Int(n as i64),
            Acc::Distinct(set) => Value::Int(set.len() as i64),
            Acc::Sum { any: false, .. } => Value::Null,
            Acc::Sum { int, float, any_float: false, .. } => {
                let _ = float;
                Value::Int(int)
            }
            Acc::Sum { int, float, .. } => Value::Float(int as f64 + float),
            Acc::MinMax(best, _) => best.unwrap_or(Value::Null),
            Acc::Avg(_, 0) => Value::Null,
            Acc::Avg(sum, n) => Value::Float(sum / n as f64),
            Acc::Values(mut items, distinct) => {
                if distinct {
                    items.sort_by(|a, b| a.sort_cmp(b));
                    items.dedup_by(|a, b| a.key() == b.key());
                }
                Value::Array(Arc::new(items))
            }
            Acc::First(slot) | Acc::Last(slot) => slot.unwrap_or(Value::Null),
        }
    }
}

const LOCAL_AGGREGATES: [&str; 10] =
    ["count", "count_distinct", "sum", "min", "max", "avg", "values", "list", "first", "last"];

fn comp(
    t: &Table,
    aggregates: &[Aggregate],
    by: &[Expr],
    ctx: &Ctx<'_>,
) -> Result<Table, ExecError> {
    let mut specs = Vec::new();
    for agg in aggregates {
        let Expr::Call { name, args } = &agg.call else {
            return Err(ExecError::Invalid("`comp` takes aggregate calls".into()));
        };
        if !LOCAL_AGGREGATES.contains(&name.as_str()) {
            let what = if AGGREGATES.contains(&name.as_str()) {
                format!("the aggregate `{name}`")
            } else {
                format!("`{name}`, which is not an aggregate function,")
            };
            return Err(ctx_unsupported(ctx.span, what));
        }
        let arg = match (name.as_str(), args.as_slice()) {
            ("count", []) => None,
            (_, [arg]) => Some(compile(arg, t, ctx)?),
            _ => {
                return Err(ExecError::Invalid(format!(
                    "`{name}` takes one field{}",
                    if name == "count" { " or none" } else { "" }
                )));
            }
        };
        specs.push(AggSpec { func: name.clone(), arg });
    }
    let by_exprs = by.iter().map(|e| compile(e, t, ctx)).collect::<Result<Vec<_>, _>>()?;
    let by_cols: Vec<Option<usize>> =
        by_exprs.iter().map(|e| if let CExpr::Col(c) = e { Some(*c) } else { None }).collect();

    let mut groups: HashMap<Vec<Key>, usize> = HashMap::new();
    let mut representatives: Vec<usize> = Vec::new();
    let mut accs: Vec<Vec<Acc>> = Vec::new();
    let mut key = Vec::with_capacity(by.len());
    for row in t.row_ids() {
        key.clear();
        for (expr, col) in by_exprs.iter().zip(&by_cols) {
            key.push(match col {
                Some(c) => t.columns[*c].group_key(row),
                None => expr.eval(t, row).key(),
            });
        }
        let group = match groups.get(key.as_slice()) {
            Some(&g) => g,
            None => {
                let g = representatives.len();
                groups.insert(key.clone(), g);
                representatives.push(row);
                accs.push(specs.iter().map(AggSpec::new_acc).collect());
                g
            }
        };
        for (acc, spec) in accs[group].iter_mut().zip(&specs) {
            acc.add(spec.arg.as_ref().map(|a| a.eval(t, row)));
        }
    }
    // A query that groups nothing still answers with one row of totals.
    if by.is_empty() && representatives.is_empty() {
        representatives.push(usize::MAX);
        accs.push(specs.iter().map(AggSpec::new_acc).collect());
    }

    let mut names = Vec::new();
    let mut columns = Vec::new();
    for (e, expr) in by.iter().zip(&by_exprs) {
        names.push(output_name(e));
        let values = representatives.iter().map(|&row| expr.eval(t, row)).collect();
        columns.push(Arc::new(Column::from_values(values)));
    }
    let mut finished: Vec<Vec<Value>> = vec![Vec::with_capacity(accs.len()); specs.len()];
    for group in accs {
        for (idx, acc) in group.into_iter().enumerate() {
            finished[idx].push(acc.finish());
        }
    }
    for (agg, values) in aggregates.iter().zip(finished) {
        names.push(aggregate_name(agg));
        columns.push(Arc::new(Column::from_values(values)));
    }
    Ok(Table::new(names, columns))
}

/// `top [N] f [by g]`: the N most frequent values, with a `count` column, most
/// frequent first (ten when N is not given).
fn top(
    t: &Table,
    count: Option<i64>,
    fields: &[Expr],
    by: &[Expr],
    ctx: &Ctx<'_>,
) -> Result<Table, ExecError> {
    let group: Vec<Expr> = fields.iter().chain(by).cloned().collect();
    let aggregate = Aggregate {
        call: Expr::Call { name: "count".into(), args: vec![] },
        alias: Some(Name::new("count")),
    };
    let counted = comp(t, std::slice::from_ref(&aggregate), &group, ctx)?;
    let keys = [SortKey { order: Some(Order::Desc), field: Expr::field("count") }];
    let mut rows = sorted_rows(&counted, &keys, ctx)?;
    rows.truncate(usize::try_from(count.unwrap_or(10)).unwrap_or(10));
    Ok(counted.with_selection(rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xql::parse;

    /// A tenant holding a few small tables.
    struct Tables(Vec<(&'static str, Table)>);

    impl Tenant for Tables {
        fn dataset(&self, name: &str) -> Option<Table> {
            self.0.iter().find(|(n, _)| *n == name).map(|(_, t)| t.clone())
        }

        fn dataset_names(&self) -> Vec<String> {
            self.0.iter().map(|(n, _)| n.to_string()).collect()
        }

        fn now_ms(&self) -> i64 {
            0
        }
    }

    fn strings(values: &[&str]) -> Arc<Column> {
        Arc::new(Column::from_values(values.iter().map(|s| Value::str(s)).collect()))
    }

    fn run(tenant: &Tables, text: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let query = parse(text).unwrap();
        execute(&query, tenant, &ExecOptions::default()).unwrap().to_rows()
    }

    /// Three devices; the first has a small and a large session, the second only a
    /// small one, the third none.
    fn devices_and_sessions() -> Tables {
        let devices = Table::new(
            vec!["ip".into(), "name".into()],
            vec![strings(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]), strings(&["plc", "hmi", "cam"])],
        );
        let sessions = Table::new(
            vec!["ip".into(), "bytes".into()],
            vec![
                strings(&["10.0.0.1", "10.0.0.1", "10.0.0.2"]),
                Arc::new(Column::Int(vec![10, 500, 20])),
            ],
        );
        Tables(vec![("devices", devices), ("sessions", sessions)])
    }

    #[test]
    fn a_left_join_keeps_a_row_whose_matches_all_fail_the_condition() {
        let rows = run(
            &devices_and_sessions(),
            "dataset = devices | join type = left (dataset = sessions) as s \
             s.ip = ip and s.bytes > 100",
        );
        let got: Vec<(String, serde_json::Value)> = rows
            .iter()
            .map(|r| (r["name"].as_str().unwrap().to_string(), r["bytes"].clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("plc".to_string(), serde_json::json!(500)),
                ("hmi".to_string(), serde_json::Value::Null),
                ("cam".to_string(), serde_json::Value::Null),
            ]
        );
    }

    /// Events at 09:00, 12:00 and 15:00 UTC on 2024-03-01.
    fn events() -> Tables {
        let noon = 1_709_294_400_000;
        let hours = 3_600_000;
        let events = Table::new(
            vec!["_time".into(), "name".into()],
            vec![
                Arc::new(Column::Time(vec![noon - 3 * hours, noon, noon + 3 * hours])),
                strings(&["morning", "noon", "afternoon"]),
            ],
        );
        Tables(vec![("events", events)])
    }

    fn names_where(condition: &str) -> Vec<String> {
        run(&events(), &format!("dataset = events | filter {condition}"))
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_time_compared_with_a_string_reads_the_string_as_a_time() {
        for noon in ["2024-03-01 12:00:00", "2024-03-01T12:00:00Z", "2024-03-01T13:00:00+01:00"] {
            assert_eq!(names_where(&format!("_time >= \"{noon}\"")), ["noon", "afternoon"]);
            assert_eq!(names_where(&format!("\"{noon}\" > _time")), ["morning"]);
            assert_eq!(names_where(&format!("_time = \"{noon}\"")), ["noon"]);
        }
        let listed = names_where(
            "_time in (\"2024-03-01 15:00:00\", \"2024-03-01T09:00:00Z\") | sort asc _time",
        );
        assert_eq!(listed, ["morning", "afternoon"]);
    }

    #[test]
    fn a_string_that_is_not_a_time_is_an_error_naming_it() {
        for condition in [
            "_time > \"2024-03-01 25:00:00\"",
            "\"yesterday\" < _time",
            "_time in (\"2024-03-01 12:00:00\", \"03/01/2024\")",
        ] {
            let query = parse(&format!("dataset = events | filter {condition}")).unwrap();
            let err = execute(&query, &events(), &ExecOptions::default()).unwrap_err();
            let text = err.to_string();
            let literal = condition.split('"').rev().nth(1).unwrap();
            assert!(text.contains(&format!("\"{literal}\"")), "{condition}: {text}");
            assert!(text.contains("`_time`") && text.contains("not a time"), "{text}");
        }
    }

    #[test]
    fn an_inner_join_drops_a_row_whose_matches_all_fail_the_condition() {
        let rows = run(
            &devices_and_sessions(),
            "dataset = devices | join (dataset = sessions) as s s.ip = ip and s.bytes > 100",
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["name"], "plc");
        assert_eq!(rows[0]["bytes"], 500);
    }
}
