//! `pivotwatch segment`: least-privilege rules for a peer group, or a device's
//! quarantine, drafted from the tenant's firewall log and replayed over it.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::bail;

use super::audit::DatabaseArgs;
use crate::actions::kinds::PanosTarget;
use crate::actions::{Gate, Policy};
use crate::audit::Actor;
use crate::segment::{self, Report, Subject, panos};
use crate::xdr::connect::TenantSettings;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["group", "device"])))]
pub struct SegmentArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// A peer group, `<device type> / <segment>` (e.g. "Infusion Pump / clinical-devices").
    #[arg(long)]
    pub group: Option<String>,
    /// A device (address, asset name or id) to draft the quarantine of.
    #[arg(long)]
    pub device: Option<String>,
    /// End of the baseline (RFC 3339); by default halfway through the firewall log.
    #[arg(long)]
    pub baseline_until: Option<String>,
    /// A PAN-OS configuration export to compare the draft with.
    #[arg(long)]
    pub rulebase: Option<PathBuf>,
    /// A Panorama device group: objects and pre-rulebase rules go there.
    #[arg(long)]
    pub device_group: Option<String>,
    /// `text` (a summary and the set commands), `panos-xml`, `panos-set` or `json`.
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Record the deploy steps as proposals for approval (nothing is pushed).
    #[arg(long)]
    pub propose: bool,
}

pub fn run(args: SegmentArgs) -> anyhow::Result<i32> {
    if !matches!(args.format.as_str(), "text" | "panos-xml" | "panos-set" | "json") {
        bail!("--format {}: use text, panos-xml, panos-set or json", args.format);
    }
    let target = match &args.device_group {
        Some(group) => {
            segment::valid_name(group).map_err(anyhow::Error::msg)?;
            PanosTarget::Panorama { device_group: group.clone() }
        }
        None => PanosTarget::Firewall,
    };
    let until = args
        .baseline_until
        .as_deref()
        .map(crate::timefmt::parse_time)
        .transpose()
        .map_err(|err| anyhow::anyhow!("--baseline-until: {err}"))?;
    let subject = match (&args.group, &args.device) {
        (Some(group), _) => Subject::Group(group.clone()),
        (None, Some(device)) => Subject::Quarantine(device.clone()),
        (None, None) => bail!("give --group KEY or --device ID"),
    };
    let existing = match &args.rulebase {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
            Some(
                panos::read_rulebase(&text, args.device_group.as_deref())
                    .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?,
            )
        }
        None => None,
    };
    let tenant = TenantSettings::from_env().open(&args.database.data_dir.data_dir)?;
    let xdr = tenant.xdr();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let fleet = runtime.block_on(segment::fleet(&*xdr)).map_err(anyhow::Error::msg)?;
    let (mut report, baseline) = runtime
        .block_on(segment::draft_for_fleet(&*xdr, &fleet, &subject, until))
        .map_err(anyhow::Error::msg)?;
    if let Some(existing) = &existing {
        report.diff = Some(panos::diff(&report.draft, existing, &baseline));
    }
    let mut out = std::io::stdout().lock();
    match args.format.as_str() {
        "panos-xml" => write!(out, "{}", panos::xml(&report.draft, &target))?,
        "panos-set" => write!(out, "{}", panos::set_commands(&report.draft, &target))?,
        "json" => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        _ => {
            write!(out, "{}", summary(&report))?;
            writeln!(out, "\n{}", panos::set_commands(&report.draft, &target))?;
        }
    }
    if args.propose {
        let store = args.database.open(&runtime)?;
        let host = args.device.as_deref().and_then(|d| fleet.find(d));
        let gate = Gate::new(store, Policy::default(), crate::actions::Users::default());
        for (action, reason) in
            segment::proposals(&report.draft, host, &target).map_err(anyhow::Error::msg)?
        {
            let kind = action.kind();
            match runtime.block_on(gate.propose(action, &Actor::Agent, &reason))? {
                Some(proposal) => {
                    eprintln!("proposed {kind} as {}: {reason}", proposal.id)
                }
                None => eprintln!("{kind}: the rollout phase records nothing yet"),
            }
        }
    }
    Ok(0)
}

/// What the draft is and what it would have done.
pub fn summary(report: &Report) -> String {
    let draft = &report.draft;
    let impact = &report.impact;
    let allows = draft.rules.iter().filter(|r| r.action == segment::RuleAction::Allow).count();
    let mut out = format!(
        "{} draft for {} ({} addresses), baseline {} to {} ({} days)\n",
        draft.kind,
        draft.subject,
        draft.scope.len(),
        report.baseline.0,
        report.baseline.1,
        report.baseline_days
    );
    out.push_str(&format!(
        "  {} rules ({allows} allow, {} deny); {} address objects, {} static and {} dynamic groups, {} services\n",
        draft.rules.len(),
        draft.rules.len() - allows,
        draft.objects.addresses.len(),
        draft.objects.groups.len(),
        draft.objects.dynamic_groups.len(),
        draft.objects.services.len()
    ));
    out.push_str(&format!(
        "  baseline: {} of {} conversations would have been blocked\n",
        impact.baseline_blocked.len(),
        report.baseline_conversations
    ));
    out.push_str(&format!(
        "  after it (to {}): {} of {} conversations would have been blocked\n",
        report.later.1,
        impact.later_blocked.len(),
        report.later_conversations
    ));
    for conv in impact.later_blocked.iter().take(10) {
        out.push_str(&format!(
            "    {} -> {} {}/{} {} ({} sessions)\n",
            conv.src,
            conv.dst,
            conv.proto,
            conv.port,
            conv.app.as_deref().unwrap_or(""),
            conv.sessions
        ));
    }
    for rule in &impact.rules {
        out.push_str(&format!(
            "  {:<60} {:>8} baseline {:>8} after\n",
            rule.rule, rule.baseline_sessions, rule.later_sessions
        ));
    }
    if !impact.unused.is_empty() {
        out.push_str(&format!("  unused, so wider than needed: {}\n", impact.unused.join(", ")));
    }
    for warning in &draft.warnings {
        out.push_str(&format!("  warning: {warning}\n"));
    }
    if let Some(diff) = &report.diff {
        out.push_str(&format!("  against the rulebase: {} rules to add\n", diff.to_add.len()));
        for (rule, by) in &diff.shadowed {
            out.push_str(&format!("    {rule} is shadowed by {by}\n"));
        }
        for (rule, how) in &diff.wider_than_observed {
            out.push_str(&format!("    {rule} is wider than the traffic: {how}\n"));
        }
    }
    out
}
