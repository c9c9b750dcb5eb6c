//! The offline eval harness: fixed suites of cases scored against the simulator's
//! tenant, with the offline planner or any OpenAI-compatible model, repeated to show
//! how much a score moves between runs, and compared between two runs.
//!
//! Suites live under `evals/<suite>/` as JSON-lines files: `hunt` (question → XQL,
//! scored on a ladder from parsing to execution match), `triage` (facts recalled,
//! unsupported claims, proposed actions), `tools` (F1 over tool calls, argument
//! validity) and `injection` (benign utility, utility under attack, targeted attack
//! success). Nothing leaves the machine except the requests to the configured model.

pub mod agentic;
pub mod hunt;
pub mod report;
pub mod tenant;
pub mod triage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::llm::{Llm, ResponseCache};

/// The suites, in the order a full run takes them.
pub const SUITES: [&str; 4] = ["hunt", "triage", "tools", "injection"];

/// What to run.
pub struct EvalOptions {
    /// The folder holding one folder per suite (`evals/`).
    pub evals_dir: PathBuf,
    /// Where the tenant, the cache and the reports go (`<data_dir>/evals/`).
    pub work_dir: PathBuf,
    pub suites: Vec<String>,
    /// `None`: the offline planner.
    pub llm: Option<Llm>,
    /// Runs per case.
    pub repeat: usize,
    /// Answer repeated requests from the response cache.
    pub cache: bool,
    /// Clear the cache of the suites run before running them.
    pub clear_cache: bool,
}

/// One run of one case.
#[derive(Clone, Debug, Default)]
pub struct CaseRun {
    pub pass: bool,
    /// 0 to 1: how far up the suite's scale the case got.
    pub score: f64,
    /// The suite's measures for this case; a measure that does not apply is absent.
    pub metrics: BTreeMap<String, f64>,
    /// What was produced (a query, a narrative, the calls), for the report.
    pub output: Value,
}

/// One run of one case, with what identifies the case in the report.
#[derive(Clone, Debug)]
pub struct Scored {
    pub id: String,
    /// The group the case is summarised in (difficulty, source, attack style, ...).
    pub group: Option<String>,
    pub input: String,
    pub expected: Value,
    pub run: CaseRun,
}

/// A case over all its runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseReport {
    pub id: String,
    #[serde(default)]
    pub group: Option<String>,
    /// The question, request or finding, for reading the report.
    pub input: String,
    pub runs: usize,
    /// Share of runs that passed.
    pub pass_rate: f64,
    /// Mean score over the runs.
    pub score: f64,
    /// Half the range the score moved over between runs (0 for one run).
    pub spread: f64,
    pub metrics: BTreeMap<String, f64>,
    /// The last run's output.
    pub output: Value,
    /// What a right answer is, for reading the report side by side.
    #[serde(default)]
    pub expected: Value,
}

impl CaseReport {
    fn from_runs(
        id: &str,
        group: Option<String>,
        input: String,
        expected: Value,
        runs: Vec<CaseRun>,
    ) -> CaseReport {
        let n = runs.len().max(1) as f64;
        let scores: Vec<f64> = runs.iter().map(|r| r.score).collect();
        let (lo, hi) = scores
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
        CaseReport {
            id: id.to_string(),
            group,
            input,
            runs: runs.len(),
            pass_rate: runs.iter().filter(|r| r.pass).count() as f64 / n,
            score: scores.iter().sum::<f64>() / n,
            spread: if runs.len() > 1 { (hi - lo) / 2.0 } else { 0.0 },
            metrics: means(runs.iter().map(|r| r.metrics.iter().map(|(k, v)| (k.as_str(), *v)))),
            output: runs.last().map(|r| r.output.clone()).unwrap_or_default(),
            expected,
        }
    }
}

/// One suite's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuiteReport {
    pub name: String,
    /// Means over the cases each measure applies to, and `pass_rate`.
    pub metrics: BTreeMap<String, f64>,
    /// The same per group (difficulty for hunts, source for triage, ...).
    pub by_group: BTreeMap<String, BTreeMap<String, f64>>,
    pub cases: Vec<CaseReport>,
    /// Model answers served from the cache, and requests sent to the model.
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub wall_ms: u64,
    /// The offline planner's measures on the same cases, when a model ran.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub floor: BTreeMap<String, f64>,
}

/// The mean of each measure over the items that report it.
fn means<'a>(
    items: impl Iterator<Item = impl Iterator<Item = (&'a str, f64)>>,
) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for item in items {
        for (name, value) in item {
            let entry = sums.entry(name.to_string()).or_default();
            entry.0 += value;
            entry.1 += 1;
        }
    }
    sums.into_iter().map(|(k, (sum, n))| (k, sum / n.max(1) as f64)).collect()
}

/// Means of each measure over the cases it applies to, plus the pass rate.
fn summarise(cases: &[CaseReport]) -> BTreeMap<String, f64> {
    means(cases.iter().map(|case| {
        case.metrics
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .chain(std::iter::once(("pass_rate", case.pass_rate)))
    }))
}

impl SuiteReport {
    fn new(
        name: &str,
        cases: Vec<CaseReport>,
        (cache_hits, cache_misses): (u64, u64),
        wall_ms: u64,
    ) -> Self {
        let mut groups: BTreeMap<String, Vec<CaseReport>> = BTreeMap::new();
        for case in &cases {
            if let Some(group) = &case.group {
                groups.entry(group.clone()).or_default().push(case.clone());
            }
        }
        SuiteReport {
            name: name.to_string(),
            metrics: summarise(&cases),
            by_group: groups.iter().map(|(g, c)| (g.clone(), summarise(c))).collect(),
            cases,
            cache_hits,
            cache_misses,
            wall_ms,
            floor: BTreeMap::new(),
        }
    }
}

/// A whole run, as `report.json` keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub run_id: String,
    /// RFC 3339.
    pub started: String,
    /// `offline` or the model's name.
    pub model: String,
    /// Prompt ids and hashes in use (none offline).
    pub prompts: Vec<(String, String)>,
    pub repeat: usize,
    pub suites: Vec<SuiteReport>,
    pub wall_ms: u64,
    pub pivotwatch_version: String,
}

impl Report {
    pub fn suite(&self, name: &str) -> Option<&SuiteReport> {
        self.suites.iter().find(|s| s.name == name)
    }
}

/// Reads the JSON-lines files of a suite folder, in file-name order; every line is one
/// case. A malformed line is an error naming the file and line.
pub fn read_cases<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<Vec<T>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|err| format!("{}: {err}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no .jsonl case files", dir.display()));
    }
    let mut cases = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|err| format!("{}: {err}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let case = serde_json::from_str(line)
                .map_err(|err| format!("{}:{}: {err}", file.display(), n + 1))?;
            cases.push(case);
        }
    }
    Ok(cases)
}

/// The model for one suite: its own cache folder (per repeat, so repeats are real
/// samples while a re-run answers each from the cache).
fn suite_llm(
    options: &EvalOptions,
    suite: &str,
    repeat: usize,
) -> Result<(Option<Llm>, Option<Arc<ResponseCache>>), String> {
    let Some(llm) = &options.llm else { return Ok((None, None)) };
    if !options.cache {
        return Ok((Some(llm.clone()), None));
    }
    let dir = cache_dir(&options.work_dir, suite).join(format!("r{repeat}"));
    let cache =
        Arc::new(ResponseCache::open(&dir).map_err(|err| format!("{}: {err}", dir.display()))?);
    Ok((Some(llm.clone().with_cache(Arc::clone(&cache))), Some(cache)))
}

/// Where a suite's cached answers are kept.
pub fn cache_dir(work_dir: &Path, suite: &str) -> PathBuf {
    work_dir.join("cache").join(suite)
}

/// Runs the chosen suites and returns the report (not yet written).
pub async fn run(options: &EvalOptions) -> Result<Report, String> {
    for suite in &options.suites {
        if !SUITES.contains(&suite.as_str()) {
            return Err(format!("no suite {suite:?} (suites: {})", SUITES.join(", ")));
        }
    }
    if options.repeat == 0 {
        return Err("--repeat must be at least 1".into());
    }
    let started = Instant::now();
    let started_at = crate::timefmt::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    let chosen = |name: &str| options.suites.iter().any(|s| s == name);
    let read = |name: &str| options.evals_dir.join(name);
    let cases = Cases {
        hunt: if chosen("hunt") { read_cases(&read("hunt"))? } else { Vec::new() },
        triage: if chosen("triage") { read_cases(&read("triage"))? } else { Vec::new() },
        tools: if chosen("tools") { read_cases(&read("tools"))? } else { Vec::new() },
        injection: if chosen("injection") { read_cases(&read("injection"))? } else { Vec::new() },
    };
    let mut planted: Vec<Value> = cases.tools.iter().filter_map(|c| c.case.clone()).collect();
    for case in &cases.injection {
        planted.push(case.case.clone());
        planted.push(case.attacked()?);
    }
    let tenant = tenant::prepare(&options.work_dir.join("tenant"), &planted)?;
    let knowledge = crate::knowledge::Knowledge::embedded_default()
        .await
        .map_err(|err| format!("loading the knowledge base: {err}"))?;

    let mut suites = Vec::new();
    for suite in SUITES.iter().filter(|s| options.suites.iter().any(|x| x == *s)) {
        if options.clear_cache {
            ResponseCache::clear(&cache_dir(&options.work_dir, suite))
                .map_err(|err| format!("clearing the {suite} cache: {err}"))?;
        }
        let suite_started = Instant::now();
        let mut per_repeat: Vec<Vec<Scored>> = Vec::new();
        let mut caches = Vec::new();
        for repeat in 0..options.repeat {
            let (llm, cache) = suite_llm(options, suite, repeat)?;
            let runs = run_suite(suite, &cases, &tenant, &knowledge, llm.as_ref()).await?;
            per_repeat.push(runs);
            caches.extend(cache);
        }
        let mut reports = Vec::new();
        let first = per_repeat.first().cloned().unwrap_or_default();
        for (idx, scored) in first.into_iter().enumerate() {
            let runs: Vec<CaseRun> =
                per_repeat.iter().filter_map(|r| r.get(idx)).map(|r| r.run.clone()).collect();
            reports.push(CaseReport::from_runs(
                &scored.id,
                scored.group,
                scored.input,
                scored.expected,
                runs,
            ));
        }
        let counts = caches.iter().map(|c| c.counts()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let wall_ms = u64::try_from(suite_started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut report = SuiteReport::new(suite, reports, counts, wall_ms);
        if options.llm.is_some() {
            // The offline planner on the same cases, shown beside the model's scores.
            let floor = run_suite(suite, &cases, &tenant, &knowledge, None).await?;
            let floor: Vec<CaseReport> = floor
                .into_iter()
                .map(|s| CaseReport::from_runs(&s.id, s.group, s.input, s.expected, vec![s.run]))
                .collect();
            report.floor = summarise(&floor);
        }
        suites.push(report);
    }
    let stamp = started_at.replace([':', '-'], "").replace('T', "-");
    let model = options.llm.as_ref().map_or("offline".to_string(), |l| l.model().to_string());
    Ok(Report {
        run_id: format!("{}-{}", stamp.trim_end_matches('Z'), slug(&model)),
        started: started_at,
        prompts: options.llm.as_ref().map(|l| l.prompts().in_use()).unwrap_or_default(),
        model,
        repeat: options.repeat,
        suites,
        wall_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        pivotwatch_version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// Every chosen suite's cases, read once for all repeats and the floor.
struct Cases {
    hunt: Vec<hunt::HuntCase>,
    triage: Vec<triage::TriageCase>,
    tools: Vec<agentic::ToolsCase>,
    injection: Vec<agentic::InjectionCase>,
}

/// One run of one suite with `llm` (the offline planner when `None`).
async fn run_suite(
    suite: &str,
    cases: &Cases,
    tenant: &tenant::EvalTenant,
    knowledge: &crate::knowledge::Knowledge,
    llm: Option<&Llm>,
) -> Result<Vec<Scored>, String> {
    Ok(match suite {
        "hunt" => hunt::run(&cases.hunt, tenant, llm).await,
        "triage" => triage::run(&cases.triage, tenant, knowledge, llm).await?,
        "tools" => agentic::run_tools(&cases.tools, tenant, knowledge, llm).await,
        _ => agentic::run_injection(&cases.injection, tenant, knowledge, llm).await?,
    })
}

fn slug(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

/// F1 of two sets (1 when both are empty).
pub fn f1<T: Ord>(
    got: &std::collections::BTreeSet<T>,
    want: &std::collections::BTreeSet<T>,
) -> f64 {
    if got.is_empty() && want.is_empty() {
        return 1.0;
    }
    let hit = got.intersection(want).count() as f64;
    if hit == 0.0 {
        return 0.0;
    }
    let precision = hit / got.len() as f64;
    let recall = hit / want.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Minimums and maximums a run must meet, from `evals/thresholds.toml`:
/// `[suite] min_<measure> = x` or `max_<measure> = x`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Thresholds(BTreeMap<String, BTreeMap<String, f64>>);

impl Thresholds {
    pub fn read(path: &Path) -> Result<Thresholds, String> {
        let text =
            std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
        let parsed: Thresholds =
            toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
        for (suite, limits) in &parsed.0 {
            if !SUITES.contains(&suite.as_str()) {
                return Err(format!("{}: no suite [{suite}]", path.display()));
            }
            for key in limits.keys() {
                if !(key.starts_with("min_") || key.starts_with("max_")) {
                    return Err(format!(
                        "{}: [{suite}] {key}: a threshold is min_<measure> or max_<measure>",
                        path.display()
                    ));
                }
            }
        }
        Ok(parsed)
    }

    /// Every threshold the report misses, as `suite.measure: got x, needs >= y`. A
    /// measure the suite did not report counts as missed; suites not run are skipped.
    pub fn missed(&self, report: &Report) -> Vec<String> {
        let mut missed = Vec::new();
        for (suite, limits) in &self.0 {
            let Some(result) = report.suite(suite) else { continue };
            for (key, limit) in limits {
                let (measure, at_least) = match key.strip_prefix("min_") {
                    Some(m) => (m, true),
                    None => (key.trim_start_matches("max_"), false),
                };
                match result.metrics.get(measure) {
                    Some(got) if at_least && *got + 1e-9 < *limit => missed
                        .push(format!("{suite}.{measure}: {got:.3}, needs at least {limit:.3}")),
                    Some(got) if !at_least && *got > *limit + 1e-9 => missed
                        .push(format!("{suite}.{measure}: {got:.3}, needs at most {limit:.3}")),
                    Some(_) => {}
                    None => missed.push(format!("{suite}.{measure}: not measured")),
                }
            }
        }
        missed
    }
}
