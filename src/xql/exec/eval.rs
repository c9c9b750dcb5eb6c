//! Compiles expressions against a table's columns and evaluates them row by row.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use regex::Regex;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use super::ExecError;
use super::value::{Column, Key, Table, Value};
use crate::xql::Span;
use crate::xql::ast::{BinOp, Expr, InSet, Query, UnaryOp};
use crate::xql::suggest::nearest;
use crate::xql::validate::looks_like_enum;

/// What compiling needs beyond the table: case sensitivity, the tenant's clock and a
/// way to run subqueries of `in (…)`.
pub(super) struct Ctx<'a> {
    pub case_sensitive: bool,
    pub now_ms: i64,
    pub span: Span,
    pub run_subquery: &'a dyn Fn(&Query) -> Result<Table, ExecError>,
}

impl Ctx<'_> {
    fn unsupported(&self, what: impl Into<String>) -> ExecError {
        ExecError::Unsupported { what: what.into(), span: self.span }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Func {
    Lowercase,
    Uppercase,
    Len,
    Trim,
    Concat,
    Replace,
    Split,
    ArrayIndex,
    ArrayLen,
    ToString,
    ToInteger,
    ToNumber,
    ToEpoch,
    ToTimestamp,
    ExtractTime,
    TimestampDiff,
    CurrentTime,
    If,
    Coalesce,
    Round,
    Floor,
    Add,
    Subtract,
    Multiply,
    Divide,
    IsIpv4,
    IsIpv6,
    IsKnownPrivateIpv4,
    Incidr,
    Regextract,
}

/// A compiled expression. Column references are indices; literals and patterns are
/// prepared once.
pub(super) enum CExpr {
    Col(usize),
    Lit(Value),
    /// A predicate over a dictionary column, decided per distinct value.
    DictMask {
        col: usize,
        mask: Vec<bool>,
        on_null: bool,
    },
    Not(Box<CExpr>),
    And(Box<CExpr>, Box<CExpr>),
    Or(Box<CExpr>, Box<CExpr>),
    Compare {
        op: Cmp,
        lhs: Box<CExpr>,
        rhs: Box<CExpr>,
        ci: bool,
    },
    Contains {
        expr: Box<CExpr>,
        needle: Box<CExpr>,
        ci: bool,
        negate: bool,
    },
    Regex {
        expr: Box<CExpr>,
        re: Arc<Regex>,
        negate: bool,
    },
    Incidr {
        expr: Box<CExpr>,
        nets: Vec<Net>,
        negate: bool,
    },
    InSet {
        expr: Box<CExpr>,
        set: HashSet<Key>,
        ci: bool,
        negate: bool,
    },
    Arith {
        op: Arith,
        lhs: Box<CExpr>,
        rhs: Box<CExpr>,
    },
    Neg(Box<CExpr>),
    Call {
        func: Func,
        args: Vec<CExpr>,
        now_ms: i64,
    },
}

pub(super) fn compile(e: &Expr, table: &Table, ctx: &Ctx<'_>) -> Result<CExpr, ExecError> {
    let ci = !ctx.case_sensitive;
    Ok(match e {
        Expr::Field(name) => match table.column_index(&name.text) {
            Some(idx) => CExpr::Col(idx),
            None if looks_like_enum(name) => CExpr::Lit(Value::str(&name.text)),
            None => {
                return Err(ExecError::UnknownField {
                    name: name.text.clone(),
                    suggestion: nearest(&name.text, table.names.iter().map(String::as_str))
                        .map(str::to_string),
                    span: name.span,
                });
            }
        },
        Expr::Str(text) => CExpr::Lit(Value::str(text)),
        Expr::Int(v) => CExpr::Lit(Value::Int(*v)),
        Expr::Float(v) => CExpr::Lit(Value::Float(*v)),
        Expr::Bool(v) => CExpr::Lit(Value::Bool(*v)),
        Expr::Null => CExpr::Lit(Value::Null),
        Expr::Enum(text) => CExpr::Lit(Value::str(text)),
        Expr::Duration(..) => return Err(ctx.unsupported("a duration inside an expression")),
        Expr::JsonPath { .. } => return Err(ctx.unsupported("the JSON path operator `->`")),
        Expr::Unary { op: UnaryOp::Not, expr } => CExpr::Not(Box::new(compile(expr, table, ctx)?)),
        Expr::Unary { op: UnaryOp::Neg, expr } => CExpr::Neg(Box::new(compile(expr, table, ctx)?)),
        Expr::Binary { op: op @ (BinOp::And | BinOp::Or), lhs, rhs } => {
            let l = Box::new(compile(lhs, table, ctx)?);
            let r = Box::new(compile(rhs, table, ctx)?);
            if *op == BinOp::And { CExpr::And(l, r) } else { CExpr::Or(l, r) }
        }
        Expr::Binary { op, lhs, rhs } => {
            let mut l = Box::new(compile(lhs, table, ctx)?);
            let mut r = Box::new(compile(rhs, table, ctx)?);
            if matches!(op, BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge) {
                read_as_time(&mut r, &l, table, ctx)?;
                read_as_time(&mut l, &r, table, ctx)?;
            }
            let compiled = match op {
                BinOp::And | BinOp::Or => unreachable_binop(ctx)?,
                BinOp::Eq => CExpr::Compare { op: Cmp::Eq, lhs: l, rhs: r, ci },
                BinOp::Ne => CExpr::Compare { op: Cmp::Ne, lhs: l, rhs: r, ci },
                BinOp::Lt => CExpr::Compare { op: Cmp::Lt, lhs: l, rhs: r, ci },
                BinOp::Le => CExpr::Compare { op: Cmp::Le, lhs: l, rhs: r, ci },
                BinOp::Gt => CExpr::Compare { op: Cmp::Gt, lhs: l, rhs: r, ci },
                BinOp::Ge => CExpr::Compare { op: Cmp::Ge, lhs: l, rhs: r, ci },
                BinOp::Contains | BinOp::NotContains => {
                    CExpr::Contains { expr: l, needle: r, ci, negate: *op == BinOp::NotContains }
                }
                BinOp::Match | BinOp::NotMatch => {
                    let CExpr::Lit(Value::Str(pattern)) = &*r else {
                        return Err(ctx.unsupported("a regular expression that is not a literal"));
                    };
                    let re = Regex::new(pattern).map_err(|err| {
                        ExecError::Invalid(format!(
                            "line {}, column {}: `{pattern}` is not a valid regular expression: \
                             {err}",
                            ctx.span.line, ctx.span.column
                        ))
                    })?;
                    CExpr::Regex { expr: l, re: Arc::new(re), negate: *op == BinOp::NotMatch }
                }
                BinOp::Incidr | BinOp::NotIncidr => {
                    let CExpr::Lit(Value::Str(list)) = &*r else {
                        return Err(
                            ctx.unsupported("`incidr` with a CIDR list that is not a literal")
                        );
                    };
                    CExpr::Incidr {
                        expr: l,
                        nets: parse_nets(list)?,
                        negate: *op == BinOp::NotIncidr,
                    }
                }
                BinOp::Incidr6 | BinOp::NotIncidr6 => return Err(ctx.unsupported("`incidr6`")),
                BinOp::Add => CExpr::Arith { op: Arith::Add, lhs: l, rhs: r },
                BinOp::Sub => CExpr::Arith { op: Arith::Sub, lhs: l, rhs: r },
                BinOp::Mul => CExpr::Arith { op: Arith::Mul, lhs: l, rhs: r },
                BinOp::Div => CExpr::Arith { op: Arith::Div, lhs: l, rhs: r },
            };
            specialise(compiled, table)
        }
        Expr::In { expr, negated, set } => {
            let inner = compile(expr, table, ctx)?;
            let values: Vec<Value> = match set {
                InSet::List(items) => {
                    let mut values = Vec::with_capacity(items.len());
                    for item in items {
                        let mut item = compile(item, table, ctx)?;
                        read_as_time(&mut item, &inner, table, ctx)?;
                        match item {
                            CExpr::Lit(v) => values.push(v),
                            _ => {
                                return Err(
                                    ctx.unsupported("`in` with a list of non-literal values")
                                );
                            }
                        }
                    }
                    values
                }
                InSet::Query(q) => {
                    let result = (ctx.run_subquery)(q)?;
                    let Some(column) = result.columns.first() else {
                        return Err(ExecError::Invalid(
                            "the subquery of `in (…)` returned no columns".into(),
                        ));
                    };
                    result.row_ids().map(|row| column.get(row)).collect()
                }
            };
            let set = values.iter().map(|v| fold_key(v, ci)).collect();
            specialise(CExpr::InSet { expr: Box::new(inner), set, ci, negate: *negated }, table)
        }
        Expr::Call { name, args } => {
            let func =
                function(name).ok_or_else(|| ctx.unsupported(format!("the function `{name}`")))?;
            let (min, max) = arity(func);
            if args.len() < min || args.len() > max {
                return Err(ExecError::Invalid(format!(
                    "line {}, column {}: `{name}` takes {}, not {}",
                    ctx.span.line,
                    ctx.span.column,
                    if min == max {
                        format!("{min} argument(s)")
                    } else {
                        format!("{min} to {max} arguments")
                    },
                    args.len()
                )));
            }
            let mut compiled = Vec::with_capacity(args.len());
            for arg in args {
                compiled.push(compile(arg, table, ctx)?);
            }
            // A part this engine does not compute is refused by name, never a column of
            // nulls that reads like an empty answer.
            if func == Func::ExtractTime
                && let Some(CExpr::Lit(part)) = compiled.get(1)
                && !TIME_PARTS.contains(&part.to_text().to_ascii_uppercase().as_str())
            {
                return Err(ctx.unsupported(format!(
                    "the extract_time part `{}` (parts: {})",
                    part.to_text(),
                    TIME_PARTS.join(", ")
                )));
            }
            CExpr::Call { func, args: compiled, now_ms: ctx.now_ms }
        }
    })
}

/// Whether an expression is known, before running, to give timestamps: a time column,
/// a time literal, `to_timestamp(…)` or `current_time()`.
fn gives_time(e: &CExpr, table: &Table) -> bool {
    match e {
        CExpr::Col(idx) => matches!(&*table.columns[*idx], Column::Time(_)),
        CExpr::Lit(value) => matches!(value, Value::Time(_)),
        CExpr::Call { func, .. } => matches!(func, Func::ToTimestamp | Func::CurrentTime),
        _ => false,
    }
}

/// Where `literal` is a string compared with (or listed against) a timestamp, reads
/// it as a time, so that `_time >= "2024-03-01 12:00:00"` compares instants rather
/// than text. A string that is not a time is an error naming it.
fn read_as_time(
    literal: &mut CExpr,
    other: &CExpr,
    table: &Table,
    ctx: &Ctx<'_>,
) -> Result<(), ExecError> {
    let CExpr::Lit(Value::Str(text)) = &*literal else { return Ok(()) };
    if !gives_time(other, table) {
        return Ok(());
    }
    let Some(ms) = parse_time_literal(text) else {
        let what = match other {
            CExpr::Col(idx) => format!("`{}`", table.names[*idx]),
            _ => "a timestamp".to_string(),
        };
        return Err(ExecError::Invalid(format!(
            "line {}, column {}: \"{text}\" is compared with {what}, but it is not a time; \
             write RFC 3339 (\"2024-03-01T12:00:00Z\") or \"2024-03-01 12:00:00\" (UTC)",
            ctx.span.line, ctx.span.column
        )));
    };
    *literal = CExpr::Lit(Value::Time(ms));
    Ok(())
}

/// Unix milliseconds of a time written as RFC 3339 (`2024-03-01T12:00:00Z`, with any
/// offset) or as `2024-03-01 12:00:00` in UTC. The second form may carry a fraction
/// of a second and a ` UTC` suffix, as the tenant prints times.
pub(super) fn parse_time_literal(text: &str) -> Option<i64> {
    let text = text.trim();
    let at = match OffsetDateTime::parse(text, &Rfc3339) {
        Ok(at) => at,
        Err(_) => {
            let bare = text.strip_suffix(" UTC").unwrap_or(text);
            let format = format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
            );
            PrimitiveDateTime::parse(bare, &format).ok()?.assume_utc()
        }
    };
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

fn unreachable_binop(ctx: &Ctx<'_>) -> Result<CExpr, ExecError> {
    Err(ExecError::Invalid(format!(
        "line {}, column {}: internal error compiling a logical operator",
        ctx.span.line, ctx.span.column
    )))
}

/// Turns a comparison of a dictionary column with literals into a lookup per
/// distinct value.
fn specialise(e: CExpr, table: &Table) -> CExpr {
    let col = match &e {
        CExpr::Compare { lhs, rhs, .. } if matches!(**rhs, CExpr::Lit(_)) => lhs.as_col(),
        CExpr::Contains { expr, needle, .. } if matches!(**needle, CExpr::Lit(_)) => expr.as_col(),
        CExpr::Regex { expr, .. } | CExpr::Incidr { expr, .. } | CExpr::InSet { expr, .. } => {
            expr.as_col()
        }
        _ => None,
    };
    let Some(col) = col else { return e };
    let Column::Dict { dict, .. } = &*table.columns[col] else { return e };
    let probe = Table::new(
        vec!["v".into()],
        vec![Arc::new(Column::Values(dict.iter().map(|s| Value::Str(s.clone())).collect()))],
    );
    let mut relocated = e;
    relocated.retarget(0);
    let mask = (0..dict.len()).map(|row| relocated.test(&probe, row)).collect();
    let null_probe =
        Table::new(vec!["v".into()], vec![Arc::new(Column::Values(vec![Value::Null]))]);
    let on_null = relocated.test(&null_probe, 0);
    CExpr::DictMask { col, mask, on_null }
}

impl CExpr {
    fn as_col(&self) -> Option<usize> {
        match self {
            CExpr::Col(idx) => Some(*idx),
            _ => None,
        }
    }

    /// Points the column reference of a specialisable predicate at `col`.
    fn retarget(&mut self, col: usize) {
        let slot = match self {
            CExpr::Compare { lhs, .. } => lhs,
            CExpr::Contains { expr, .. }
            | CExpr::Regex { expr, .. }
            | CExpr::Incidr { expr, .. }
            | CExpr::InSet { expr, .. } => expr,
            _ => return,
        };
        **slot = CExpr::Col(col);
    }

    /// Evaluates as a condition: null and non-boolean results are false.
    pub fn test(&self, t: &Table, row: usize) -> bool {
        match self {
            CExpr::DictMask { col, mask, on_null } => match &*t.columns[*col] {
                Column::Dict { codes, .. } => match codes[row] {
                    super::NULL_CODE => *on_null,
                    code => mask[code as usize],
                },
                _ => false,
            },
            CExpr::Not(inner) => !inner.test(t, row),
            CExpr::And(a, b) => a.test(t, row) && b.test(t, row),
            CExpr::Or(a, b) => a.test(t, row) || b.test(t, row),
            CExpr::Compare { op, lhs, rhs, ci } => {
                compare(*op, &lhs.eval(t, row), &rhs.eval(t, row), *ci)
            }
            CExpr::Contains { expr, needle, ci, negate } => {
                let hay = expr.eval(t, row);
                if hay.is_null() {
                    return *negate;
                }
                let (hay, needle) = (hay.to_text(), needle.eval(t, row).to_text());
                let found = if *ci {
                    hay.to_lowercase().contains(&needle.to_lowercase())
                } else {
                    hay.contains(&needle)
                };
                found != *negate
            }
            CExpr::Regex { expr, re, negate } => {
                let value = expr.eval(t, row);
                if value.is_null() {
                    return *negate;
                }
                re.is_match(&value.to_text()) != *negate
            }
            CExpr::Incidr { expr, nets, negate } => match expr.eval(t, row) {
                Value::Null => *negate,
                value => in_nets(&value, nets) != *negate,
            },
            CExpr::InSet { expr, set, ci, negate } => {
                let value = expr.eval(t, row);
                if value.is_null() {
                    return *negate;
                }
                set.contains(&fold_key(&value, *ci)) != *negate
            }
            other => other.eval(t, row).truthy(),
        }
    }

    pub fn eval(&self, t: &Table, row: usize) -> Value {
        match self {
            CExpr::Col(idx) => t.columns[*idx].get(row),
            CExpr::Lit(v) => v.clone(),
            CExpr::Arith { op, lhs, rhs } => arith(*op, &lhs.eval(t, row), &rhs.eval(t, row)),
            CExpr::Neg(inner) => match inner.eval(t, row) {
                Value::Int(v) => Value::Int(-v),
                Value::Float(v) => Value::Float(-v),
                _ => Value::Null,
            },
            CExpr::Call { func, args, now_ms } => call(*func, args, t, row, *now_ms),
            predicate => Value::Bool(predicate.test(t, row)),
        }
    }
}

fn fold_key(v: &Value, ci: bool) -> Key {
    match v {
        Value::Str(s) if ci => Key::Str(Arc::from(s.to_lowercase())),
        other => other.key(),
    }
}

fn compare(op: Cmp, a: &Value, b: &Value, ci: bool) -> bool {
    use std::cmp::Ordering;
    if a.is_null() || b.is_null() {
        let both = a.is_null() && b.is_null();
        return match op {
            Cmp::Eq => both,
            Cmp::Ne => !both,
            _ => false,
        };
    }
    let ordering = match (a, b) {
        // A time against text that was not a literal, so was not read when compiling:
        // the text is read as a time, and text that is not a time satisfies only `!=`.
        (Value::Time(t), Value::Str(s)) | (Value::Str(s), Value::Time(t)) => {
            let Some(ms) = parse_time_literal(s) else { return op == Cmp::Ne };
            if matches!(a, Value::Time(_)) { t.cmp(&ms) } else { ms.cmp(t) }
        }
        (Value::Str(x), Value::Str(y)) => {
            if ci {
                x.to_lowercase().cmp(&y.to_lowercase())
            } else {
                x.cmp(y)
            }
        }
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) if !matches!(a, Value::Str(_)) || !matches!(b, Value::Str(_)) => {
                x.partial_cmp(&y).unwrap_or(Ordering::Equal)
            }
            _ => {
                let (x, y) = (a.to_text(), b.to_text());
                if ci { x.to_lowercase().cmp(&y.to_lowercase()) } else { x.cmp(&y) }
            }
        },
    };
    match op {
        Cmp::Eq => ordering == Ordering::Equal,
        Cmp::Ne => ordering != Ordering::Equal,
        Cmp::Lt => ordering == Ordering::Less,
        Cmp::Le => ordering != Ordering::Greater,
        Cmp::Gt => ordering == Ordering::Greater,
        Cmp::Ge => ordering != Ordering::Less,
    }
}

fn arith(op: Arith, a: &Value, b: &Value) -> Value {
    if let (Value::Int(x), Value::Int(y)) = (a, b) {
        return match op {
            Arith::Add => x.checked_add(*y).map_or(Value::Null, Value::Int),
            Arith::Sub => x.checked_sub(*y).map_or(Value::Null, Value::Int),
            Arith::Mul => x.checked_mul(*y).map_or(Value::Null, Value::Int),
            Arith::Div if *y == 0 => Value::Null,
            Arith::Div => Value::Float(*x as f64 / *y as f64),
        };
    }
    let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else { return Value::Null };
    let result = match op {
        Arith::Add => x + y,
        Arith::Sub => x - y,
        Arith::Mul => x * y,
        Arith::Div if y == 0.0 => return Value::Null,
        Arith::Div => x / y,
    };
    Value::Float(result)
}

/// An IPv4 or IPv6 network.
#[derive(Clone, Copy, Debug)]
pub(super) struct Net {
    base: u128,
    mask: u128,
    v4: bool,
}

fn parse_nets(list: &str) -> Result<Vec<Net>, ExecError> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(parse_net).collect()
}

fn parse_net(text: &str) -> Result<Net, ExecError> {
    let bad = || ExecError::Invalid(format!("`{text}` is not a CIDR block such as 10.0.0.0/8"));
    let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
    let ip: IpAddr = addr.trim().parse().map_err(|_| bad())?;
    let (bits, value, v4) = match ip {
        IpAddr::V4(v4) => (32u32, u128::from(u32::from(v4)), true),
        IpAddr::V6(v6) => (128u32, u128::from(v6), false),
    };
    let prefix: u32 = if prefix.is_empty() { bits } else { prefix.parse().map_err(|_| bad())? };
    if prefix > bits {
        return Err(bad());
    }
    let host_bits = bits - prefix;
    let mask = if host_bits >= 128 { 0 } else { (!0u128 << host_bits) & (!0u128 >> (128 - bits)) };
    Ok(Net { base: value & mask, mask, v4 })
}

fn in_nets(value: &Value, nets: &[Net]) -> bool {
    let Ok(ip) = value.to_text().trim().parse::<IpAddr>() else { return false };
    let (value, v4) = match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), true),
        IpAddr::V6(v6) => (u128::from(v6), false),
    };
    nets.iter().any(|net| net.v4 == v4 && value & net.mask == net.base)
}

fn function(name: &str) -> Option<Func> {
    Some(match name {
        "lowercase" => Func::Lowercase,
        "uppercase" => Func::Uppercase,
        "len" => Func::Len,
        "trim" => Func::Trim,
        "concat" => Func::Concat,
        "replace" => Func::Replace,
        "split" => Func::Split,
        "arrayindex" => Func::ArrayIndex,
        "arraylen" => Func::ArrayLen,
        "to_string" => Func::ToString,
        "to_integer" => Func::ToInteger,
        "to_number" | "to_float" => Func::ToNumber,
        "to_epoch" => Func::ToEpoch,
        "to_timestamp" => Func::ToTimestamp,
        "extract_time" => Func::ExtractTime,
        "timestamp_diff" => Func::TimestampDiff,
        "current_time" => Func::CurrentTime,
        "if" => Func::If,
        "coalesce" => Func::Coalesce,
        "round" => Func::Round,
        "floor" => Func::Floor,
        "add" => Func::Add,
        "subtract" => Func::Subtract,
        "multiply" => Func::Multiply,
        "divide" => Func::Divide,
        "is_ipv4" => Func::IsIpv4,
        "is_ipv6" => Func::IsIpv6,
        "is_known_private_ipv4" => Func::IsKnownPrivateIpv4,
        "incidr" => Func::Incidr,
        "regextract" => Func::Regextract,
        _ => return None,
    })
}

fn arity(func: Func) -> (usize, usize) {
    match func {
        Func::CurrentTime => (0, 0),
        Func::Lowercase | Func::Uppercase | Func::Len | Func::Trim | Func::ArrayLen => (1, 1),
        Func::ToString | Func::ToInteger | Func::ToNumber | Func::Floor => (1, 1),
        Func::IsIpv4 | Func::IsIpv6 | Func::IsKnownPrivateIpv4 => (1, 1),
        Func::ToEpoch | Func::ToTimestamp | Func::Round => (1, 2),
        Func::Split => (1, 2),
        Func::ArrayIndex | Func::ExtractTime | Func::Incidr | Func::Regextract => (2, 2),
        Func::Add | Func::Subtract | Func::Multiply | Func::Divide => (2, 2),
        Func::Replace | Func::If | Func::TimestampDiff => (3, 3),
        Func::Concat | Func::Coalesce => (1, 64),
    }
}

fn unit_millis(unit: &str) -> Option<i64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "millis" | "millisecond" | "milliseconds" | "ms" => 1,
        "seconds" | "second" | "secs" | "s" => 1_000,
        "minute" | "minutes" => 60_000,
        "hour" | "hours" => 3_600_000,
        "day" | "days" => 86_400_000,
        _ => return None,
    })
}

fn call(func: Func, args: &[CExpr], t: &Table, row: usize, now_ms: i64) -> Value {
    let arg = |i: usize| args.get(i).map_or(Value::Null, |a| a.eval(t, row));
    let text = |v: Value| if v.is_null() { None } else { Some(v.to_text()) };
    match func {
        Func::Lowercase => text(arg(0)).map_or(Value::Null, |s| Value::str(&s.to_lowercase())),
        Func::Uppercase => text(arg(0)).map_or(Value::Null, |s| Value::str(&s.to_uppercase())),
        Func::Len => text(arg(0)).map_or(Value::Null, |s| Value::Int(s.chars().count() as i64)),
        Func::Trim => text(arg(0)).map_or(Value::Null, |s| Value::str(s.trim())),
        Func::Concat => {
            let mut out = String::new();
            for i in 0..args.len() {
                out.push_str(&arg(i).to_text());
            }
            Value::str(&out)
        }
        Func::Replace => match (text(arg(0)), text(arg(1)), text(arg(2))) {
            (Some(s), Some(from), Some(to)) => Value::str(&s.replace(&from, &to)),
            _ => Value::Null,
        },
        Func::Split => {
            let separator = if args.len() > 1 { arg(1).to_text() } else { ",".into() };
            match text(arg(0)) {
                Some(s) => {
                    Value::Array(Arc::new(s.split(separator.as_str()).map(Value::str).collect()))
                }
                None => Value::Null,
            }
        }
        Func::ArrayIndex => match (arg(0), arg(1).as_i64()) {
            (Value::Array(items), Some(idx)) => {
                let idx = if idx < 0 { items.len() as i64 + idx } else { idx };
                usize::try_from(idx).ok().and_then(|i| items.get(i).cloned()).unwrap_or(Value::Null)
            }
            _ => Value::Null,
        },
        Func::ArrayLen => match arg(0) {
            Value::Array(items) => Value::Int(items.len() as i64),
            _ => Value::Null,
        },
        Func::ToString => text(arg(0)).map_or(Value::Null, |s| Value::str(&s)),
        Func::ToInteger => arg(0).as_i64().map_or(Value::Null, Value::Int),
        Func::ToNumber => arg(0).as_f64().map_or(Value::Null, Value::Float),
        Func::ToEpoch => {
            let unit = if args.len() > 1 { arg(1).to_text() } else { "seconds".into() };
            match (arg(0), unit_millis(&unit)) {
                (Value::Time(ms), Some(scale)) => Value::Int(ms.div_euclid(scale)),
                _ => Value::Null,
            }
        }
        Func::ToTimestamp => {
            let unit = if args.len() > 1 { arg(1).to_text() } else { "seconds".into() };
            match (arg(0).as_i64(), unit_millis(&unit)) {
                (Some(n), Some(scale)) => n.checked_mul(scale).map_or(Value::Null, Value::Time),
                _ => Value::Null,
            }
        }
        Func::ExtractTime => match arg(0) {
            Value::Time(ms) => extract_time(ms, &arg(1).to_text()),
            _ => Value::Null,
        },
        Func::TimestampDiff => match (arg(0), arg(1), unit_millis(&arg(2).to_text())) {
            (Value::Time(a), Value::Time(b), Some(scale)) => Value::Int((a - b) / scale),
            _ => Value::Null,
        },
        Func::CurrentTime => Value::Time(now_ms),
        Func::If => {
            if args[0].test(t, row) {
                arg(1)
            } else {
                arg(2)
            }
        }
        Func::Coalesce => (0..args.len()).map(arg).find(|v| !v.is_null()).unwrap_or(Value::Null),
        Func::Round => {
            let digits = if args.len() > 1 { arg(1).as_i64().unwrap_or(0) } else { 0 };
            match arg(0).as_f64() {
                Some(x) if digits == 0 => Value::Int(x.round() as i64),
                Some(x) => {
                    let scale = 10f64.powi(digits.clamp(-15, 15) as i32);
                    Value::Float((x * scale).round() / scale)
                }
                None => Value::Null,
            }
        }
        Func::Floor => arg(0).as_f64().map_or(Value::Null, |x| Value::Int(x.floor() as i64)),
        Func::Add => arith(Arith::Add, &arg(0), &arg(1)),
        Func::Subtract => arith(Arith::Sub, &arg(0), &arg(1)),
        Func::Multiply => arith(Arith::Mul, &arg(0), &arg(1)),
        Func::Divide => arith(Arith::Div, &arg(0), &arg(1)),
        Func::IsIpv4 => Value::Bool(arg(0).to_text().parse::<std::net::Ipv4Addr>().is_ok()),
        Func::IsIpv6 => Value::Bool(arg(0).to_text().parse::<std::net::Ipv6Addr>().is_ok()),
        Func::IsKnownPrivateIpv4 => Value::Bool(
            arg(0).to_text().parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_private()),
        ),
        Func::Incidr => match parse_nets(&arg(1).to_text()) {
            Ok(nets) => Value::Bool(in_nets(&arg(0), &nets)),
            Err(_) => Value::Null,
        },
        Func::Regextract => match (text(arg(0)), Regex::new(&arg(1).to_text())) {
            (Some(s), Ok(re)) => {
                let found = re
                    .captures_iter(&s)
                    .filter_map(|c| c.get(1).or_else(|| c.get(0)))
                    .map(|m| Value::str(m.as_str()))
                    .collect();
                Value::Array(Arc::new(found))
            }
            _ => Value::Null,
        },
    }
}

/// The parts `extract_time` computes.
const TIME_PARTS: [&str; 8] =
    ["SECOND", "MINUTE", "HOUR", "DAY", "DAYOFWEEK", "DAYOFYEAR", "MONTH", "YEAR"];

/// `extract_time(ts, part)` in UTC; the day of the week counts from 1 on Sunday.
fn extract_time(ms: i64, part: &str) -> Value {
    let Ok(at) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return Value::Null;
    };
    let value = match part.to_ascii_uppercase().as_str() {
        "SECOND" => i64::from(at.second()),
        "MINUTE" => i64::from(at.minute()),
        "HOUR" => i64::from(at.hour()),
        "DAY" => i64::from(at.day()),
        "DAYOFWEEK" => i64::from(at.weekday().number_from_sunday()),
        "DAYOFYEAR" => i64::from(at.ordinal()),
        "MONTH" => i64::from(u8::from(at.month())),
        "YEAR" => i64::from(at.year()),
        _ => return Value::Null,
    };
    Value::Int(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_match_their_members_only() {
        let nets = parse_nets("10.0.0.0/8, 192.168.1.0/24").unwrap();
        assert!(in_nets(&Value::str("10.20.1.17"), &nets));
        assert!(in_nets(&Value::str("192.168.1.255"), &nets));
        assert!(!in_nets(&Value::str("192.168.2.1"), &nets));
        assert!(!in_nets(&Value::str("not an address"), &nets));
        assert!(parse_nets("10.0.0.0/33").is_err());
    }

    #[test]
    fn comparisons_follow_xql_null_and_case_rules() {
        assert!(compare(Cmp::Eq, &Value::str("STORY"), &Value::str("story"), true));
        assert!(!compare(Cmp::Eq, &Value::str("STORY"), &Value::str("story"), false));
        assert!(compare(Cmp::Eq, &Value::Null, &Value::Null, true));
        assert!(compare(Cmp::Ne, &Value::Int(1), &Value::Null, true));
        assert!(!compare(Cmp::Lt, &Value::Null, &Value::Int(1), true));
        assert!(compare(Cmp::Gt, &Value::Int(443), &Value::Float(80.5), true));
    }

    #[test]
    fn times_compare_with_text_as_times() {
        // 2024-03-01T12:00:00Z
        let noon = 1_709_294_400_000;
        for text in [
            "2024-03-01T12:00:00Z",
            "2024-03-01T13:00:00+01:00",
            "2024-03-01 12:00:00",
            "2024-03-01 12:00:00.000 UTC",
        ] {
            assert_eq!(parse_time_literal(text), Some(noon), "{text}");
        }
        assert_eq!(parse_time_literal("2024-03-01 12:00:00.25"), Some(noon + 250));
        for text in ["2024-03-01", "2024-03-01 25:00:00", "noon", "1709294400000"] {
            assert_eq!(parse_time_literal(text), None, "{text}");
        }

        let morning = Value::Time(noon - 3 * 3_600_000);
        assert!(compare(Cmp::Lt, &morning, &Value::str("2024-03-01 12:00:00"), true));
        assert!(compare(Cmp::Gt, &Value::str("2024-03-01 12:00:00"), &morning, true));
        assert!(!compare(Cmp::Eq, &morning, &Value::str("not a time"), true));
        assert!(!compare(Cmp::Lt, &morning, &Value::str("not a time"), true));
        assert!(compare(Cmp::Ne, &morning, &Value::str("not a time"), true));
    }

    #[test]
    fn extracts_the_hour_of_a_time() {
        // 2026-03-09T02:30:00Z
        assert_eq!(extract_time(1_773_023_400_000, "HOUR"), Value::Int(2));
        assert_eq!(extract_time(1_773_023_400_000, "dayofweek"), Value::Int(2));
    }
}
