//! `pivotwatch ingest FILE... [--json]`: reads Zeek conn.log files and says what they
//! hold (flows, distinct hosts, time span) and which lines had to be skipped.
//!
//! Skipped lines are warnings on stderr; stdout carries only the summary, so `--json`
//! output can be piped into another program. A file that cannot be read at all stops
//! the command with an error naming it.

use std::collections::HashSet;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

use crate::ingest::{self, ReadSummary};
use crate::timefmt::rfc3339;

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Zeek conn.log files (TSV or JSON lines, plain or gzip).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print one JSON summary object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The `--json` output, one object for all files together.
#[derive(Debug, Serialize)]
struct IngestReport {
    flows: u64,
    skipped: u64,
    first_ts: Option<String>,
    last_ts: Option<String>,
    hosts: usize,
}

pub fn run(args: IngestArgs) -> anyhow::Result<i32> {
    let mut total = ReadSummary::default();
    let mut hosts = HostSet::default();
    let mut per_file = Vec::with_capacity(args.files.len());

    for path in &args.files {
        let summary = ingest::read_flows(path, &mut |flow| hosts.add(flow.orig_h, flow.resp_h))?;
        warn_skipped(&summary);
        per_file.push((path.display().to_string(), summary.flows, summary.skipped));
        total.merge(summary);
    }
    if total.skipped > 0 {
        eprintln!(
            "warning: skipped {} malformed {} in total; {} flows were read",
            total.skipped,
            plural(total.skipped, "line", "lines"),
            total.flows,
        );
    }

    let report = IngestReport {
        flows: total.flows,
        skipped: total.skipped,
        first_ts: total.first_ts.map(rfc3339),
        last_ts: total.last_ts.map(rfc3339),
        hosts: hosts.len(),
    };
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write_text(&mut out, &report, &per_file)?;
    }
    out.flush()?;
    Ok(0)
}

fn write_text(
    out: &mut impl Write,
    report: &IngestReport,
    per_file: &[(String, u64, u64)],
) -> io::Result<()> {
    if per_file.len() > 1 {
        for (name, flows, skipped) in per_file {
            writeln!(out, "{name}: {flows} flows, {skipped} skipped")?;
        }
    }
    writeln!(
        out,
        "{} flows, {} skipped lines, {} hosts",
        report.flows, report.skipped, report.hosts
    )?;
    match (&report.first_ts, &report.last_ts) {
        (Some(first), Some(last)) => writeln!(out, "from {first} to {last}"),
        _ => writeln!(out, "no flows, so no time span"),
    }
}

/// Prints a file's sample of skipped lines, and how many more there were.
fn warn_skipped(summary: &ReadSummary) {
    for problem in &summary.problems {
        eprintln!("warning: {problem}");
    }
    let unshown = summary.skipped.saturating_sub(summary.problems.len() as u64);
    if let (Some(first), true) = (summary.problems.first(), unshown > 0) {
        eprintln!(
            "warning: {}: {unshown} more skipped {} not shown",
            first.file,
            plural(unshown, "line", "lines")
        );
    }
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

/// Distinct addresses on either end of the flows. Consecutive flows mostly share their
/// originator (a capture follows one device), so the last pair is checked before
/// hashing, which keeps the set off the per-flow cost.
#[derive(Default)]
struct HostSet {
    seen: HashSet<IpAddr>,
    last: Option<(IpAddr, IpAddr)>,
}

impl HostSet {
    fn add(&mut self, orig: IpAddr, resp: IpAddr) {
        if self.last == Some((orig, resp)) {
            return;
        }
        if self.last.map(|(last_orig, _)| last_orig) != Some(orig) {
            self.seen.insert(orig);
        }
        self.seen.insert(resp);
        self.last = Some((orig, resp));
    }

    fn len(&self) -> usize {
        self.seen.len()
    }
}
