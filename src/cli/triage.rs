//! `pivotwatch triage --finding FILE | --incident ID`: the write-up for one finding or
//! Cortex XDR case, its evidence, and the actions it proposes (pending approval). With
//! a model configured the agent writes it, calling tools; without one, or when the
//! model fails, the offline planner does, and the output says which.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::audit::DatabaseArgs;
use crate::actions::{Gate, Policy, Users, settings};
use crate::agent::llm::Llm;
use crate::agent::triage::finding_for_incident;
use crate::agent::{TriageOptions, triage};
use crate::knowledge::cases::{self, Case};
use crate::knowledge::devices::DeviceKnowledge;
use crate::model::Finding;
use crate::xdr::connect::TenantSettings;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["finding", "incident"])))]
pub struct TriageArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// One object of the detection output (`pivotwatch detect --json`), in a file.
    #[arg(long)]
    pub finding: Option<PathBuf>,
    /// A Cortex XDR case (incident) id on the tenant.
    #[arg(long)]
    pub incident: Option<String>,
    /// Print the whole result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only write up; create no proposals and record no case.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: TriageArgs) -> anyhow::Result<i32> {
    let data_dir = args.database.data_dir.data_dir.clone();
    let tenant = TenantSettings::from_env().open(&data_dir)?;
    let xdr = tenant.xdr();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = args.database.open(&runtime)?;
    let llm = Llm::from_settings(&settings::from_env)?;
    let (finding, case_text) = match (&args.finding, &args.incident) {
        (Some(path), _) => (read_finding(path)?, None),
        (None, Some(id)) => {
            let (finding, text) =
                runtime.block_on(finding_for_incident(&*xdr, id)).map_err(anyhow::Error::msg)?;
            (finding, Some(text))
        }
        (None, None) => anyhow::bail!("give --finding FILE or --incident ID"),
    };
    let users_file = data_dir.join("users.toml");
    let users = if users_file.exists() {
        Users::load(&users_file).map_err(anyhow::Error::msg)?
    } else {
        Users::default()
    };
    let gate = Gate::new(store.clone(), Policy::default(), users);
    let result = runtime.block_on(async {
        let knowledge =
            crate::knowledge::from_settings(&settings::from_env, DeviceKnowledge::shipped())
                .await?;
        let docs: Vec<_> = cases::all(&store).await?.iter().map(Case::doc).collect();
        knowledge.add(&docs).await?;
        let options = TriageOptions {
            llm: llm.as_ref(),
            store: Some(&store),
            gate: (!args.dry_run).then_some(&gate),
            incident_id: args.incident.clone(),
            case_text,
            ..TriageOptions::default()
        };
        let result = triage(&finding, &*xdr, Some(&knowledge), &options).await;
        if !args.dry_run {
            let case = Case::from_triage(args.incident.as_deref(), &finding, &result.narrative);
            cases::record_triage(&store, &case).await?;
        }
        anyhow::Ok(result)
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &result)?;
        writeln!(out)?;
        return Ok(0);
    }
    writeln!(out, "{}\n", result.narrative)?;
    match (&result.model, &result.fallback) {
        (Some(model), None) => writeln!(
            out,
            "written by {model} ({} tool calls, {} + {} tokens)",
            result.tool_calls, result.tokens.0, result.tokens.1
        )?,
        (_, Some(why)) => writeln!(out, "written by the offline planner: {why}")?,
        (None, None) => writeln!(out, "written by the offline planner (no model configured)")?,
    }
    if !result.grounded {
        writeln!(out, "warning: not in the evidence: {}", result.unsupported.join(", "))?;
    }
    writeln!(out, "\nevidence:")?;
    for item in &result.evidence {
        writeln!(out, "  {} {:<18} {}", item.id, item.tool, item.summary)?;
    }
    if !result.dropped_evidence.is_empty() {
        writeln!(
            out,
            "  (dropped from the model's context to fit its budget: {})",
            result.dropped_evidence.join(", ")
        )?;
    }
    if !result.suggestions.is_empty() {
        let recorded = !result.proposals.is_empty();
        writeln!(
            out,
            "\n{}",
            if recorded {
                "proposed, waiting for approval (pivotwatch proposals list):"
            } else {
                "would propose (not recorded):"
            }
        )?;
        for (idx, s) in result.suggestions.iter().enumerate() {
            let id = result.proposals.get(idx).map_or("-", String::as_str);
            writeln!(out, "  {id}  {}  {}", s.kind, s.reason)?;
        }
    }
    Ok(0)
}

fn read_finding(path: &std::path::Path) -> anyhow::Result<Finding> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(text.trim()).map_err(|err| {
        anyhow::anyhow!(
            "{}: not one finding of the detection output (line {}, column {}): {err}",
            path.display(),
            err.line(),
            err.column()
        )
    })
}
