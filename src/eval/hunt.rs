//! The `hunt` suite: a hunter's question → XQL, scored on a ladder.
//!
//! 1. `parses`: the query parses.
//! 2. `schema_valid`: it is read-only and every dataset and field is in the tenant's
//!    schema.
//! 3. `dataset_f1`, `field_f1`, `filter_f1`: overlap with the reference query's
//!    datasets, the fields it names, and its filter conditions (`field op literal`).
//! 4. `execution_match`: on the replay data it returns the same values in the key
//!    columns as the reference (as a set, or in order when the question asks for a
//!    ranking).
//!
//! A question no honest query can answer expects a refusal: `refusal_recall` is the
//! share of those refused, `false_refusal` the share of answerable ones refused.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::tenant::EvalTenant;
use super::{CaseRun, Scored, f1};
use crate::agent::hunt::{Translation, translate};
use crate::agent::llm::Llm;
use crate::agent::planner;
use crate::xdr::{Row, Xdr, XqlRequest};
use crate::xql::ast::{BinOp, Expr, InSet, Query, StageKind, UnionSource};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuntCase {
    pub id: String,
    /// `easy`, `medium` or `hard`.
    pub difficulty: String,
    /// Paraphrases of one question share an intent.
    #[serde(default)]
    pub intent: Option<String>,
    pub question: String,
    /// The reference query; absent when the right answer is a refusal.
    #[serde(default)]
    pub xql: Option<String>,
    /// Output columns whose values identify the answer rows.
    #[serde(default)]
    pub key: Vec<String>,
    /// The question asks for an order (a ranking): key values compare in order.
    #[serde(default)]
    pub ordered: bool,
    /// No honest query answers it.
    #[serde(default)]
    pub refuse: bool,
    /// Why it cannot be answered.
    #[serde(default)]
    pub why: Option<String>,
}

/// What a translator made of a question.
enum Answer {
    Query(String),
    Refused(String),
    /// The model's query was never valid, or the endpoint failed.
    Failed(String),
}

async fn answer(question: &str, llm: Option<&Llm>) -> Answer {
    match llm {
        None => match planner::plan(question) {
            Ok(plan) => Answer::Query(plan.xql),
            Err(why) => Answer::Refused(why),
        },
        Some(llm) => match translate(llm, question, None).await {
            Translation::Query { xql, .. } => Answer::Query(xql),
            Translation::Declined(why) => Answer::Refused(why),
            Translation::Failed(why) => Answer::Failed(why),
        },
    }
}

/// The datasets, field names and filter conditions a query uses, subqueries included.
#[derive(Debug, Default, PartialEq)]
pub struct Shape {
    pub datasets: BTreeSet<String>,
    pub fields: BTreeSet<String>,
    pub filters: BTreeSet<String>,
}

pub fn shape(query: &Query) -> Shape {
    let mut shape = Shape::default();
    walk_query(query, &mut shape);
    shape
}

fn walk_query(query: &Query, shape: &mut Shape) {
    for stage in &query.stages {
        match &stage.kind {
            StageKind::Source(source) => {
                shape.datasets.extend(source.names.iter().map(|n| n.text.to_ascii_lowercase()));
            }
            StageKind::Filter(expr) => {
                conditions(expr, shape);
                walk_expr(expr, shape);
            }
            StageKind::Join { query, on, .. } => {
                walk_query(query, shape);
                walk_expr(on, shape);
            }
            StageKind::Union(UnionSource::Query(query)) => walk_query(query, shape),
            StageKind::Union(UnionSource::Dataset(name)) => {
                shape.datasets.insert(name.text.to_ascii_lowercase());
            }
            StageKind::Alter(assigns) => assigns.iter().for_each(|a| walk_expr(&a.value, shape)),
            StageKind::Comp { aggregates, by, .. } => {
                aggregates.iter().for_each(|a| walk_expr(&a.call, shape));
                by.iter().for_each(|e| walk_expr(e, shape));
            }
            StageKind::Fields { items, .. } => items.iter().for_each(|i| walk_expr(&i.expr, shape)),
            StageKind::Dedup { fields, .. } => fields.iter().for_each(|e| walk_expr(e, shape)),
            StageKind::Top { fields, by, .. } => {
                fields.iter().chain(by).for_each(|e| walk_expr(e, shape));
            }
            _ => {}
        }
    }
}

fn walk_expr(expr: &Expr, shape: &mut Shape) {
    match expr {
        Expr::Field(name) => {
            shape.fields.insert(name.text.to_ascii_lowercase());
        }
        Expr::Call { args, .. } => args.iter().for_each(|a| walk_expr(a, shape)),
        Expr::Unary { expr, .. } | Expr::JsonPath { expr, .. } => walk_expr(expr, shape),
        Expr::Binary { lhs, rhs, .. } => {
            walk_expr(lhs, shape);
            walk_expr(rhs, shape);
        }
        Expr::In { expr, set, .. } => {
            walk_expr(expr, shape);
            match set {
                InSet::List(items) => items.iter().for_each(|i| walk_expr(i, shape)),
                InSet::Query(query) => walk_query(query, shape),
            }
        }
        _ => {}
    }
}

fn literal(expr: &Expr) -> Option<String> {
    Some(match expr {
        Expr::Str(s) => format!("{:?}", s.to_ascii_lowercase()),
        Expr::Int(i) => i.to_string(),
        Expr::Float(f) => f.to_string(),
        Expr::Bool(b) => b.to_string(),
        Expr::Null => "null".into(),
        Expr::Enum(e) => e.to_ascii_lowercase(),
        _ => return None,
    })
}

/// The `field op literal` conditions of a filter, through `and` and `or`.
fn conditions(expr: &Expr, shape: &mut Shape) {
    match expr {
        Expr::Binary { op: BinOp::And | BinOp::Or, lhs, rhs } => {
            conditions(lhs, shape);
            conditions(rhs, shape);
        }
        Expr::Binary { op, lhs, rhs } => {
            if let (Some(field), Some(value)) = (lhs.as_field(), literal(rhs)) {
                shape.filters.insert(format!(
                    "{} {} {value}",
                    field.text.to_ascii_lowercase(),
                    op.symbol()
                ));
            }
        }
        Expr::In { expr, negated, set: InSet::List(items) } => {
            if let Some(field) = expr.as_field() {
                let mut values: Vec<String> = items.iter().filter_map(literal).collect();
                values.sort();
                let op = if *negated { "not in" } else { "in" };
                shape.filters.insert(format!(
                    "{} {op} ({})",
                    field.text.to_ascii_lowercase(),
                    values.join(", ")
                ));
            }
        }
        Expr::In { expr, negated, set: InSet::Query(_) } => {
            if let Some(field) = expr.as_field() {
                let op = if *negated { "not in" } else { "in" };
                shape
                    .filters
                    .insert(format!("{} {op} (subquery)", field.text.to_ascii_lowercase()));
            }
        }
        Expr::Unary { expr, .. } => conditions(expr, shape),
        _ => {}
    }
}

/// The key columns' values of each row, or `None` when a row lacks one.
fn keys(rows: &[Row], key: &[String]) -> Option<Vec<String>> {
    rows.iter()
        .map(|row| {
            key.iter()
                .map(|k| row.get(k).map(Value::to_string))
                .collect::<Option<Vec<String>>>()
                .map(|v| v.join("|"))
        })
        .collect()
}

fn same_answer(got: &[String], want: &[String], ordered: bool) -> bool {
    if ordered {
        got == want
    } else {
        got.iter().collect::<BTreeSet<_>>() == want.iter().collect::<BTreeSet<_>>()
    }
}

/// Runs the suite once.
pub async fn run(cases: &[HuntCase], tenant: &EvalTenant, llm: Option<&Llm>) -> Vec<Scored> {
    let schema = tenant.replay.schema().clone();
    let options =
        crate::xql::ValidationOptions { schema: Some(&schema), ..planner::hunt_validation() };
    let mut out = Vec::new();
    for case in cases {
        let answer = answer(&case.question, llm).await;
        let mut metrics = std::collections::BTreeMap::new();
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let refused = matches!(answer, Answer::Refused(_));
        let (output, pass, score) = if case.refuse {
            metrics.insert("refusal_recall".into(), flag(refused));
            let output = match &answer {
                Answer::Query(xql) => json!({"xql": xql}),
                Answer::Refused(why) => json!({"refused": why}),
                Answer::Failed(why) => json!({"failed": why}),
            };
            (output, refused, flag(refused))
        } else {
            metrics.insert("false_refusal".into(), flag(refused));
            let reference = case.xql.clone().unwrap_or_default();
            let text = match &answer {
                Answer::Query(xql) => Some(xql.clone()),
                _ => None,
            };
            let parsed = text.as_deref().map(|t| crate::xql::validate::check(t, &options));
            let parses = parsed.as_ref().is_some_and(|(q, _)| q.is_some());
            let valid = parsed.as_ref().is_some_and(|(_, v)| v.valid && v.read_only);
            let (ref_query, _) = crate::xql::validate::check(&reference, &options);
            let want = ref_query.as_ref().map(shape).unwrap_or_default();
            let got = parsed.as_ref().and_then(|(q, _)| q.as_ref()).map(shape).unwrap_or_default();
            let (ds, fl, fi) = if parses {
                (
                    f1(&got.datasets, &want.datasets),
                    f1(&got.fields, &want.fields),
                    f1(&got.filters, &want.filters),
                )
            } else {
                (0.0, 0.0, 0.0)
            };
            let mut matched = false;
            let mut rows = None;
            if valid && let Some(text) = &text {
                let reference_rows =
                    tenant.replay.run_xql(&XqlRequest::new(reference.clone())).await;
                let answer_rows = tenant.replay.run_xql(&XqlRequest::new(text.clone())).await;
                if let (Ok(want_rows), Ok(got_rows)) = (reference_rows, answer_rows) {
                    rows = Some(got_rows.rows.len());
                    if let (Some(w), Some(g)) =
                        (keys(&want_rows.rows, &case.key), keys(&got_rows.rows, &case.key))
                    {
                        matched = same_answer(&g, &w, case.ordered);
                    }
                }
            }
            metrics.insert("parses".into(), flag(parses));
            metrics.insert("schema_valid".into(), flag(valid));
            metrics.insert("dataset_f1".into(), ds);
            metrics.insert("field_f1".into(), fl);
            metrics.insert("filter_f1".into(), fi);
            metrics.insert("execution_match".into(), flag(matched));
            let score = (flag(parses) + flag(valid) + (ds + fl + fi) / 3.0 + flag(matched)) / 4.0;
            let output = match &answer {
                Answer::Query(xql) => json!({"xql": xql, "rows": rows}),
                Answer::Refused(why) => json!({"refused": why}),
                Answer::Failed(why) => json!({"failed": why}),
            };
            (output, matched, score)
        };
        out.push(Scored {
            id: case.id.clone(),
            group: Some(if case.refuse { "refusal".to_string() } else { case.difficulty.clone() }),
            input: case.question.clone(),
            expected: match &case.xql {
                Some(xql) => json!({"xql": xql, "key": case.key}),
                None => json!({"refuse": case.why}),
            },
            run: CaseRun { pass, score, metrics, output },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_shape_has_its_datasets_fields_and_conditions() {
        let q = crate::xql::parse(
            "config timeframe = 24h | dataset = xdr_data | filter action_remote_port = 22 and \
             action_local_ip in (dataset = asset_inventory | filter xdm.asset.type.name = \"IP Camera\" \
             | fields xdm.asset.ipv4_addresses) | comp count() as n by action_local_ip",
        )
        .unwrap();
        let s = shape(&q);
        assert_eq!(
            s.datasets,
            BTreeSet::from(["xdr_data".to_string(), "asset_inventory".to_string()])
        );
        assert!(
            s.fields.contains("action_remote_port") && s.fields.contains("xdm.asset.type.name")
        );
        assert!(s.filters.contains("action_remote_port = 22"));
        assert!(s.filters.contains("action_local_ip in (subquery)"));
        assert!(s.filters.contains("xdm.asset.type.name = \"ip camera\""));
    }

    #[test]
    fn answers_compare_as_sets_unless_ordered() {
        let a = vec!["x".to_string(), "y".to_string()];
        let b = vec!["y".to_string(), "x".to_string()];
        assert!(same_answer(&a, &b, false));
        assert!(!same_answer(&a, &b, true));
    }
}
