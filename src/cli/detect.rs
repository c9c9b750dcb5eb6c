//! `pivotwatch detect` and `pivotwatch demo`.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::baseline::DetectConfig;
use crate::ingest::ReadSummary;
use crate::model::{Finding, PeerAttr, Severity};
use crate::pipeline::{self, BaselineSource, DetectInput, PipelineOutput};
use crate::timefmt;

#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("baseline").required(true).args(["baseline_until", "baseline_flows"])
))]
pub struct DetectArgs {
    /// Device inventory (CSV or JSON). Without it, every local address that originates
    /// flows is a device of unknown type, all in one peer group.
    #[arg(long)]
    pub inventory: Option<PathBuf>,
    /// Flow files to learn from and score (Zeek conn.log, TSV or JSON, plain or gzip).
    #[arg(long, required = true, num_args = 1..)]
    pub flows: Vec<PathBuf>,
    /// Learn from flows before this time (RFC 3339, a date, or Unix seconds) and score
    /// the rest.
    #[arg(long, conflicts_with = "baseline_flows")]
    pub baseline_until: Option<String>,
    /// Learn from these files only, and score every --flows file.
    #[arg(long, num_args = 1..)]
    pub baseline_flows: Vec<PathBuf>,
    /// Window length (1h, 5m, 30s, ...).
    #[arg(long, default_value = "1h")]
    pub window: String,
    /// Peer-group key, most specific first, comma-separated.
    #[arg(long, default_value = "device_type,model,segment")]
    pub peer_key: String,
    /// Seed of the isolation forests and clustering.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object per finding, one per line.
    #[arg(long)]
    pub json: bool,
    /// Lowest severity printed.
    #[arg(long, default_value = "low")]
    pub min_severity: String,
    /// Print every scored window, whatever its severity (for ROC curves and the like).
    #[arg(long)]
    pub all: bool,
    /// Write one CSV row of features per window to this file.
    #[arg(long)]
    pub export_features: Option<PathBuf>,
    /// Print the time each stage took to stderr, as one JSON object.
    #[arg(long)]
    pub timings: bool,
    /// How many findings the table shows.
    #[arg(long, default_value_t = 25)]
    pub top: usize,
}

pub fn run(args: DetectArgs) -> anyhow::Result<i32> {
    let config = DetectConfig {
        window_secs: timefmt::parse_duration(&args.window)
            .map_err(|e| anyhow::anyhow!("--window: {e}"))?,
        peer_key: parse_peer_key(&args.peer_key)?,
        seed: args.seed,
        ..DetectConfig::default()
    };
    let baseline = match (&args.baseline_until, args.baseline_flows.is_empty()) {
        (Some(until), true) => BaselineSource::Until(
            timefmt::parse_time(until).map_err(|e| anyhow::anyhow!("--baseline-until: {e}"))?,
        ),
        (None, false) => BaselineSource::Files(args.baseline_flows.clone()),
        (None, true) => {
            bail!("say where the baseline is: --baseline-until TIME or --baseline-flows FILE...")
        }
        (Some(_), false) => bail!("--baseline-until and --baseline-flows exclude each other"),
    };
    let min_severity: Severity =
        args.min_severity.parse().map_err(|e| anyhow::anyhow!("--min-severity: {e}"))?;
    let input =
        DetectInput { inventory: args.inventory.clone(), flows: args.flows.clone(), baseline };

    let started = Instant::now();
    let output = run_with_progress(config, &input)?;
    report_skipped(&output.baseline_read);
    report_skipped(&output.read);
    if args.timings {
        let flows = output.read.flows + output.baseline_read.flows;
        eprintln!("{}", serde_json::json!({"flows": flows, "timings": output.timings}));
    }

    if let Some(path) = &args.export_features {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        output
            .detection
            .write_features_csv(file)
            .with_context(|| format!("writing {}", path.display()))?;
    }

    let detection = &output.detection;
    let shown = detection.findings.iter().filter(|f| args.all || f.severity >= min_severity);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        for finding in shown {
            serde_json::to_writer(&mut out, finding)?;
            writeln!(out)?;
        }
    } else {
        let mut ranked: Vec<&Finding> = shown.collect();
        ranked.sort_by(|a, b| b.risk.total_cmp(&a.risk).then(a.window_start.cmp(&b.window_start)));
        write_summary(&mut out, &output, started.elapsed().as_secs_f64())?;
        write_table(&mut out, &ranked, args.top)?;
    }
    out.flush()?;
    Ok(0)
}

pub(super) fn run_with_progress(
    config: DetectConfig,
    input: &DetectInput,
) -> anyhow::Result<PipelineOutput> {
    // A progress bar only for runs long enough to need one, and only on a terminal.
    let total_bytes: u64 = input
        .flows
        .iter()
        .chain(match &input.baseline {
            BaselineSource::Files(files) => files.iter(),
            BaselineSource::Until(_) => [].iter(),
        })
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = if std::io::stderr().is_terminal() && total_bytes > LONG_RUN_BYTES {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        Some(bar)
    } else {
        None
    };
    let mut on_progress = |n: u64| {
        if let Some(bar) = &bar {
            bar.set_message(format!("{n} flows read"));
            bar.tick();
        }
    };
    let output = pipeline::detect_files(config, input, &mut on_progress);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(output?)
}

/// About 20 seconds of reading on a slow disk: below that a bar would only flicker.
const LONG_RUN_BYTES: u64 = 256 * 1024 * 1024;

fn parse_peer_key(text: &str) -> anyhow::Result<Vec<PeerAttr>> {
    let attrs: Vec<PeerAttr> = text
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| part.parse::<PeerAttr>())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("--peer-key: {e}"))?;
    if attrs.is_empty() {
        bail!("--peer-key: name at least one attribute");
    }
    Ok(attrs)
}

fn report_skipped(read: &ReadSummary) {
    for problem in &read.problems {
        eprintln!("warning: {problem}");
    }
    if read.skipped > 0 {
        let more = read.skipped.saturating_sub(read.problems.len() as u64);
        let tail = if more > 0 { format!(" ({more} not shown)") } else { String::new() };
        eprintln!("warning: skipped {} malformed lines{tail}", read.skipped);
    }
}

pub(super) fn write_summary(
    out: &mut impl Write,
    output: &PipelineOutput,
    secs: f64,
) -> std::io::Result<()> {
    let d = &output.detection;
    let flows = output.read.flows + output.baseline_read.flows;
    writeln!(
        out,
        "{} flows, {} devices in {} peer groups, {} baseline windows, {} scored windows ({:.1} s)",
        flows, d.devices, d.peer_groups, d.baseline_windows, d.scored_windows, secs
    )?;
    let counts: Vec<String> = d
        .count_by_severity()
        .iter()
        .rev()
        .map(|(severity, n)| format!("{n} {}", severity.as_str()))
        .collect();
    writeln!(out, "windows by severity: {}", counts.join(", "))?;
    for mismatch in &d.type_mismatches {
        writeln!(
            out,
            "note: {} is labelled {} but behaves like {}",
            mismatch.device_id, mismatch.labelled_type, mismatch.behaves_like
        )?;
    }
    Ok(())
}

fn write_table(out: &mut impl Write, findings: &[&Finding], top: usize) -> std::io::Result<()> {
    if findings.is_empty() {
        return writeln!(out, "\nno findings at the chosen severity");
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<8} {:>5} {:>5}  {:<20} {:<20} {:<14} reason",
        "severity", "risk", "peer%", "window start", "device", "techniques"
    )?;
    for finding in findings.iter().take(top) {
        let reason = finding
            .reasons
            .first()
            .map(|r| format!("{}: {}", r.feature, plain(&r.observed)))
            .unwrap_or_default();
        writeln!(
            out,
            "{:<8} {:>5.1} {:>5.1}  {:<20} {:<20} {:<14} {}",
            finding.severity.as_str(),
            finding.risk,
            finding.peer_percentile,
            finding.window_start,
            truncate(&finding.device_id, 20),
            truncate(&finding.techniques.join(","), 14),
            reason
        )?;
    }
    if findings.len() > top {
        writeln!(out, "... and {} more (--top N shows more)", findings.len() - top)?;
    }
    Ok(())
}

pub(super) fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let cut: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}~")
    }
}
