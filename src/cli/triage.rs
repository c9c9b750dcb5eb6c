//! `pivotwatch triage --finding FILE`: the write-up for one finding, its evidence, and
//! the actions it proposes (pending approval).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::audit::DatabaseArgs;
use crate::actions::{Action, Gate, Policy, Users, settings};
use crate::agent::triage_offline;
use crate::audit::Actor;
use crate::knowledge::cases::{self, Case};
use crate::knowledge::devices::DeviceKnowledge;
use crate::model::Finding;
use crate::xdr::connect::TenantSettings;

#[derive(Debug, clap::Args)]
pub struct TriageArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// One object of the detection output (`pivotwatch detect --json`), in a file.
    #[arg(long)]
    pub finding: PathBuf,
    /// Print the whole result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only write up; create no proposals and record no case.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: TriageArgs) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(&args.finding)
        .with_context(|| format!("reading {}", args.finding.display()))?;
    let finding: Finding = serde_json::from_str(text.trim()).map_err(|err| {
        anyhow::anyhow!(
            "{}: not one finding of the detection output (line {}, column {}): {err}",
            args.finding.display(),
            err.line(),
            err.column()
        )
    })?;
    let data_dir = args.database.data_dir.data_dir.clone();
    let tenant = TenantSettings::from_env().open(&data_dir)?;
    let xdr = tenant.xdr();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = args.database.open(&runtime)?;
    let mut result = runtime.block_on(async {
        let knowledge =
            crate::knowledge::from_settings(&settings::from_env, DeviceKnowledge::shipped())
                .await?;
        let docs: Vec<_> = cases::all(&store).await?.iter().map(Case::doc).collect();
        knowledge.add(&docs).await?;
        // TODO: write the narrative with the configured model once the model-backed
        // agent exists; the template narrative is used every time today.
        anyhow::Ok(triage_offline(&finding, &*xdr, Some(&knowledge)).await)
    })?;
    if !args.dry_run {
        let users_file = data_dir.join("users.toml");
        let users = if users_file.exists() {
            Users::load(&users_file).map_err(anyhow::Error::msg)?
        } else {
            Users::default()
        };
        let gate = Gate::new(store.clone(), Policy::default(), users);
        runtime.block_on(async {
            for suggestion in &result.suggestions {
                let action = Action::from_parts(&suggestion.kind, suggestion.params.clone())
                    .map_err(anyhow::Error::msg)?;
                if let Some(proposal) =
                    gate.propose(action, &Actor::Agent, &suggestion.reason).await?
                {
                    result.proposals.push(proposal.id);
                }
            }
            let case = Case {
                id: format!("{}@{}", finding.device_id, finding.window_start),
                device_id: finding.device_id.clone(),
                vendor: None,
                model: None,
                summary: result.narrative.lines().next().unwrap_or_default().to_string(),
                techniques: finding.techniques.clone(),
                verdict: None,
                verdict_reason: None,
                created_at_ms: crate::store::now_ms(),
            };
            cases::record_triage(&store, &case).await?;
            anyhow::Ok(())
        })?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &result)?;
        writeln!(out)?;
        return Ok(0);
    }
    writeln!(out, "{}\n", result.narrative)?;
    if !result.grounded {
        writeln!(out, "warning: not in the evidence: {}", result.unsupported.join(", "))?;
    }
    writeln!(out, "evidence:")?;
    for item in &result.evidence {
        writeln!(out, "  {} {:<18} {}", item.id, item.tool, item.summary)?;
    }
    if !result.proposals.is_empty() {
        writeln!(out, "\nproposed, waiting for approval (pivotwatch proposals list):")?;
        for (id, s) in result.proposals.iter().zip(&result.suggestions) {
            writeln!(out, "  {id}  {}", s.kind)?;
        }
    }
    Ok(0)
}
