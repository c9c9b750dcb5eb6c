//! `pivotwatch cases list|record|verdict|similar`: triaged cases and analysts' verdicts.

use anyhow::Context;

use super::audit::DatabaseArgs;
use crate::actions::settings;
use crate::knowledge::cases::{self, Case, Verdict};
use crate::knowledge::{self, devices::DeviceKnowledge};

#[derive(Debug, clap::Args)]
pub struct CasesArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(subcommand)]
    pub command: CasesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CasesCommand {
    /// Every case with its verdict, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Records a triaged case (the triage agent does this itself; this is for operators
    /// importing history and for tests).
    Record {
        /// The Cortex XDR incident id, or any id of your own.
        #[arg(long)]
        id: String,
        #[arg(long)]
        device: String,
        #[arg(long)]
        summary: String,
        #[arg(long = "technique")]
        techniques: Vec<String>,
        #[arg(long)]
        vendor: Option<String>,
        #[arg(long)]
        model: Option<String>,
    },
    /// Records how an analyst judged a case: true_positive, false_positive or
    /// benign_change.
    Verdict {
        id: String,
        verdict: String,
        #[arg(long = "as")]
        as_user: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The past cases most like a description, with their verdicts.
    Similar {
        text: String,
        #[arg(short = 'k', long, default_value_t = 5)]
        k: usize,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: CasesArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = args.database.open(&runtime)?;
    runtime.block_on(async {
        match args.command {
            CasesCommand::List { json } => {
                let all = cases::all(&store).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&all)?);
                    return Ok(0);
                }
                for case in all {
                    println!(
                        "{:<12} {:<14} {:<15} {}",
                        case.id,
                        case.device_id,
                        case.verdict.map_or("(no verdict)", Verdict::as_str),
                        case.summary
                    );
                }
                Ok(0)
            }
            CasesCommand::Record { id, device, summary, techniques, vendor, model } => {
                if let Err(err) = knowledge::resolve(&techniques) {
                    anyhow::bail!("--technique: {err}");
                }
                let case = Case {
                    id,
                    device_id: device,
                    vendor,
                    model,
                    summary,
                    techniques,
                    verdict: None,
                    verdict_reason: None,
                    created_at_ms: crate::store::now_ms(),
                };
                cases::record_triage(&store, &case).await?;
                println!("case {} recorded", case.id);
                Ok(0)
            }
            CasesCommand::Verdict { id, verdict, as_user, reason } => {
                let verdict = Verdict::parse(&verdict).map_err(anyhow::Error::msg)?;
                cases::record_verdict(&store, &id, verdict, &as_user, &reason)
                    .await
                    .with_context(|| format!("recording the verdict on case {id}"))?;
                println!("case {id}: {} by {as_user}", verdict.as_str());
                Ok(0)
            }
            CasesCommand::Similar { text, k, json } => {
                let knowledge =
                    knowledge::from_settings(&settings::from_env, DeviceKnowledge::shipped())
                        .await?;
                let docs: Vec<_> = cases::all(&store).await?.iter().map(Case::doc).collect();
                knowledge.add(&docs).await?;
                let hits = cases::similar(&knowledge, &text, None, k).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&hits)?);
                    return Ok(0);
                }
                if hits.is_empty() {
                    println!("no similar case");
                    return Ok(1);
                }
                for hit in hits {
                    let verdict = hit.doc.fields.get("verdict").and_then(|v| v.first());
                    println!(
                        "{:<18} {:<15} {}",
                        hit.doc.id,
                        verdict.map_or("(no verdict)", String::as_str),
                        hit.doc.text.lines().next().unwrap_or_default()
                    );
                }
                Ok(0)
            }
        }
    })
}
