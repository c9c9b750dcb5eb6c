//! `pivotwatch hunt "QUESTION"`: a question in plain language, answered in XQL on the
//! tenant (the replay tenant, or Cortex XDR when it is configured).

use std::io::Write;

use super::audit::DatabaseArgs;
use crate::actions::settings;
use crate::agent::hunt;
use crate::agent::llm::Llm;
use crate::xdr::connect::TenantSettings;

#[derive(Debug, clap::Args)]
pub struct HuntArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The question, e.g. "Which cameras talk to external IPs at night?".
    pub question: String,
    /// Print {"question", "xql", "valid", "rows", "row_count", "summary", "follow_ups",
    /// "planner"}.
    #[arg(long)]
    pub json: bool,
    /// Rows to print (the JSON carries up to 1,000).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

pub fn run(args: HuntArgs) -> anyhow::Result<i32> {
    let tenant = TenantSettings::from_env().open(&args.database.data_dir.data_dir)?;
    let xdr = tenant.xdr();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let llm = Llm::from_settings(&settings::from_env)?;
    // Inferences go to the audit trail; without a model there are none to record.
    let store = match &llm {
        Some(_) => Some(args.database.open(&runtime)?),
        None => None,
    };
    let result = runtime.block_on(hunt(&*xdr, llm.as_ref(), &args.question, store.as_ref()));
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &result)?;
        writeln!(out)?;
        return Ok(if result.valid { 0 } else { 1 });
    }
    let Some(xql) = &result.xql else {
        writeln!(out, "{}", result.summary)?;
        return Ok(1);
    };
    writeln!(out, "XQL ({} planner, on the {}):", result.planner, tenant.describe())?;
    for line in xql.lines() {
        writeln!(out, "    {line}")?;
    }
    writeln!(out)?;
    if !result.rows.is_empty() {
        let table = super::xql::rows_table(&result.rows);
        super::xql::write_table(&mut out, &table, args.limit)?;
        writeln!(out)?;
    }
    writeln!(out, "{}", result.summary)?;
    if !result.follow_ups.is_empty() {
        writeln!(out, "\nfollow-up hunts:")?;
        for f in &result.follow_ups {
            writeln!(out, "  - {} ({} {})", f.question, f.technique, f.technique_name)?;
        }
    }
    Ok(if result.valid { 0 } else { 1 })
}
