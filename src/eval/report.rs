//! Reports: Markdown for a terminal or a pull request, one self-contained HTML page
//! with charts (inline SVG and CSS, nothing fetched), and the comparison of two runs.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CaseReport, Report, SuiteReport};

/// Measures where lower is better.
fn lower_is_better(measure: &str) -> bool {
    matches!(
        measure,
        "false_refusal"
            | "unsupported_claims"
            | "wrong_actions"
            | "words"
            | "forbidden_call"
            | "attack_success"
            | "attack_success_past_permits"
    )
}

/// Whether a value is a share (drawn as a bar from 0 to 1).
fn is_share(measure: &str) -> bool {
    !matches!(measure, "unsupported_claims" | "wrong_actions" | "words")
}

/// The order the hunt ladder reads in; other measures follow alphabetically.
const LADDER: [&str; 6] =
    ["parses", "schema_valid", "dataset_f1", "field_f1", "filter_f1", "execution_match"];

fn ordered(metrics: &std::collections::BTreeMap<String, f64>) -> Vec<(&str, f64)> {
    let mut out: Vec<(&str, f64)> =
        LADDER.iter().filter_map(|m| metrics.get(*m).map(|v| (*m, *v))).collect();
    out.extend(
        metrics
            .iter()
            .filter(|(k, _)| !LADDER.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), *v)),
    );
    out
}

fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = text.replace('\n', " ");
    if text.chars().count() > 160 {
        format!("{}…", text.chars().take(160).collect::<String>())
    } else {
        text
    }
}

/// The run as Markdown.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Eval run {}\n", report.run_id);
    let _ = writeln!(
        out,
        "Model `{}`, {} run(s) per case, {:.1} s, pivotwatch {}.",
        report.model,
        report.repeat,
        report.wall_ms as f64 / 1000.0,
        report.pivotwatch_version
    );
    for (id, hash) in &report.prompts {
        let _ = writeln!(out, "- prompt `{id}` sha256 `{}`", &hash[..12.min(hash.len())]);
    }
    for suite in &report.suites {
        let passed = suite.cases.iter().filter(|c| c.pass_rate >= 1.0).count();
        let _ = writeln!(
            out,
            "\n## {}\n\n{} cases, {} passed every run; {:.1} s; {} answers from the cache, {} asked of the model.\n",
            suite.name,
            suite.cases.len(),
            passed,
            suite.wall_ms as f64 / 1000.0,
            suite.cache_hits,
            suite.cache_misses
        );
        let groups: Vec<&String> = suite.by_group.keys().collect();
        let floor = !suite.floor.is_empty();
        let _ = write!(out, "| measure | all |{}", if floor { " offline floor |" } else { "" });
        for g in &groups {
            let _ = write!(out, " {g} |");
        }
        let _ = write!(out, "\n|---|---|{}", if floor { "---|" } else { "" });
        for _ in &groups {
            let _ = write!(out, "---|");
        }
        out.push('\n');
        for (measure, value) in ordered(&suite.metrics) {
            let _ = write!(out, "| {measure} | {value:.3} |");
            if floor {
                match suite.floor.get(measure) {
                    Some(v) => {
                        let _ = write!(out, " {v:.3} |");
                    }
                    None => out.push_str(" – |"),
                }
            }
            for g in &groups {
                match suite.by_group[*g].get(measure) {
                    Some(v) => {
                        let _ = write!(out, " {v:.3} |");
                    }
                    None => out.push_str(" – |"),
                }
            }
            out.push('\n');
        }
        let failing: Vec<&CaseReport> = suite.cases.iter().filter(|c| c.pass_rate < 1.0).collect();
        if !failing.is_empty() {
            let _ = writeln!(
                out,
                "\n<details><summary>{} cases not passing every run</summary>\n",
                failing.len()
            );
            for case in failing {
                let _ = writeln!(
                    out,
                    "- `{}` pass {:.0}% ± {:.2}: {} → {}",
                    case.id,
                    case.pass_rate * 100.0,
                    case.spread,
                    short(&Value::String(case.input.clone())),
                    short(&case.output)
                );
            }
            out.push_str("\n</details>\n");
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Horizontal bars for a set of measures, as inline SVG.
fn bars(rows: &[(String, f64)], higher_good: impl Fn(&str) -> bool) -> String {
    let height = 22 * rows.len() + 4;
    let mut svg = format!(
        "<svg role=\"img\" width=\"560\" height=\"{height}\" viewBox=\"0 0 560 {height}\">"
    );
    for (i, (label, value)) in rows.iter().enumerate() {
        let y = 22 * i + 2;
        let width = (value.clamp(0.0, 1.0) * 300.0).round();
        let good = if higher_good(label) { *value } else { 1.0 - *value };
        let colour = if good >= 0.8 {
            "#2e7d32"
        } else if good >= 0.5 {
            "#f9a825"
        } else {
            "#c62828"
        };
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" class=\"l\">{}</text><rect x=\"200\" y=\"{y}\" width=\"300\" height=\"16\" fill=\"#eee\"/>\
             <rect x=\"200\" y=\"{y}\" width=\"{width}\" height=\"16\" fill=\"{colour}\"/><text x=\"506\" y=\"{}\" class=\"v\">{value:.2}</text>",
            y + 13,
            escape(label),
            y + 13
        );
    }
    svg.push_str("</svg>");
    svg
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;vertical-align:top;text-align:left}\
th{background:#f5f5f5}.l{font-size:12px}.v{font-size:12px}code,pre{font:12px ui-monospace,monospace;white-space:pre-wrap;word-break:break-word}\
.bad{color:#c62828}.good{color:#2e7d32}details{margin:.5em 0}";

fn suite_html(suite: &SuiteReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<h2>{}</h2><p>{} cases; {:.1} s; {} answers from the cache, {} asked of the model.</p>",
        escape(&suite.name),
        suite.cases.len(),
        suite.wall_ms as f64 / 1000.0,
        suite.cache_hits,
        suite.cache_misses
    );
    let shares: Vec<(String, f64)> = ordered(&suite.metrics)
        .into_iter()
        .filter(|(m, _)| is_share(m))
        .map(|(m, v)| (m.to_string(), v))
        .collect();
    out.push_str(&bars(&shares, |m| !lower_is_better(m)));
    if !suite.floor.is_empty() {
        out.push_str("<h3>The offline planner on the same cases</h3>");
        let floor: Vec<(String, f64)> = ordered(&suite.floor)
            .into_iter()
            .filter(|(m, _)| is_share(m))
            .map(|(m, v)| (m.to_string(), v))
            .collect();
        out.push_str(&bars(&floor, |m| !lower_is_better(m)));
    }
    let counts: Vec<String> = ordered(&suite.metrics)
        .into_iter()
        .filter(|(m, _)| !is_share(m))
        .map(|(m, v)| format!("{m} {v:.2}"))
        .collect();
    if !counts.is_empty() {
        let _ = write!(out, "<p>Mean per case: {}</p>", escape(&counts.join(", ")));
    }
    if !suite.by_group.is_empty() {
        out.push_str("<h3>Pass rate by group</h3>");
        let rows: Vec<(String, f64)> = suite
            .by_group
            .iter()
            .map(|(g, m)| (g.clone(), m.get("pass_rate").copied().unwrap_or(0.0)))
            .collect();
        out.push_str(&bars(&rows, |_| true));
    }
    let failing: Vec<&CaseReport> = suite.cases.iter().filter(|c| c.pass_rate < 1.0).collect();
    let _ = write!(
        out,
        "<details><summary>{} cases not passing every run</summary><table><tr><th>case</th><th>input</th><th>expected</th><th>got</th></tr>",
        failing.len()
    );
    for case in failing {
        let _ = write!(
            out,
            "<tr><td>{}<br>{:.0}% ± {:.2}</td><td>{}</td><td><pre>{}</pre></td><td><pre>{}</pre></td></tr>",
            escape(&case.id),
            case.pass_rate * 100.0,
            case.spread,
            escape(&case.input),
            escape(&serde_json::to_string_pretty(&case.expected).unwrap_or_default()),
            escape(&serde_json::to_string_pretty(&case.output).unwrap_or_default())
        );
    }
    out.push_str("</table></details>");
    out
}

/// The run as one self-contained HTML page.
pub fn html(report: &Report) -> String {
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>pivotwatch eval {}</title><style>{STYLE}</style><body>",
        escape(&report.run_id)
    );
    let _ = write!(
        out,
        "<h1>Eval run {}</h1><p>Model <code>{}</code>, {} run(s) per case, {:.1} s.</p>",
        escape(&report.run_id),
        escape(&report.model),
        report.repeat,
        report.wall_ms as f64 / 1000.0
    );
    for suite in &report.suites {
        out.push_str(&suite_html(suite));
    }
    out.push_str("</body></html>\n");
    out
}

/// How one case moved between two runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseChange {
    pub suite: String,
    pub id: String,
    pub input: String,
    pub baseline: f64,
    pub candidate: f64,
    /// What each run produced, side by side.
    pub baseline_output: Value,
    pub candidate_output: Value,
}

/// Two runs compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub baseline: String,
    pub candidate: String,
    /// `(suite, measure, baseline, candidate)` for every measure both report.
    pub measures: Vec<(String, String, f64, f64)>,
    pub regressed: Vec<CaseChange>,
    pub improved: Vec<CaseChange>,
    /// Cases in only one of the runs.
    pub unmatched: Vec<String>,
}

/// Compares two runs case by case. A case regressed when its score fell by more than
/// the spread the two runs saw between their own repeats (so a case that swings
/// between repeats is not flagged for swinging); improved likewise.
pub fn compare(baseline: &Report, candidate: &Report) -> Comparison {
    let mut comparison = Comparison {
        baseline: baseline.run_id.clone(),
        candidate: candidate.run_id.clone(),
        measures: Vec::new(),
        regressed: Vec::new(),
        improved: Vec::new(),
        unmatched: Vec::new(),
    };
    for suite in &candidate.suites {
        let Some(base) = baseline.suite(&suite.name) else {
            comparison.unmatched.push(format!("suite {}", suite.name));
            continue;
        };
        for (measure, value) in &suite.metrics {
            if let Some(before) = base.metrics.get(measure) {
                comparison.measures.push((suite.name.clone(), measure.clone(), *before, *value));
            }
        }
        for case in &suite.cases {
            let Some(before) = base.cases.iter().find(|c| c.id == case.id) else {
                comparison.unmatched.push(format!("{}/{}", suite.name, case.id));
                continue;
            };
            let margin = before.spread + case.spread + 1e-9;
            let change = CaseChange {
                suite: suite.name.clone(),
                id: case.id.clone(),
                input: case.input.clone(),
                baseline: before.score,
                candidate: case.score,
                baseline_output: before.output.clone(),
                candidate_output: case.output.clone(),
            };
            if case.score < before.score - margin {
                comparison.regressed.push(change);
            } else if case.score > before.score + margin {
                comparison.improved.push(change);
            }
        }
    }
    comparison
}

/// A comparison as Markdown.
pub fn comparison_markdown(c: &Comparison) -> String {
    let mut out = format!(
        "# {} → {}\n\n| suite | measure | baseline | candidate | change |\n|---|---|---|---|---|\n",
        c.baseline, c.candidate
    );
    for (suite, measure, before, after) in &c.measures {
        let delta = after - before;
        let worse = if lower_is_better(measure) { delta > 1e-9 } else { delta < -1e-9 };
        let _ = writeln!(
            out,
            "| {suite} | {measure} | {before:.3} | {after:.3} | {delta:+.3}{} |",
            if worse { " ▼" } else { "" }
        );
    }
    for (title, list) in [("Regressed", &c.regressed), ("Improved", &c.improved)] {
        let _ = writeln!(out, "\n## {title}: {}\n", list.len());
        for change in list {
            let _ = writeln!(
                out,
                "- `{}/{}` {:.2} → {:.2}: {}\n  - baseline: {}\n  - candidate: {}",
                change.suite,
                change.id,
                change.baseline,
                change.candidate,
                short(&Value::String(change.input.clone())),
                short(&change.baseline_output),
                short(&change.candidate_output)
            );
        }
    }
    if !c.unmatched.is_empty() {
        let _ = writeln!(out, "\nIn only one run: {}", c.unmatched.join(", "));
    }
    out
}

/// A comparison as one self-contained HTML page, regressions with both outputs side
/// by side.
pub fn comparison_html(c: &Comparison) -> String {
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>{} vs {}</title><style>{STYLE}</style><body><h1>{} → {}</h1><table><tr><th>suite</th><th>measure</th><th>baseline</th><th>candidate</th></tr>",
        escape(&c.baseline),
        escape(&c.candidate),
        escape(&c.baseline),
        escape(&c.candidate)
    );
    for (suite, measure, before, after) in &c.measures {
        let worse = if lower_is_better(measure) { after > before } else { after < before };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{before:.3}</td><td class=\"{}\">{after:.3}</td></tr>",
            escape(suite),
            escape(measure),
            if (after - before).abs() < 1e-9 {
                ""
            } else if worse {
                "bad"
            } else {
                "good"
            }
        );
    }
    out.push_str("</table>");
    for (title, list) in [("Regressed", &c.regressed), ("Improved", &c.improved)] {
        let _ = write!(
            out,
            "<h2>{title}: {}</h2><table><tr><th>case</th><th>baseline</th><th>candidate</th></tr>",
            list.len()
        );
        for change in list {
            let _ = write!(
                out,
                "<tr><td>{}/{}<br>{}<br>{:.2} → {:.2}</td><td><pre>{}</pre></td><td><pre>{}</pre></td></tr>",
                escape(&change.suite),
                escape(&change.id),
                escape(&change.input),
                change.baseline,
                change.candidate,
                escape(&serde_json::to_string_pretty(&change.baseline_output).unwrap_or_default()),
                escape(&serde_json::to_string_pretty(&change.candidate_output).unwrap_or_default())
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</body></html>\n");
    out
}
