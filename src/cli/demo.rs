//! `pivotwatch demo`: the front door. Simulates a fleet in a temporary folder, runs
//! detection over it, and shows how the alerts line up with what the simulator injected.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use super::DemoArgs;
use super::detect::{plain, run_with_progress, write_summary};
use crate::baseline::{DetectConfig, Detection, truth};
use crate::ingest::sim::{self, SimConfig, TruthEntry};
use crate::model::{Finding, Severity};
use crate::pipeline::{BaselineSource, DetectInput};
use crate::timefmt;
use crate::xdr::Timeframe;
use crate::xdr::replay::Replay;

/// `pivotwatch demo`: simulate, detect, and show how the findings line up with what
/// the simulator injected.
pub fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let (dir, keep) = match &args.data_dir {
        Some(dir) => (dir.clone(), true),
        None => (scratch_dir()?, false),
    };
    let result = demo_in(&dir, args.seed);
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn demo_in(dir: &Path, seed: u64) -> anyhow::Result<i32> {
    let started = Instant::now();
    let sim_config = SimConfig { seed, ..SimConfig::default() };
    let summary = sim::simulate(&sim_config, dir)
        .with_context(|| format!("simulating a fleet into {}", dir.display()))?;
    let sim_secs = started.elapsed().as_secs_f64();
    println!(
        "pivotwatch demo: simulated {} devices and {} servers over {} days: {} flows ({:.1} s)",
        summary.devices, summary.servers, sim_config.days, summary.flows, sim_secs
    );
    println!(
        "  baseline until {}, then every hour of every device is scored",
        timefmt::rfc3339(summary.baseline_until)
    );

    let input = DetectInput {
        inventory: Some(dir.join("inventory.csv")),
        flows: vec![dir.join("conn.log")],
        baseline: BaselineSource::Until(summary.baseline_until),
    };
    let detect_started = Instant::now();
    let output = run_with_progress(DetectConfig::default(), &input)?;
    let detect_secs = detect_started.elapsed().as_secs_f64();
    let truth = sim::read_truth(&dir.join("truth.json"))?;

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out)?;
    write_summary(&mut out, &output, detect_secs)?;
    write_truth_check(&mut out, &output.detection, &truth)?;
    let mut alerts: Vec<&Finding> = output.detection.at_least(Severity::High).collect();
    alerts.sort_by(|a, b| b.risk.total_cmp(&a.risk).then(a.window_start.cmp(&b.window_start)));
    writeln!(out, "\ntop alerts with their reasons:")?;
    let mut seen_devices: Vec<&str> = Vec::new();
    for finding in alerts {
        if seen_devices.contains(&finding.device_id.as_str()) {
            continue;
        }
        seen_devices.push(&finding.device_id);
        write_finding(&mut out, finding)?;
        if seen_devices.len() == 8 {
            break;
        }
    }
    drop(out);
    let replay = hunt(dir, &output.detection.findings)?;
    let top = output.detection.at_least(Severity::High).max_by(|a, b| a.risk.total_cmp(&b.risk));
    if let Some(top) = top {
        triage_top(&replay, top)?;
        segment_group(&replay, top, summary.baseline_until)?;
    }
    approve_and_post(dir, replay)?;
    map_behaviours()?;
    measure_injection(dir)?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nrun it on your own data: pivotwatch detect --inventory inventory.csv --flows conn.log \
         --baseline-until 2026-03-07T00:00:00Z"
    )?;
    writeln!(
        out,
        "or load it as a tenant: pivotwatch replay load --inventory inventory.csv --flows conn.log, \
         then pivotwatch xql run '<query>' or pivotwatch xdr-sim to serve it over the Cortex XDR API"
    )?;
    Ok(0)
}

/// Writes up the riskiest finding as `pivotwatch triage` does: with the configured
/// model, else offline. Nothing is proposed.
fn triage_top(replay: &Replay, finding: &Finding) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let llm = crate::agent::llm::Llm::from_settings(&crate::actions::settings::from_env)?;
    let options = crate::agent::TriageOptions { llm: llm.as_ref(), ..Default::default() };
    let started = Instant::now();
    let result = runtime.block_on(crate::agent::triage(finding, replay, None, &options));
    let took = started.elapsed().as_secs_f64() * 1e3;
    let mut out = std::io::stdout().lock();
    let by = match (&result.model, &result.fallback) {
        (Some(model), None) => format!("{model}, {} tool calls", result.tool_calls),
        (_, Some(why)) => format!("offline planner: {why}"),
        (None, None) => "offline planner".to_string(),
    };
    writeln!(
        out,
        "\ntriage of the riskiest finding ({} evidence items, {took:.0} ms, {by}, {}):",
        result.evidence.len(),
        if result.grounded { "every figure found in the evidence" } else { "NOT grounded" }
    )?;
    for line in result.narrative.lines() {
        writeln!(out, "    {line}")?;
    }
    Ok(())
}

/// Behaviours in an analyst's words that the detection rules leave unmapped.
const BEHAVIOURS: [&str; 3] = [
    "HMI shows normal values while the process drifts",
    "vendor laptop plugged into the clinical VLAN ran a scan of the pumps",
    "S7comm program download and a PLC STOP from a host not in the inventory",
];

/// Shows the knowledge base mapping behaviour to ATT&CK for ICS, each with its reason.
/// Drafts least-privilege rules for the riskiest finding's peer group from the
/// baseline, and says what they would have blocked after it.
fn segment_group(replay: &Replay, finding: &Finding, baseline_until: f64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let fleet = runtime.block_on(crate::segment::fleet(replay)).map_err(anyhow::Error::msg)?;
    let Some(host) = fleet.hosts.get(&finding.ip) else { return Ok(()) };
    let subject = crate::segment::Subject::Group(host.group());
    let (report, _) = runtime
        .block_on(crate::segment::draft_for_fleet(replay, &fleet, &subject, Some(baseline_until)))
        .map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nleast-privilege rules for {} drafted from the baseline (`pivotwatch segment --group \"{}\"`):",
        report.draft.subject, report.draft.subject
    )?;
    writeln!(
        out,
        "  {} rules; they block {} of {} baseline conversations and {} of {} after it, among them:",
        report.draft.rules.len(),
        report.impact.baseline_blocked.len(),
        report.baseline_conversations,
        report.impact.later_blocked.len(),
        report.later_conversations
    )?;
    let mut shown: Vec<&crate::segment::Conversation> = report
        .impact
        .later_blocked
        .iter()
        .filter(|c| c.src == finding.ip || c.dst == finding.ip)
        .take(3)
        .collect();
    if shown.is_empty() {
        shown = report.impact.later_blocked.iter().take(3).collect();
    }
    for conv in shown {
        writeln!(
            out,
            "    {} -> {} {}/{} ({} sessions)",
            conv.src, conv.dst, conv.proto, conv.port, conv.sessions
        )?;
    }
    Ok(())
}

/// Runs the `injection` eval suite (when the `evals/` folder of a clone is at hand): the
/// agent asked to do ordinary tasks over cases whose alerts carry an attacker's
/// instructions, with the configured model, else the offline router.
fn measure_injection(dir: &Path) -> anyhow::Result<()> {
    let evals = Path::new("evals");
    if !evals.join("injection").is_dir() {
        return Ok(());
    }
    let llm = crate::agent::llm::Llm::from_settings(&crate::actions::settings::from_env)?;
    let options = crate::eval::EvalOptions {
        evals_dir: evals.to_path_buf(),
        work_dir: dir.join("evals"),
        suites: vec!["injection".into()],
        llm,
        repeat: 1,
        cache: true,
        clear_cache: false,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = runtime.block_on(crate::eval::run(&options)).map_err(anyhow::Error::msg)?;
    let Some(suite) = report.suite("injection") else { return Ok(()) };
    let share = |m: &str| suite.metrics.get(m).copied().unwrap_or(0.0) * 100.0;
    let attacked =
        suite.cases.iter().filter(|c| c.metrics.get("attack_success") == Some(&1.0)).count();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nplanted instructions ({} cases of evals/injection, {}): tasks done {:.0} % clean and \
         {:.0} % under attack; the attacker's call made in {attacked} of {}",
        suite.cases.len(),
        if report.model == "offline" { "offline router".to_string() } else { report.model.clone() },
        share("benign_utility"),
        share("utility_under_attack"),
        suite.cases.len()
    )?;
    writeln!(
        out,
        "  (`pivotwatch eval run` scores hunts, triage, tool use and injection; see README)"
    )?;
    Ok(())
}

fn map_behaviours() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    let knowledge = runtime.block_on(crate::knowledge::Knowledge::embedded_default())?;
    let built = started.elapsed().as_secs_f64() * 1e3;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nATT&CK for ICS from an analyst's words (embedded index built in {built:.0} ms; \
         `pivotwatch attack search` for more):"
    )?;
    for behaviour in BEHAVIOURS {
        let mappings = runtime.block_on(knowledge.map_behaviour(behaviour, 3))?;
        writeln!(out, "  \"{behaviour}\"")?;
        for m in mappings {
            writeln!(out, "    {} {} ({}): {}", m.id, m.name, m.tactics.join(", "), m.reason)?;
        }
    }
    Ok(())
}

/// The hunts look at the scored half of the default simulation.
const HUNT_DAYS: u64 = 5;

/// Questions a hunter asks of the fleet, each with the XQL that answers it.
const HUNTS: [(&str, &str); 3] = [
    (
        "Which cameras talk to external addresses at night?",
        "dataset = xdr_data \
         | filter action_remote_ip not incidr \"10.0.0.0/8\" and action_remote_ip not incidr \"172.16.0.0/12\" \
             and action_remote_ip not incidr \"192.168.0.0/16\" \
         | alter hour = extract_time(_time, \"HOUR\") | filter hour < 6 or hour >= 22 \
         | join type = inner (dataset = asset_inventory | filter xdm.asset.type.name = \"IP Camera\" \
             | fields xdm.asset.name as camera, xdm.asset.ipv4_addresses as ip) as cam cam.ip = action_local_ip \
         | comp count() as flows, count_distinct(action_remote_ip) as peers, sum(action_total_upload) as bytes_up \
             by camera, action_remote_port \
         | sort desc flows | limit 5",
    ),
    (
        "Who speaks Modbus, S7 or EtherNet/IP to the PLCs, and how often?",
        "dataset = panw_ngfw_traffic_raw | filter dest_port in (502, 102, 44818) \
         | comp count() as sessions, count_distinct(dest_ip) as plcs by source_ip, dest_port \
         | sort desc sessions | limit 8",
    ),
    (
        "Which devices sent the most bytes to the Internet?",
        "dataset = xdr_data \
         | filter action_remote_ip not incidr \"10.0.0.0/8\" and action_remote_ip not incidr \"172.16.0.0/12\" \
             and action_remote_ip not incidr \"192.168.0.0/16\" \
         | comp sum(action_total_upload) as bytes_up, count() as flows by agent_hostname \
         | sort desc bytes_up | limit 5",
    ),
];

/// Loads the simulated fleet as a replay tenant (its alerts filed as incidents) and
/// answers a few hunting questions over it in XQL.
fn hunt(dir: &Path, findings: &[Finding]) -> anyhow::Result<Replay> {
    let started = Instant::now();
    let inventory = dir.join(sim::INVENTORY_FILE);
    let conn_log = dir.join(sim::CONN_LOG_FILE);
    let info = Replay::load(dir, Some(&inventory), &[conn_log])?;
    let replay = Replay::open(dir)?;
    let (alerts, incidents) = super::replay::file_findings(&replay, findings)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nreplay tenant: {} flows as xdr_data and panw_ngfw_traffic_raw, {} assets; \
         {alerts} alerts filed as {incidents} incidents ({:.1} s)",
        info.flows,
        info.devices,
        started.elapsed().as_secs_f64()
    )?;
    for (question, query) in HUNTS {
        let text = crate::xql::format(query).context("a demo hunt does not parse")?;
        writeln!(out, "\nhunt: {question}")?;
        for line in text.lines() {
            writeln!(out, "    {line}")?;
        }
        let started = Instant::now();
        let table = replay
            .query(&text, Some(&Timeframe::Relative { millis: HUNT_DAYS * 24 * 3_600_000 }))
            .with_context(|| format!("running the demo hunt {question:?}"))?;
        let took = started.elapsed().as_secs_f64() * 1000.0;
        let mut shown = Vec::new();
        super::xql::write_table(&mut shown, &table, 8)?;
        for line in String::from_utf8_lossy(&shown).lines() {
            writeln!(out, "    {line}")?;
        }
        writeln!(
            out,
            "    ({} rows over the last {HUNT_DAYS} recorded days, {took:.1} ms)",
            table.n_rows()
        )?;
    }
    Ok(replay)
}

fn write_truth_check(
    out: &mut impl Write,
    detection: &Detection,
    truth: &[TruthEntry],
) -> std::io::Result<()> {
    let check = truth::check(detection, truth);
    writeln!(
        out,
        "injected attacks found at high or critical inside their window: {} of {}",
        check.found(),
        check.scenarios.len()
    )?;
    for scenario in &check.scenarios {
        writeln!(
            out,
            "  {:<28} {:<14} {}",
            scenario.scenario,
            scenario.subject,
            verdict(scenario.best)
        )?;
        for (victim, best) in &scenario.victims {
            writeln!(out, "  {:<28} {:<14} {}", "  reached", victim, verdict(*best))?;
        }
    }
    writeln!(
        out,
        "benign changes and look-alikes that raised an alert: {} of {} entries on {} devices",
        check.benign_alerted.len(),
        check.benign_entries,
        check.benign_devices
    )
}

fn verdict(best: Option<&Finding>) -> String {
    match best {
        Some(f) if f.techniques.is_empty() => format!("{} risk {:.0}", f.severity.as_str(), f.risk),
        Some(f) => {
            format!("{} risk {:.0}, {}", f.severity.as_str(), f.risk, f.techniques.join(","))
        }
        None => "not flagged".to_string(),
    }
}

fn write_finding(out: &mut impl Write, finding: &Finding) -> std::io::Result<()> {
    writeln!(
        out,
        "\n  {} {} ({}) risk {:.0}, {:.0}% anomalous for {}, {} to {}",
        finding.severity.as_str().to_uppercase(),
        finding.device_id,
        finding.ip,
        finding.risk,
        finding.peer_percentile,
        finding.peer_group,
        finding.window_start,
        finding.window_end
    )?;
    if !finding.techniques.is_empty() {
        let named: Vec<String> = match crate::knowledge::resolve(&finding.techniques) {
            Ok(resolved) => resolved
                .iter()
                .map(|t| format!("{} {} ({})", t.id, t.name, t.tactics.join(", ")))
                .collect(),
            Err(_) => finding.techniques.clone(),
        };
        writeln!(out, "    ATT&CK for ICS: {}", named.join("; "))?;
    }
    for reason in finding.reasons.iter().take(3) {
        writeln!(
            out,
            "    - {}: {} (baseline: {})",
            reason.feature,
            plain(&reason.observed),
            plain(&reason.baseline)
        )?;
    }
    Ok(())
}

fn scratch_dir() -> anyhow::Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("pivotwatch-demo-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The people of the demo: one analyst who proposes, one approver who decides.
const DEMO_USERS: &str = "[[user]]\nname = \"ana\"\nroles = [\"analyst\"]\n\n\
                          [[user]]\nname = \"bea\"\nroles = [\"approver\"]\n";

/// Shows the approval gate on the top incident: the analyst proposes a case comment,
/// nothing happens until the approver approves, then it is posted once and the audit
/// trail verifies.
fn approve_and_post(dir: &Path, replay: Replay) -> anyhow::Result<()> {
    use crate::actions::{Action, Gate, Policy, Users, XdrExecutor, run_approved};
    use crate::audit::{self, Actor};
    use crate::xdr::replay::records::ListKind;

    let request = crate::xdr::IncidentQuery::new().to_request();
    let (_, incidents) = replay
        .list_wire(ListKind::Incidents, &request)
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let Some(incident) = incidents.first() else { return Ok(()) };
    let incident_id = incident["incident_id"].as_str().unwrap_or_default().to_string();
    let name = ["incident_name", "description"]
        .iter()
        .find_map(|field| incident[*field].as_str())
        .unwrap_or("no description")
        .to_string();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let replay: std::sync::Arc<dyn crate::xdr::Xdr> = std::sync::Arc::new(replay);
    runtime.block_on(async {
        let store = crate::store::Store::open_default(None, dir).await?;
        let users = Users::parse(DEMO_USERS).map_err(anyhow::Error::msg)?;
        let gate = Gate::new(store.clone(), Policy::default(), users);
        let action = Action::from_parts(
            "xdr_case_comment",
            serde_json::json!({"incident_id": incident_id,
                               "comment": "pivotwatch: see the reasons and flows in the alert"}),
        )
        .map_err(anyhow::Error::msg)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "\nnothing acts without a person: a comment on case {incident_id} ({name})")?;
        let proposal = gate
            .propose(action, &Actor::User("ana".into()), "post the triage")
            .await?
            .context("the default policy proposes")?;
        let executor = XdrExecutor::new(std::sync::Arc::clone(&replay));
        let early =
            run_approved(&gate, &[&executor], "demo", std::time::Duration::from_secs(60)).await?;
        writeln!(
            out,
            "  ana proposes {} ({}); before any approval, {early} actions run",
            proposal.id,
            proposal.action.kind()
        )?;
        let refused = gate.approve(&proposal.id, "ana", "").await.err();
        if let Some(err) = refused {
            writeln!(out, "  ana tries to approve it herself: refused ({err})")?;
        }
        let approved = gate.approve(&proposal.id, "bea", "checked the flows").await?;
        let ran =
            run_approved(&gate, &[&executor], "demo", std::time::Duration::from_secs(60)).await?;
        let done = gate.get(&proposal.id).await?;
        writeln!(
            out,
            "  bea approves ({} of {} approvals): {ran} action ran, {}",
            approved.approvals.len(),
            approved.needed,
            done.state.as_str()
        )?;
        let check = audit::verify(&store).await?;
        writeln!(
            out,
            "  audit trail: {} records, chain {}",
            check.records,
            if check.ok { "holds" } else { "BROKEN" }
        )?;
        anyhow::Ok(())
    })
}
