//! `pivotwatch attack show|search`: ATT&CK for ICS at the command line.

use std::path::PathBuf;

use serde_json::json;

use crate::actions::settings;
use crate::knowledge::attack::Attack;
use crate::knowledge::devices::DeviceKnowledge;
use crate::knowledge::{self, Filter, Mode};

#[derive(Debug, clap::Args)]
pub struct AttackArgs {
    #[command(subcommand)]
    pub command: AttackCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AttackCommand {
    /// A technique with its tactics, mitigations, targeted assets and known users; or a
    /// mitigation, asset, group, software or campaign with its techniques.
    Show {
        /// An ATT&CK for ICS ID: T0886, M0930, A0003, G0034, S0603, C0028.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Searches ATT&CK for ICS and the device knowledge in plain language.
    Search {
        text: String,
        /// How many results.
        #[arg(short = 'k', long, default_value_t = 5)]
        k: usize,
        /// What to search: technique (the default), mitigation, asset, group, software,
        /// campaign, tactic, device, case, or `any`.
        #[arg(long, default_value = "technique")]
        kind: String,
        /// Only techniques of this tactic (its short name, e.g. lateral-movement).
        #[arg(long)]
        tactic: Option<String>,
        /// sparse, dense or hybrid (dense needs an embeddings endpoint).
        #[arg(long, default_value = "hybrid")]
        mode: String,
        /// An operator's device knowledge file, merged over the shipped one.
        #[arg(long)]
        devices: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: AttackArgs) -> anyhow::Result<i32> {
    match args.command {
        AttackCommand::Show { id, json } => show(&id, json),
        AttackCommand::Search { text, k, kind, tactic, mode, devices, json } => {
            let mode = match mode.as_str() {
                "sparse" => Mode::Sparse,
                "dense" => Mode::Dense,
                "hybrid" => Mode::Hybrid,
                other => anyhow::bail!("--mode {other:?}: one of sparse, dense, hybrid"),
            };
            let kind = (kind != "any").then_some(kind);
            let mut filter = Filter { kind, ..Filter::default() };
            if let Some(tactic) = tactic {
                filter = filter.with("tactic", &tactic);
            }
            let devices = match devices {
                Some(path) => DeviceKnowledge::shipped()
                    .merged(&DeviceKnowledge::load(&path).map_err(anyhow::Error::msg)?),
                None => DeviceKnowledge::shipped().clone(),
            };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let hits = runtime.block_on(async {
                let knowledge = knowledge::from_settings(&settings::from_env, &devices).await?;
                if mode == Mode::Dense && !knowledge.has_dense() {
                    eprintln!(
                        "note: no embeddings endpoint is configured (PIVOTWATCH_EMBEDDINGS_URL); \
                         searching by terms only"
                    );
                }
                knowledge.search(&text, mode, filter, k).await
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hits)?);
                return Ok(0);
            }
            if hits.is_empty() {
                println!("nothing found");
                return Ok(1);
            }
            for hit in hits {
                let why = if hit.matched.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", hit.matched.join(", "))
                };
                println!("{:<28} {:<11} {}{why}", hit.doc.id, hit.doc.kind, hit.doc.title);
            }
            Ok(0)
        }
    }
}

fn show(id: &str, as_json: bool) -> anyhow::Result<i32> {
    let attack = Attack::shipped();
    let id = id.trim().to_ascii_uppercase();
    let named = |ids: &[String]| -> Vec<String> {
        ids.iter().map(|i| format!("{i} {}", attack.name(i).unwrap_or("?"))).collect()
    };
    if id.starts_with('T') && !id.starts_with("TA") {
        let technique = match attack.technique(&id) {
            Ok(t) => t,
            Err(err) => {
                eprintln!("error: {err}");
                return Ok(1);
            }
        };
        let tactics: Vec<String> =
            technique.tactics.iter().map(|s| attack.tactic_name(s).to_string()).collect();
        if as_json {
            let value = json!({
                "id": technique.entry.id, "name": technique.entry.name,
                "url": technique.entry.url, "description": technique.entry.description,
                "tactics": tactics, "platforms": technique.platforms,
                "mitigations": named(&technique.mitigations), "assets": named(&technique.assets),
                "used_by": named(&technique.used_by),
            });
            println!("{}", serde_json::to_string_pretty(&value)?);
            return Ok(0);
        }
        println!("{} {}  ({})", technique.entry.id, technique.entry.name, technique.entry.url);
        println!("Tactics: {}", tactics.join(", "));
        println!();
        println!("{}", wrap(&technique.entry.description, 88));
        for (title, list) in [
            ("Mitigations", named(&technique.mitigations)),
            ("Targeted assets", named(&technique.assets)),
            ("Known users", named(&technique.used_by)),
        ] {
            println!();
            println!("{title} ({}):", list.len());
            for line in list {
                println!("  {line}");
            }
        }
        return Ok(0);
    }
    let (kind, entry) = match attack.others.get(&id) {
        Some((kind, entry)) => (kind.as_str(), entry),
        None => match attack.tactics.values().find(|t| t.id == id) {
            Some(entry) => ("tactic", entry),
            None => {
                eprintln!("error: {id} is not in ATT&CK for ICS {}", attack.version);
                return Ok(1);
            }
        },
    };
    let techniques: Vec<String> = match kind {
        "tactic" => {
            let short = attack.tactics.iter().find(|(_, t)| t.id == id).map(|(s, _)| s.clone());
            attack
                .techniques
                .values()
                .filter(|t| short.as_ref().is_some_and(|s| t.tactics.contains(s)))
                .map(|t| format!("{} {}", t.entry.id, t.entry.name))
                .collect()
        }
        _ => named(
            &attack.related.get(&id).cloned().unwrap_or_default().into_iter().collect::<Vec<_>>(),
        ),
    };
    if as_json {
        let value = json!({"id": entry.id, "kind": kind, "name": entry.name, "url": entry.url,
                           "description": entry.description, "techniques": techniques});
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    println!("{} {} — {kind}  ({})", entry.id, entry.name, entry.url);
    println!();
    println!("{}", wrap(&entry.description, 88));
    println!();
    println!("Techniques ({}):", techniques.len());
    for line in techniques {
        println!("  {line}");
    }
    Ok(0)
}

/// `text` broken into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        if line > 0 && line + 1 + word.len() > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}
