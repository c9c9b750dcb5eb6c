//! Readers that turn telemetry files into canonical `Flow`s and the inventory into
//! `Device`s, plus the bundled fleet simulator that writes such files.
//!
//! Readers stream: a flow is handed to the caller's closure and forgotten, so memory
//! does not grow with the size of a file. A malformed line is reported with its file and
//! line number, skipped and counted; only problems that make a whole file unreadable
//! (no `#fields` header, an empty or truncated file, a broken inventory) are errors.
//! This module depends only on `model`.

pub mod inventory;
pub mod sim;
pub mod zeek;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use thiserror::Error;

pub use inventory::{read_inventory, read_inventory_from, write_inventory_csv};
pub use zeek::{read_flows, read_flows_from};

/// How many line problems a `ReadSummary` keeps. They are examples for a person to
/// look at; a file with millions of bad lines must not hold millions of messages.
pub const MAX_PROBLEMS: usize = 20;

/// What one or more flow files held: how many flows were delivered, how many lines
/// were skipped, and the time span of the delivered flows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadSummary {
    pub flows: u64,
    /// Every malformed line that was skipped, not only those in `problems`.
    pub skipped: u64,
    /// The earliest flow start seen, which is not always the first line: Zeek writes a
    /// connection when it ends, so long connections appear after shorter later ones.
    pub first_ts: Option<f64>,
    /// The latest flow start seen.
    pub last_ts: Option<f64>,
    /// The first `MAX_PROBLEMS` skipped lines, as a sample.
    pub problems: Vec<LineProblem>,
}

impl ReadSummary {
    /// Adds another file's summary to this one.
    pub fn merge(&mut self, other: ReadSummary) {
        self.flows += other.flows;
        self.skipped += other.skipped;
        self.first_ts = min_ts(self.first_ts, other.first_ts);
        self.last_ts = max_ts(self.last_ts, other.last_ts);
        let room = MAX_PROBLEMS.saturating_sub(self.problems.len());
        self.problems.extend(other.problems.into_iter().take(room));
    }

    pub(crate) fn add_flow(&mut self, ts: f64) {
        self.flows += 1;
        self.first_ts = min_ts(self.first_ts, Some(ts));
        self.last_ts = max_ts(self.last_ts, Some(ts));
    }

    pub(crate) fn add_problem(&mut self, file: &str, line: u64, message: String) {
        self.skipped += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(LineProblem { file: file.to_string(), line, message });
        }
    }
}

fn min_ts(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_ts(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// One skipped line: where it was and what was wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineProblem {
    pub file: String,
    /// 1-based, counting header and blank lines, so an editor jumps to it.
    pub line: u64,
    pub message: String,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Why a whole telemetry or inventory file could not be read. Every variant names the
/// file; the caller decides whether to stop or go on with the next one.
#[derive(Debug, Error)]
pub enum IngestError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: the file is empty", path.display())]
    Empty { path: PathBuf },

    #[error(
        "{}: not a Zeek conn.log or inventory: it starts with {found}; expected `#` (Zeek \
         TSV), `{{` (JSON lines) or, for an inventory, CSV or a JSON array",
        path.display()
    )]
    UnknownFormat { path: PathBuf, found: String },

    #[error(
        "{}: no #fields header before the first data line; a Zeek TSV log names its \
         columns there",
        path.display()
    )]
    MissingFieldsHeader { path: PathBuf },

    #[error("{}: the #fields header has no {column} column", path.display())]
    MissingColumn { path: PathBuf, column: &'static str },

    #[error(
        "{}: separator {separator:?} is not supported; only a single byte such as \\x09 is",
        path.display()
    )]
    UnsupportedSeparator { path: PathBuf, separator: String },

    #[error(
        "{}: the gzip data ends early after {flows} flows; the file is truncated or still \
         being written",
        path.display()
    )]
    TruncatedGzip { path: PathBuf, flows: u64 },

    #[error("{}: devices \"{first}\" and \"{second}\" both have ip {ip}", path.display())]
    DuplicateIp { path: PathBuf, ip: IpAddr, first: String, second: String },

    #[error(
        "{}:{line}: unknown criticality \"{value}\"; expected one of low, medium, high, \
         critical",
        path.display()
    )]
    UnknownCriticality { path: PathBuf, line: u64, value: String },

    #[error(
        "{}: no {column} column; an inventory needs device_id, ip and criticality",
        path.display()
    )]
    MissingInventoryColumn { path: PathBuf, column: &'static str },

    #[error("{}:{line}: {message}", path.display())]
    BadInventoryRow { path: PathBuf, line: u64, message: String },
}

/// Describes the first bytes of a file that is neither format, for `UnknownFormat`.
pub(crate) fn describe_start(bytes: &[u8]) -> String {
    let head: Vec<u8> = bytes.iter().copied().take(16).collect();
    let printable = head.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    if printable {
        format!("\"{}\"", String::from_utf8_lossy(&head))
    } else {
        let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

/// A serde_json error as a line-local message. serde_json ends its text with "at line L
/// column C" counted from where that parse began, which misleads when the caller
/// reports its own line number; the column alone is kept.
pub(crate) fn json_error_text(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let message = match text.rfind(" at line ") {
        Some(cut) => &text[..cut],
        None => text.as_str(),
    };
    format!("invalid JSON at column {}: {message}", err.column())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]
mod tests {
    use super::*;

    fn problem(line: u64) -> LineProblem {
        LineProblem { file: "a.log".into(), line, message: "bad".into() }
    }

    #[test]
    fn line_problem_displays_as_file_line_message() {
        let p = LineProblem {
            file: "conn.log".into(),
            line: 9001,
            message: "id.resp_p \"abc\" is not a port".into(),
        };
        assert_eq!(p.to_string(), "conn.log:9001: id.resp_p \"abc\" is not a port");
    }

    #[test]
    fn merge_adds_counts_widens_the_span_and_caps_problems() {
        let mut a = ReadSummary {
            flows: 3,
            skipped: 15,
            first_ts: Some(10.0),
            last_ts: Some(20.0),
            problems: (1..=15).map(problem).collect(),
        };
        let b = ReadSummary {
            flows: 4,
            skipped: 10,
            first_ts: Some(5.0),
            last_ts: Some(15.0),
            problems: (100..110).map(problem).collect(),
        };
        a.merge(b);
        assert_eq!((a.flows, a.skipped), (7, 25));
        assert_eq!((a.first_ts, a.last_ts), (Some(5.0), Some(20.0)));
        assert_eq!(a.problems.len(), MAX_PROBLEMS);
        assert_eq!(a.problems[15].line, 100);

        let mut empty = ReadSummary::default();
        empty.merge(a.clone());
        assert_eq!((empty.first_ts, empty.last_ts), (Some(5.0), Some(20.0)));
    }

    #[test]
    fn add_problem_counts_all_but_keeps_a_sample() {
        let mut s = ReadSummary::default();
        for line in 0..1000 {
            s.add_problem("x", line, "bad".into());
        }
        assert_eq!(s.skipped, 1000);
        assert_eq!(s.problems.len(), MAX_PROBLEMS);
    }

    #[test]
    fn errors_name_the_file_and_the_fault() {
        let err = IngestError::UnknownCriticality {
            path: "inventory.csv".into(),
            line: 7,
            value: "urgent".into(),
        };
        assert_eq!(
            err.to_string(),
            "inventory.csv:7: unknown criticality \"urgent\"; expected one of low, medium, \
             high, critical"
        );
        let err = IngestError::MissingColumn { path: "conn.log".into(), column: "id.resp_p" };
        assert_eq!(err.to_string(), "conn.log: the #fields header has no id.resp_p column");
    }
}
