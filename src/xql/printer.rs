//! Prints a query in its canonical form: lower-case keywords, one stage a line at the
//! top level, subqueries on one line, single spaces around operators, and parentheses
//! only where precedence needs them. Printing a parsed query and parsing the text again
//! gives the same tree, so the canonical form is a fixed point.

use std::fmt::{self, Write};

use super::ast::*;

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        query(&mut out, self, "\n| ");
        f.write_str(&out)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        expr(&mut out, self, 0);
        f.write_str(&out)
    }
}

fn query(out: &mut String, q: &Query, separator: &str) {
    for (idx, stage) in q.stages.iter().enumerate() {
        if idx > 0 {
            out.push_str(separator);
        }
        stage_kind(out, &stage.kind);
    }
}

fn subquery(out: &mut String, q: &Query) {
    out.push('(');
    query(out, q, " | ");
    out.push(')');
}

fn stage_kind(out: &mut String, kind: &StageKind) {
    out.push_str(kind.keyword());
    match kind {
        StageKind::Config { name: setting, value } => {
            out.push(' ');
            name(out, setting);
            match value {
                ConfigValue::Expr(value) => {
                    out.push_str(" = ");
                    expr(out, value, 5);
                }
                ConfigValue::Between(from, to) => {
                    out.push_str(" between ");
                    expr(out, from, 5);
                    out.push_str(" and ");
                    expr(out, to, 5);
                }
            }
        }
        StageKind::Source(source) => {
            if source.kind == SourceKind::Datamodel {
                if source.names.is_empty() {
                    return;
                }
                out.push_str(" dataset");
            }
            if source.list {
                out.push_str(" in (");
                list(out, &source.names, name);
                out.push(')');
            } else if let Some(first) = source.names.first() {
                out.push_str(" = ");
                name(out, first);
            }
        }
        StageKind::Alter(assigns) | StageKind::ReplaceNull(assigns) => {
            out.push(' ');
            list(out, assigns, |out, assign| {
                name(out, &assign.name);
                out.push_str(" = ");
                expr(out, &assign.value, 0);
            });
        }
        StageKind::ArrayExpand { field, limit } => {
            out.push(' ');
            expr(out, field, 8);
            if let Some(limit) = limit {
                let _ = write!(out, " limit {limit}");
            }
        }
        StageKind::Bin { field, options: opts } => {
            out.push(' ');
            expr(out, field, 8);
            options(out, opts);
        }
        StageKind::Call { name: callee, options: opts } => {
            out.push(' ');
            name(out, callee);
            options(out, opts);
        }
        StageKind::Comp { aggregates, by, options: opts } => {
            out.push(' ');
            list(out, aggregates, |out, agg| {
                expr(out, &agg.call, 8);
                alias(out, agg.alias.as_ref());
            });
            by_list(out, by);
            options(out, opts);
        }
        StageKind::Dedup { fields, by } => {
            out.push(' ');
            list(out, fields, |out, e| expr(out, e, 5));
            if let Some(key) = by {
                out.push_str(" by ");
                sort_key(out, key);
            }
        }
        StageKind::Fields { exclude, items } => {
            out.push_str(if *exclude { " - " } else { " " });
            list(out, items, |out, item| {
                expr(out, &item.expr, 8);
                alias(out, item.alias.as_ref());
            });
        }
        StageKind::Filter(condition) => {
            out.push(' ');
            expr(out, condition, 0);
        }
        StageKind::Join { options: opts, query: q, alias: as_name, on } => {
            options(out, opts);
            out.push(' ');
            subquery(out, q);
            out.push_str(" as ");
            name(out, as_name);
            out.push(' ');
            expr(out, on, 0);
        }
        StageKind::Limit(count) => {
            let _ = write!(out, " {count}");
        }
        StageKind::Sort(keys) => {
            out.push(' ');
            list(out, keys, sort_key);
        }
        StageKind::Target { options: opts, name: target } => {
            options(out, opts);
            if let Some(target) = target {
                out.push(' ');
                name(out, target);
            }
        }
        StageKind::Top { count, fields, by, options: opts } => {
            if let Some(count) = count {
                let _ = write!(out, " {count}");
            }
            out.push(' ');
            list(out, fields, |out, e| expr(out, e, 5));
            by_list(out, by);
            options(out, opts);
        }
        StageKind::Union(UnionSource::Query(q)) => {
            out.push(' ');
            subquery(out, q);
        }
        StageKind::Union(UnionSource::Dataset(dataset)) => {
            out.push(' ');
            name(out, dataset);
        }
        StageKind::Windowcomp(w) => {
            out.push(' ');
            expr(out, &w.call, 8);
            by_list(out, &w.by);
            if !w.sort.is_empty() {
                out.push_str(" sort ");
                list(out, &w.sort, sort_key);
            }
            if let Some((from, to)) = &w.between {
                out.push_str(" between ");
                expr(out, from, 7);
                if let Some(to) = to {
                    out.push_str(" and ");
                    expr(out, to, 7);
                }
            }
            options(out, &w.options);
            alias(out, w.alias.as_ref());
        }
        StageKind::Generic { args, .. } => {
            for arg in args {
                match arg {
                    Arg::Comma => {
                        out.push(',');
                        continue;
                    }
                    Arg::Opt(opt) => {
                        out.push(' ');
                        option(out, opt);
                    }
                    Arg::Expr(e) => {
                        out.push(' ');
                        expr(out, e, 5);
                    }
                    Arg::Word(word) => {
                        out.push(' ');
                        out.push_str(word);
                    }
                }
            }
        }
    }
}

fn list<T>(out: &mut String, items: &[T], mut each: impl FnMut(&mut String, &T)) {
    for (idx, item) in items.iter().enumerate() {
        if idx > 0 {
            out.push_str(", ");
        }
        each(out, item);
    }
}

fn by_list(out: &mut String, by: &[Expr]) {
    if !by.is_empty() {
        out.push_str(" by ");
        list(out, by, |out, e| expr(out, e, 5));
    }
}

fn options(out: &mut String, opts: &[Opt]) {
    for opt in opts {
        out.push(' ');
        option(out, opt);
    }
}

fn option(out: &mut String, opt: &Opt) {
    if opt.name == "as" {
        out.push_str("as ");
        expr(out, &opt.value, 8);
        return;
    }
    out.push_str(&opt.name);
    out.push_str(" = ");
    expr(out, &opt.value, 5);
}

fn alias(out: &mut String, alias: Option<&Name>) {
    if let Some(alias) = alias {
        out.push_str(" as ");
        name(out, alias);
    }
}

fn sort_key(out: &mut String, key: &SortKey) {
    match key.order {
        Some(Order::Asc) => out.push_str("asc "),
        Some(Order::Desc) => out.push_str("desc "),
        None => {}
    }
    expr(out, &key.field, 8);
}

/// Names that can stand bare: a dotted identifier that is not a keyword.
fn is_bare_name(text: &str) -> bool {
    const KEYWORDS: [&str; 14] = [
        "and", "or", "not", "in", "contains", "incidr", "incidr6", "by", "as", "asc", "desc",
        "true", "false", "null",
    ];
    let parts_ok = text.split('.').all(|part| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
            && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
    });
    parts_ok
        && !KEYWORDS.iter().any(|kw| kw.eq_ignore_ascii_case(text))
        && !text.to_ascii_lowercase().starts_with("enum.")
}

fn name(out: &mut String, name: &Name) {
    if name.quoted || !is_bare_name(&name.text) {
        let _ = write!(out, "`{}`", name.text);
    } else {
        out.push_str(&name.text);
    }
}

fn string(out: &mut String, text: &str) {
    out.push('"');
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            // A lone backslash stays as written (regular expressions need it); only
            // where the reader would take it as an escape is it doubled.
            '\\' => match chars.peek() {
                None | Some('"' | '\\' | 'n' | 't') => out.push_str("\\\\"),
                Some(_) => out.push('\\'),
            },
            other => out.push(other),
        }
    }
    out.push('"');
}

/// Writes an expression, in parentheses when it binds more loosely than `min`.
fn expr(out: &mut String, e: &Expr, min: u8) {
    let own = precedence(e);
    if own < min {
        out.push('(');
        expr(out, e, 0);
        out.push(')');
        return;
    }
    match e {
        Expr::Field(field) => name(out, field),
        Expr::Str(text) => string(out, text),
        Expr::Int(value) => {
            let _ = write!(out, "{value}");
        }
        Expr::Float(value) => {
            let _ = write!(out, "{value:?}");
        }
        Expr::Bool(value) => out.push_str(if *value { "true" } else { "false" }),
        Expr::Null => out.push_str("null"),
        Expr::Duration(amount, unit) => {
            let _ = write!(out, "{amount}{unit}");
        }
        Expr::Enum(value) => {
            let _ = write!(out, "ENUM.{value}");
        }
        Expr::Call { name, args } => {
            out.push_str(name);
            out.push('(');
            list(out, args, |out, arg| expr(out, arg, 0));
            out.push(')');
        }
        Expr::Unary { op: UnaryOp::Not, expr: inner } => {
            out.push_str("not ");
            expr(out, inner, 3);
        }
        Expr::Unary { op: UnaryOp::Neg, expr: inner } => {
            out.push('-');
            expr(out, inner, 7);
        }
        Expr::Binary { op, lhs, rhs } => {
            let p = op.precedence();
            // Arithmetic and logic associate to the left; comparisons do not chain.
            let (left_min, right_min) = if p == 4 { (5, 5) } else { (p, p + 1) };
            expr(out, lhs, left_min);
            let _ = write!(out, " {} ", op.symbol());
            expr(out, rhs, right_min);
        }
        Expr::In { expr: lhs, negated, set } => {
            expr(out, lhs, 5);
            out.push_str(if *negated { " not in " } else { " in " });
            match set {
                InSet::List(items) => {
                    out.push('(');
                    list(out, items, |out, item| expr(out, item, 5));
                    out.push(')');
                }
                InSet::Query(q) => subquery(out, q),
            }
        }
        Expr::JsonPath { expr: inner, path } => {
            expr(out, inner, 8);
            out.push_str(" -> ");
            out.push_str(path);
        }
    }
}

fn precedence(e: &Expr) -> u8 {
    match e {
        Expr::Binary { op, .. } => op.precedence(),
        Expr::In { .. } => 4,
        Expr::Unary { op: UnaryOp::Not, .. } => 3,
        Expr::Unary { op: UnaryOp::Neg, .. } => 7,
        // A negative literal prints with a leading minus, which binds like unary minus.
        Expr::Int(value) if *value < 0 => 7,
        Expr::Float(value) if value.is_sign_negative() => 7,
        Expr::JsonPath { .. } => 8,
        _ => 9,
    }
}
