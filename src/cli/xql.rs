//! `pivotwatch xql check|fmt`: validates and formats XQL the way pivotwatch does
//! before any query reaches a tenant.
//!
//! `check` exits 0 for a valid query, 1 for an invalid one and 3 for one refused
//! because it could write; 2 is left to usage errors (and unreadable input).

use std::io::{self, Read, Write};
use std::path::PathBuf;

use super::replay::DataDirArg;
use crate::xdr::Timeframe;
use crate::xdr::connect::{Tenant, TenantSettings};
use crate::xdr::replay::{Replay, ReplayQueryError};
use crate::xdr::{CortexXdr, Xdr, XdrError, XqlRequest};
use crate::xql::exec::{Column, Table, Value};
use crate::xql::validate::{Diagnostic, Validation, check};
use crate::xql::{self, Schema, ValidationOptions};

#[derive(Debug, clap::Args)]
pub struct XqlArgs {
    #[command(subcommand)]
    pub command: XqlCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum XqlCommand {
    /// Check a query: syntax, read-only rules, a timeframe and, with a schema, the
    /// datasets and fields it names.
    Check(CheckArgs),
    /// Print a query in canonical form.
    Fmt(FmtArgs),
    /// Run a query on the configured tenant: Cortex XDR when PIVOTWATCH_XDR_URL and its
    /// key are set, else the replay tenant in the data directory.
    Run(RunArgs),
    /// Print the replay tenant's datasets and fields as a schema file.
    Schema(SchemaArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The query text; `-` reads standard input.
    pub query: String,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Only the last so much of the recorded data (`24h`, `7d`), as the API's
    /// relative timeframe.
    #[arg(long)]
    pub timeframe: Option<String>,
    /// At most this many rows are printed.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// One JSON object per row instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The query file; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    /// A tenant schema (JSON); without it, datasets and fields are not checked.
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// The caller will send a timeframe with the query, so the query need not set one.
    #[arg(long)]
    pub with_timeframe: bool,
    /// A saved query that `call` may run (repeat for several).
    #[arg(long = "allow-call", value_name = "NAME")]
    pub allow_call: Vec<String>,
    /// Print one JSON object: {"valid", "read_only", "errors", "warnings"}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct FmtArgs {
    /// The query file; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
}

pub fn run(args: XqlArgs) -> anyhow::Result<i32> {
    match args.command {
        XqlCommand::Check(args) => run_check(args),
        XqlCommand::Fmt(args) => run_fmt(args),
        XqlCommand::Run(args) => run_query(args),
        XqlCommand::Schema(args) => {
            let replay = Replay::open(&args.data_dir.data_dir)?;
            println!("{}", replay.schema().to_json());
            Ok(0)
        }
    }
}

fn read_query(file: Option<&PathBuf>) -> Result<String, String> {
    match file {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))
        }
        _ => {
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .map_err(|err| format!("standard input: {err}"))?;
            Ok(text)
        }
    }
}

fn run_check(args: CheckArgs) -> anyhow::Result<i32> {
    let text = match read_query(args.file.as_ref()) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(2);
        }
    };
    let schema = match args.schema.as_deref().map(Schema::read).transpose() {
        Ok(schema) => schema,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(2);
        }
    };
    let options = ValidationOptions {
        schema: schema.as_ref(),
        caller_timeframe: args.with_timeframe,
        // With a schema this is a check for a real tenant, where an unbounded query
        // costs quota; without one it is a syntax check and a missing timeframe is
        // only worth a warning.
        require_timeframe: schema.is_some(),
        call_allow_list: &args.allow_call,
    };
    let (_, validation) = check(&text, &options);

    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &validation)?;
        writeln!(out)?;
    } else {
        write_report(&mut out, &text, &validation)?;
    }
    out.flush()?;
    Ok(exit_code(&validation))
}

fn exit_code(validation: &Validation) -> i32 {
    if !validation.read_only {
        3
    } else if !validation.valid {
        1
    } else {
        0
    }
}

fn write_report(out: &mut impl Write, text: &str, validation: &Validation) -> io::Result<()> {
    for (label, items) in [("error", &validation.errors), ("warning", &validation.warnings)] {
        for item in items {
            write_diagnostic(out, text, label, item)?;
        }
    }
    let verdict = match exit_code(validation) {
        0 => "valid",
        3 => "refused: the query could write",
        _ => "invalid",
    };
    writeln!(out, "{verdict}")
}

/// Writes a diagnostic with the line it points at and a caret under the column.
fn write_diagnostic(
    out: &mut impl Write,
    text: &str,
    label: &str,
    d: &Diagnostic,
) -> io::Result<()> {
    writeln!(out, "{label}: line {}, column {}: {}", d.line, d.column, d.message)?;
    if let Some(line) = text.lines().nth(d.line.saturating_sub(1) as usize) {
        let pad: String = line
            .chars()
            .take(d.column.saturating_sub(1) as usize)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        writeln!(out, "  {line}\n  {pad}^")?;
    }
    Ok(())
}

fn run_fmt(args: FmtArgs) -> anyhow::Result<i32> {
    let text = match read_query(args.file.as_ref()) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(2);
        }
    };
    match xql::format(&text) {
        Ok(formatted) => {
            println!("{formatted}");
            Ok(0)
        }
        Err(err) => {
            eprintln!("error: {err}");
            Ok(1)
        }
    }
}

fn run_query(args: RunArgs) -> anyhow::Result<i32> {
    let text = if args.query == "-" {
        match read_query(None) {
            Ok(text) => text,
            Err(err) => {
                eprintln!("error: {err}");
                return Ok(2);
            }
        }
    } else {
        args.query.clone()
    };
    let timeframe = match args.timeframe.as_deref().map(crate::timefmt::parse_duration).transpose()
    {
        Ok(secs) => secs.map(|secs| Timeframe::Relative { millis: (secs * 1000.0) as u64 }),
        Err(err) => {
            eprintln!("error: --timeframe: {err}");
            return Ok(2);
        }
    };
    let tenant = TenantSettings::from_env().open(&args.data_dir.data_dir)?;
    let replay = match tenant {
        Tenant::Replay(replay) => replay,
        Tenant::Cortex(cortex) => {
            return run_remote(&cortex, text, timeframe, args.limit, args.json);
        }
    };
    let started = std::time::Instant::now();
    let table = match replay.query(&text, timeframe.as_ref()) {
        Ok(table) => table,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(if matches!(err, ReplayQueryError::Refused(_)) { 3 } else { 1 });
        }
    };
    let elapsed = started.elapsed();
    let mut out = io::stdout().lock();
    if args.json {
        for row in table.to_rows().into_iter().take(args.limit) {
            serde_json::to_writer(&mut out, &row)?;
            writeln!(out)?;
        }
    } else {
        write_table(&mut out, &table, args.limit)?;
        writeln!(out, "({} rows in {:.1} ms)", table.n_rows(), elapsed.as_secs_f64() * 1000.0)?;
    }
    out.flush()?;
    Ok(0)
}

/// Runs a query on a Cortex XDR tenant and prints its rows; the client validates it
/// first, so a query that could write never leaves the machine.
fn run_remote(
    cortex: &CortexXdr,
    text: String,
    timeframe: Option<Timeframe>,
    limit: usize,
    json: bool,
) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut request = XqlRequest::new(text);
    request.timeframe = timeframe;
    let started = std::time::Instant::now();
    let result = match runtime.block_on(cortex.run_xql(&request)) {
        Ok(result) => result,
        Err(err @ XdrError::QueryRefused { .. }) => {
            eprintln!("error: {err}");
            return Ok(3);
        }
        Err(err @ XdrError::XqlParse { .. }) => {
            eprintln!("error: {err}");
            return Ok(1);
        }
        Err(err) => return Err(err.into()),
    };
    let elapsed = started.elapsed();
    let mut out = io::stdout().lock();
    if json {
        for row in result.rows.iter().take(limit) {
            serde_json::to_writer(&mut out, row)?;
            writeln!(out)?;
        }
    } else {
        let table = rows_table(&result.rows);
        write_table(&mut out, &table, limit)?;
        writeln!(
            out,
            "({} rows from {} in {:.1} ms)",
            result.rows.len(),
            cortex.api_root(),
            elapsed.as_secs_f64() * 1000.0
        )?;
    }
    out.flush()?;
    Ok(0)
}

/// Rows of a tenant's answer as a table, columns in order of first appearance.
pub(super) fn rows_table(rows: &[crate::xdr::Row]) -> Table {
    let mut names: Vec<String> = Vec::new();
    for row in rows {
        for name in row.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let columns = names
        .iter()
        .map(|name| {
            let values = rows
                .iter()
                .map(|row| match row.get(name) {
                    None | Some(serde_json::Value::Null) => Value::Null,
                    Some(serde_json::Value::String(text)) => Value::str(text),
                    Some(serde_json::Value::Bool(b)) => Value::Bool(*b),
                    Some(serde_json::Value::Number(n)) => n
                        .as_i64()
                        .map(Value::Int)
                        .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN))),
                    Some(other) => Value::str(&other.to_string()),
                })
                .collect();
            std::sync::Arc::new(Column::from_values(values))
        })
        .collect();
    Table::new(names, columns)
}

/// A plain text table: a header, then one line a row, columns padded to their width.
pub(super) fn write_table(out: &mut impl Write, table: &Table, limit: usize) -> io::Result<()> {
    let rows: Vec<Vec<String>> = table
        .row_ids()
        .take(limit)
        .map(|row| table.columns.iter().map(|c| c.get(row).to_text()).collect())
        .collect();
    let widths: Vec<usize> = table
        .names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            rows.iter().map(|r| r[i].chars().count()).chain([name.len()]).max().unwrap_or(0).min(48)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, w)| {
                let cell: String = cell.chars().take(*w).collect();
                format!("{cell:<w$}")
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    writeln!(out, "{}", line(table.names.iter().map(String::as_str).collect()).trim_end())?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()).trim_end())?;
    }
    Ok(())
}
