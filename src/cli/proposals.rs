//! `pivotwatch proposals list|show|propose|approve|reject|run`: the approval gate from
//! the command line, for operators and for tests.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::audit::DatabaseArgs;
use crate::actions::policy::Phase;
use crate::actions::{
    Action, Channel, Executor, Gate, Policy, Proposal, State, Users, deliver_notices, notify,
    run_approved, settings,
};
use crate::audit::Actor;
use crate::xdr::connect::TenantSettings;

#[derive(Debug, clap::Args)]
pub struct ProposalsArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The people and their roles (TOML, `[[user]]` tables); default
    /// `<data_dir>/users.toml`.
    #[arg(long, env = "PIVOTWATCH_AUTH_USERS_FILE", global = true)]
    pub users_file: Option<PathBuf>,
    /// The approval policy (TOML); without it, the built-in safe policy.
    #[arg(long, env = "PIVOTWATCH_POLICY_FILE", global = true)]
    pub policy_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ProposalsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ProposalsCommand {
    /// Proposals, newest first.
    List {
        /// Only those in this state (proposed, approved, executing, succeeded, ...).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One proposal with its approvals.
    Show { id: String },
    /// Propose an action: `propose KIND --params JSON --as USER`.
    Propose {
        kind: String,
        #[arg(long)]
        params: String,
        #[arg(long = "as")]
        as_user: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    Approve {
        id: String,
        #[arg(long = "as")]
        as_user: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    Reject {
        id: String,
        #[arg(long = "as")]
        as_user: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Execute the approved proposals that are due, against the configured tenant.
    Run,
    /// Show the rollout phase, or set it (admins only): monitor, recommend or contain.
    Phase {
        phase: Option<String>,
        #[arg(long = "as")]
        as_user: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Grant a standing approval of KIND (for containment kinds, name the devices:
    /// ids, or prefixes ending in `*`).
    Grant {
        kind: String,
        #[arg(long = "device")]
        devices: Vec<String>,
        #[arg(long = "as")]
        as_user: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Revoke a standing approval.
    Revoke {
        id: String,
        #[arg(long = "as")]
        as_user: String,
    },
}

pub fn run(args: ProposalsArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = args.database.open(&runtime)?;
    let data_dir = args.database.data_dir.data_dir.clone();
    let users_file = args.users_file.clone().unwrap_or_else(|| data_dir.join("users.toml"));
    let users = if users_file.exists() || args.users_file.is_some() {
        Users::load(&users_file).map_err(anyhow::Error::msg)?
    } else {
        Users::default()
    };
    let policy = match &args.policy_file {
        Some(path) => Policy::load(path).map_err(anyhow::Error::msg)?,
        None => Policy::default(),
    };
    let gate = Gate::new(store.clone(), policy, users);
    runtime.block_on(async {
        match args.command {
            ProposalsCommand::List { state, json } => {
                let state = state.as_deref().map(parse_state).transpose()?;
                for proposal in gate.list(state).await? {
                    if json {
                        println!("{}", serde_json::to_string(&proposal)?);
                    } else {
                        println!("{}", line(&proposal));
                    }
                }
                Ok(0)
            }
            ProposalsCommand::Show { id } => {
                println!("{}", serde_json::to_string_pretty(&gate.get(&id).await?)?);
                Ok(0)
            }
            ProposalsCommand::Propose { kind, params, as_user, reason } => {
                let params = serde_json::from_str(&params).context("--params is not JSON")?;
                let action = Action::from_parts(&kind, params).map_err(anyhow::Error::msg)?;
                match gate.propose(action, &Actor::User(as_user), &reason).await? {
                    Some(proposal) => println!("{}", line(&proposal)),
                    None => println!("the policy's phase is monitor: nothing was proposed"),
                }
                Ok(0)
            }
            ProposalsCommand::Approve { id, as_user, reason } => {
                println!("{}", line(&gate.approve(&id, &as_user, &reason).await?));
                Ok(0)
            }
            ProposalsCommand::Reject { id, as_user, reason } => {
                println!("{}", line(&gate.reject(&id, &as_user, &reason).await?));
                Ok(0)
            }
            ProposalsCommand::Phase { phase: None, .. } => {
                println!("{}", gate.phase().await?.as_str());
                Ok(0)
            }
            ProposalsCommand::Phase { phase: Some(phase), as_user, reason } => {
                let phase = Phase::parse(&phase).map_err(anyhow::Error::msg)?;
                let user = as_user.context("setting the phase needs --as ADMIN")?;
                gate.set_phase(&user, phase, &reason).await?;
                println!("phase is now {}", phase.as_str());
                Ok(0)
            }
            ProposalsCommand::Grant { kind, devices, as_user, reason } => {
                let id = gate.grant_standing(&kind, &devices, &as_user, &reason).await?;
                println!("{id}  standing approval of {kind} by {as_user}");
                Ok(0)
            }
            ProposalsCommand::Revoke { id, as_user } => {
                gate.revoke_standing(&id, &as_user).await?;
                println!("{id} revoked");
                Ok(0)
            }
            ProposalsCommand::Run => {
                let tenant = TenantSettings::from_env().open(&data_dir)?;
                let executors = settings::executors(tenant.xdr(), &settings::from_env)
                    .map_err(anyhow::Error::msg)?;
                let executors: Vec<&dyn Executor> = executors.iter().map(|e| e.as_ref()).collect();
                let channels = notify::channels(&settings::from_env, Duration::from_secs(30))
                    .map_err(anyhow::Error::msg)?;
                let channels: Vec<&dyn Channel> = channels.iter().map(|c| c.as_ref()).collect();
                let worker = format!("cli-{}", std::process::id());
                // Notices first: a containment approved on a standing approval is
                // announced before it runs.
                let sent =
                    deliver_notices(&store, &channels, &worker, Duration::from_secs(60)).await?;
                let n = run_approved(&gate, &executors, &worker, Duration::from_secs(300)).await?;
                println!(
                    "{n} approved proposals attempted on the {}; {sent} notices handled",
                    tenant.describe()
                );
                Ok(0)
            }
        }
    })
}

fn parse_state(text: &str) -> anyhow::Result<State> {
    [
        State::Proposed,
        State::Approved,
        State::Rejected,
        State::Expired,
        State::Executing,
        State::Succeeded,
        State::Failed,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
    .with_context(|| format!("unknown state {text:?}"))
}

fn line(p: &Proposal) -> String {
    format!(
        "{}  {:<9}  {:<22} by {:<14} approvals {}/{}{}",
        p.id,
        p.state.as_str(),
        p.action.kind(),
        p.proposer,
        p.approvals.len(),
        p.needed,
        if p.approvals.is_empty() {
            String::new()
        } else {
            format!(" ({})", p.approvals.join(", "))
        }
    )
}
