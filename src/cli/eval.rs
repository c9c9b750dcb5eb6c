//! `pivotwatch eval run` and `pivotwatch eval compare`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use super::DataDirArg;
use crate::actions::settings;
use crate::agent::llm::{Llm, Prompts};
use crate::eval::{self, EvalOptions, Report, Thresholds, report};

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: EvalCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Runs suites and writes report.json, report.md and report.html.
    Run(RunArgs),
    /// Compares two runs (report.json files or their folders) case by case.
    Compare(CompareArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A suite to run (hunt, triage, tools, injection); repeat for several; all when
    /// none is given.
    #[arg(long = "suite")]
    pub suites: Vec<String>,
    /// The folder of suites.
    #[arg(long, default_value = "evals")]
    pub evals: PathBuf,
    /// Ask with the highest version of each prompt found here instead of the shipped
    /// prompts.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// `offline` for the offline planner, or a model name at `llm.base_url`; default:
    /// the configured model, else offline.
    #[arg(long)]
    pub model: Option<String>,
    /// Runs per case; the report gives each case's pass rate and spread.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Ask the model every time instead of answering repeated requests from the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Delete the cached answers of the suites run before running them.
    #[arg(long)]
    pub clear_cache: bool,
    /// Minimums and maximums to meet (exit status 2 when one is missed).
    #[arg(long)]
    pub thresholds: Option<PathBuf>,
    /// Where the reports go (default `<data_dir>/evals/<run id>/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    pub baseline: PathBuf,
    pub candidate: PathBuf,
    /// Also write the comparison as an HTML page here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> anyhow::Result<i32> {
    match args.command {
        EvalCommand::Run(args) => run_suites(args),
        EvalCommand::Compare(args) => compare(args),
    }
}

fn model(args: &RunArgs) -> anyhow::Result<Option<Llm>> {
    let llm = match args.model.as_deref() {
        Some("offline") => return Ok(None),
        Some(name) => {
            let Some(base_url) = settings::from_env("llm.base_url") else {
                bail!("--model {name} needs llm.base_url (PIVOTWATCH_LLM_BASE_URL)");
            };
            let key = settings::from_env("llm.api_key").map(crate::actions::Secret::new);
            Some(Llm::new(&base_url, key, name, Duration::from_secs(120))?)
        }
        None => Llm::from_settings(&settings::from_env)?,
    };
    let Some(mut llm) = llm else {
        if args.prompts.is_some() {
            bail!("--prompts needs a model: the offline planner uses no prompts");
        }
        return Ok(None);
    };
    if let Some(dir) = &args.prompts {
        llm = llm.with_prompts(Prompts::from_dir(dir)?);
    }
    Ok(Some(llm))
}

fn run_suites(args: RunArgs) -> anyhow::Result<i32> {
    let thresholds =
        args.thresholds.as_deref().map(Thresholds::read).transpose().map_err(anyhow::Error::msg)?;
    let options = EvalOptions {
        evals_dir: args.evals.clone(),
        work_dir: args.data_dir.data_dir.join("evals"),
        suites: if args.suites.is_empty() {
            eval::SUITES.iter().map(ToString::to_string).collect()
        } else {
            args.suites.clone()
        },
        llm: model(&args)?,
        repeat: args.repeat,
        cache: !args.no_cache,
        clear_cache: args.clear_cache,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = runtime.block_on(eval::run(&options)).map_err(anyhow::Error::msg)?;
    let out_dir = args.out.clone().unwrap_or_else(|| options.work_dir.join(&report.run_id));
    write_reports(&report, &out_dir)?;
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", report::markdown(&report))?;
    writeln!(stdout, "\nreports in {}", out_dir.display())?;
    if let Some(thresholds) = thresholds {
        let missed = thresholds.missed(&report);
        if !missed.is_empty() {
            writeln!(stdout, "\nthresholds missed:")?;
            for line in &missed {
                writeln!(stdout, "  {line}")?;
            }
            return Ok(2);
        }
        writeln!(stdout, "every threshold met")?;
    }
    Ok(0)
}

/// Writes `report.json`, `report.md` and `report.html` into `dir`.
pub fn write_reports(report: &Report, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(report)?)?;
    std::fs::write(dir.join("report.md"), report::markdown(report))?;
    std::fs::write(dir.join("report.html"), report::html(report))?;
    Ok(())
}

fn read_report(path: &Path) -> anyhow::Result<Report> {
    let file = if path.is_dir() { path.join("report.json") } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{} is not an eval report", file.display()))
}

fn compare(args: CompareArgs) -> anyhow::Result<i32> {
    let baseline = read_report(&args.baseline)?;
    let candidate = read_report(&args.candidate)?;
    let comparison = report::compare(&baseline, &candidate);
    print!("{}", report::comparison_markdown(&comparison));
    if let Some(path) = &args.html {
        std::fs::write(path, report::comparison_html(&comparison))
            .with_context(|| path.display().to_string())?;
    }
    Ok(if comparison.regressed.is_empty() { 0 } else { 1 })
}
