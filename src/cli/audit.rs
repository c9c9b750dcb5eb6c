//! `pivotwatch audit verify|export`: checks the hash chain of the audit trail, and
//! writes its records as JSON lines for a SIEM.

use std::io::Write;

use super::DataDirArg;
use crate::audit;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Recompute the chain: exit 0 when it holds, 1 naming the first broken record.
    Verify(VerifyArgs),
    /// Write records as JSON lines, oldest first.
    Export(ExportArgs),
}

/// Where the database is: a URL, or the SQLite file in the data directory.
#[derive(Debug, clap::Args)]
pub struct DatabaseArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// `postgres://...` or `sqlite:...`; without it, `<data_dir>/pivotwatch.db`.
    #[arg(long, env = "PIVOTWATCH_DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    pub fn open(&self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<Store> {
        Ok(runtime
            .block_on(Store::open_default(self.database_url.as_deref(), &self.data_dir.data_dir))?)
    }
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Print {"ok", "records", "first_broken"}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only records written at or after this time (RFC 3339, a date, or Unix seconds).
    #[arg(long, value_parser = crate::timefmt::parse_time)]
    pub since: Option<f64>,
}

pub fn run(args: AuditArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match args.command {
        AuditCommand::Verify(args) => {
            let store = args.database.open(&runtime)?;
            let check = runtime.block_on(audit::verify(&store))?;
            if args.json {
                println!("{}", serde_json::to_string(&check)?);
            } else if check.ok {
                println!("audit trail holds: {} records", check.records);
            } else {
                println!(
                    "audit trail broken at record {}: {}",
                    check.first_broken.unwrap_or_default(),
                    check.problem.as_deref().unwrap_or("")
                );
            }
            Ok(if check.ok { 0 } else { 1 })
        }
        AuditCommand::Export(args) => {
            let store = args.database.open(&runtime)?;
            let since_ms = args.since.map_or(0, |secs| (secs * 1000.0) as i64);
            let records = runtime.block_on(audit::export(&store, since_ms))?;
            let mut out = std::io::stdout().lock();
            for record in records {
                serde_json::to_writer(&mut out, &record)?;
                writeln!(out)?;
            }
            out.flush()?;
            Ok(0)
        }
    }
}
