//! The command-line front end. Each command lives in its own file, parses nothing
//! itself beyond its flags, and calls into the library; `main.rs` only dispatches.

mod attack;
mod audit;
mod cases;
mod demo;
mod detect;
mod eval;
mod hunt;
mod ingest;
mod proposals;
mod replay;
mod segment;
mod serve;
mod simulate;
pub mod triage;
mod xdr_sim;
mod xql;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use attack::AttackArgs;
pub use audit::AuditArgs;
pub use cases::CasesArgs;
pub use detect::DetectArgs;
pub use eval::EvalArgs;
pub use hunt::HuntArgs;
pub use ingest::IngestArgs;
pub use proposals::ProposalsArgs;
pub use replay::{DataDirArg, ReplayArgs};
pub use segment::SegmentArgs;
pub use serve::ServeArgs;
pub use simulate::SimulateArgs;
pub use triage::TriageArgs;
pub use xdr_sim::XdrSimArgs;
pub use xql::XqlArgs;

/// Learn each IoT/OT device's normal behaviour and flag the windows that deviate.
#[derive(Debug, Parser)]
#[command(name = "pivotwatch", version, about, long_about = None)]
pub struct Cli {
    /// Log filter for diagnostics on stderr (for example `debug` or `pivotwatch=trace`).
    #[arg(long, global = true, env = "PIVOTWATCH_LOG", default_value = "warn")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read telemetry files and print what they hold.
    Ingest(IngestArgs),
    /// Write a simulated hospital, building and plant fleet with labelled scenarios.
    Simulate(SimulateArgs),
    /// Learn baselines and score every device window after the baseline period.
    Detect(DetectArgs),
    /// Simulate a fleet in a temporary folder, detect, and print a summary.
    Demo(DemoArgs),
    /// Check, format or run XQL queries.
    Xql(XqlArgs),
    /// Manage the local replay tenant.
    Replay(ReplayArgs),
    /// Serve the replay tenant over the Cortex XDR public API.
    XdrSim(XdrSimArgs),
    /// Verify or export the audit trail.
    Audit(AuditArgs),
    /// Propose, approve, reject and execute side-effecting actions.
    Proposals(ProposalsArgs),
    /// Look up and search MITRE ATT&CK for ICS and the device knowledge.
    Attack(AttackArgs),
    /// Triaged cases, analysts' verdicts, and the past cases most like a new one.
    Cases(CasesArgs),
    /// Answers a hunting question in plain language with XQL on the tenant.
    Hunt(HuntArgs),
    /// Writes up one finding from its evidence and proposes actions for approval.
    Triage(TriageArgs),
    /// Runs the HTTP server: Cortex XDR webhooks, the API, triage workers.
    Serve(ServeArgs),
    /// Scores the planner or a model on the eval suites, and compares two runs.
    Eval(EvalArgs),
    /// Drafts least-privilege rules for a peer group, or a device's quarantine, from
    /// observed traffic (PAN-OS / Panorama), with what they would have blocked.
    Segment(SegmentArgs),
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the simulated files here instead of a temporary folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Simulator seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

impl Cli {
    /// The configuration file the command reads, when it reads one.
    pub fn config_file(&self) -> Option<&std::path::Path> {
        match &self.command {
            Command::Serve(args) => args.config.as_deref(),
            _ => None,
        }
    }
}

/// Runs one parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Ingest(args) => ingest::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Detect(args) => detect::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Xql(args) => xql::run(args),
        Command::Replay(args) => replay::run(args),
        Command::XdrSim(args) => xdr_sim::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Proposals(args) => proposals::run(args),
        Command::Attack(args) => attack::run(args),
        Command::Cases(args) => cases::run(args),
        Command::Hunt(args) => hunt::run(args),
        Command::Triage(args) => triage::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Segment(args) => segment::run(args),
    }
}
