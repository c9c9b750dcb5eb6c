//! The replay tenant answers XQL the way the flows it was loaded from say it should:
//! every figure below is computed a second time straight from the flows.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::OnceLock;

use pivotwatch::ingest::sim::{CONN_LOG_FILE, INVENTORY_FILE, SimConfig, simulate};
use pivotwatch::ingest::{read_flows, read_inventory};
use pivotwatch::model::{Flow, Inventory, is_internal};
use pivotwatch::xdr::Timeframe;
use pivotwatch::xdr::flows::flow_from_row;
use pivotwatch::xdr::replay::{Replay, ReplayQueryError};
use serde_json::Value;
use tempfile::TempDir;

struct Fixture {
    _dir: TempDir,
    replay: Replay,
    flows: Vec<Flow>,
    inventory: Inventory,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = TempDir::new().unwrap();
        let sim = dir.path().join("sim");
        let cfg = SimConfig { devices: 24, days: 3, seed: 11, start: SimConfig::DEFAULT_START };
        simulate(&cfg, &sim).unwrap();
        let data_dir = dir.path().join("data");
        let inventory_path = sim.join(INVENTORY_FILE);
        let info =
            Replay::load(&data_dir, Some(&inventory_path), &[sim.join(CONN_LOG_FILE)]).unwrap();
        let mut flows = Vec::new();
        read_flows(&sim.join(CONN_LOG_FILE), &mut |f| flows.push(*f)).unwrap();
        assert_eq!(info.flows, flows.len() as u64);
        let inventory = read_inventory(&inventory_path).unwrap();
        let replay = Replay::open(&data_dir).unwrap();
        Fixture { _dir: dir, replay, flows, inventory }
    })
}

fn rows(query: &str) -> Vec<serde_json::Map<String, Value>> {
    fixture().replay.query(query, None).unwrap_or_else(|err| panic!("{query}: {err}")).to_rows()
}

fn ms(ts: f64) -> i64 {
    (ts * 1000.0).round() as i64
}

#[test]
fn counts_by_device_match_the_flows() {
    let got: BTreeMap<String, i64> = rows(
        "dataset = xdr_data | filter action_remote_port = 443 \
         | comp count() as n by action_local_ip",
    )
    .into_iter()
    .map(|r| (r["action_local_ip"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap()))
    .collect();
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for flow in fixture().flows.iter().filter(|f| f.resp_p == 443) {
        *want.entry(flow.orig_h.to_string()).or_default() += 1;
    }
    assert!(want.len() > 5, "the fixture should have several HTTPS talkers");
    assert_eq!(got, want);
}

#[test]
fn firewall_view_sums_bytes_of_external_traffic() {
    let got = rows(
        "dataset = panw_ngfw_traffic_raw \
         | filter dest_ip not incidr \"10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16\" \
         | comp sum(bytes_sent) as sent, count_distinct(dest_ip) as peers, count() as n",
    );
    let external: Vec<&Flow> = fixture()
        .flows
        .iter()
        .filter(|f| !matches!(f.resp_h, IpAddr::V4(v4) if v4.is_private()))
        .collect();
    let sent: u64 = external.iter().map(|f| f.orig_bytes).sum();
    let peers: BTreeSet<IpAddr> = external.iter().map(|f| f.resp_h).collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["n"].as_u64().unwrap(), external.len() as u64);
    assert_eq!(got[0]["sent"].as_u64().unwrap(), sent);
    assert_eq!(got[0]["peers"].as_u64().unwrap(), peers.len() as u64);
}

#[test]
fn timeframes_narrow_to_the_end_of_the_recording() {
    let f = fixture();
    let last = f.flows.iter().map(|f| ms(f.ts)).max().unwrap();
    let want = f.flows.iter().filter(|f| ms(f.ts) > last + 1 - 6 * 3_600_000).count() as i64;
    let in_query = rows("config timeframe = 6h | dataset = xdr_data | comp count() as n");
    assert_eq!(in_query[0]["n"].as_i64().unwrap(), want);
    let from_caller = f
        .replay
        .query(
            "dataset = xdr_data | comp count() as n",
            Some(&Timeframe::Relative { millis: 6 * 3_600_000 }),
        )
        .unwrap()
        .to_rows();
    assert_eq!(from_caller[0]["n"].as_i64().unwrap(), want);
    assert!(want > 0 && (want as usize) < f.flows.len());
}

#[test]
fn night_hours_join_with_the_inventory() {
    let f = fixture();
    let got: BTreeMap<String, i64> = rows(
        "dataset = xdr_data \
         | alter hour = extract_time(_time, \"HOUR\") | filter hour >= 0 and hour < 5 \
         | filter action_remote_ip not incidr \"10.0.0.0/8,172.16.0.0/12,192.168.0.0/16\" \
         | join (dataset = asset_inventory | fields xdm.asset.ipv4_addresses, xdm.asset.type.name) \
           as a a.xdm.asset.ipv4_addresses = action_local_ip \
         | comp count() as n by xdm.asset.type.name",
    )
    .into_iter()
    .map(|r| (r["xdm.asset.type.name"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap()))
    .collect();
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for flow in &f.flows {
        let hour = (ms(flow.ts).div_euclid(3_600_000)).rem_euclid(24);
        let private = matches!(flow.resp_h, IpAddr::V4(v4) if v4.is_private());
        if hour < 5
            && !private
            && let Some(device) = f.inventory.by_ip(&flow.orig_h)
        {
            *want.entry(device.device_type.clone()).or_default() += 1;
        }
    }
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

#[test]
fn sort_limit_dedup_and_top_agree() {
    let top = rows("dataset = xdr_data | top 3 action_remote_port");
    let sorted = rows(
        "dataset = xdr_data | comp count() as n by action_remote_port | sort desc n | limit 3",
    );
    assert_eq!(top.len(), 3);
    for (t, s) in top.iter().zip(&sorted) {
        assert_eq!(t["action_remote_port"], s["action_remote_port"]);
        assert_eq!(t["count"], s["n"]);
    }
    let counts: Vec<i64> = sorted.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");

    let distinct = rows("dataset = xdr_data | dedup action_local_ip | fields action_local_ip");
    let want: BTreeSet<IpAddr> = fixture().flows.iter().map(|f| f.orig_h).collect();
    assert_eq!(distinct.len(), want.len());
}

#[test]
fn string_comparisons_ignore_case_unless_told_otherwise() {
    let all = rows("dataset = xdr_data | comp count() as n")[0]["n"].as_i64().unwrap();
    let loose = rows("dataset = xdr_data | filter event_type = \"story\" | comp count() as n");
    assert_eq!(loose[0]["n"].as_i64().unwrap(), all);
    let strict = rows(
        "config case_sensitive = true | dataset = xdr_data | filter event_type = \"story\" \
         | comp count() as n",
    );
    assert_eq!(strict[0]["n"].as_i64().unwrap(), 0);
    let proto =
        rows("dataset = xdr_data | filter action_network_protocol in (UDP) | comp count() as n");
    let udp = fixture().flows.iter().filter(|f| f.proto.as_str() == "udp").count();
    assert_eq!(proto[0]["n"].as_i64().unwrap(), udp as i64);
}

#[test]
fn refusals_and_mistakes_are_named() {
    let replay = &fixture().replay;
    let err = replay.query("dataset = xdr_data | target type = dataset copy", None).unwrap_err();
    assert!(matches!(err, ReplayQueryError::Refused(_)), "{err}");
    let err = replay.query("dataset = xdr_data | filter agent_hostnme = \"x\"", None).unwrap_err();
    assert!(err.to_string().contains("did you mean `agent_hostname`"), "{err}");
    let err = replay.query("dataset = xdr_data | transaction action_local_ip", None).unwrap_err();
    assert!(err.to_string().contains("not supported by the local replay tenant"), "{err}");
    let err = replay.query("dataset = xdr_data | filter lowercase() = 1", None).unwrap_err();
    assert!(err.to_string().contains("takes 1 argument"), "{err}");
}

#[test]
fn external_traffic_is_visible_with_internal_ranges_excluded() {
    // The same answer from `incidr` as from the model's own notion of internal.
    let got = rows(
        "dataset = xdr_data | filter not incidr(action_remote_ip, \"10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,127.0.0.0/8,169.254.0.0/16,224.0.0.0/4,255.255.255.255/32,0.0.0.0/32\") \
         | comp count() as n",
    );
    let want = fixture().flows.iter().filter(|f| !is_internal(&f.resp_h)).count();
    assert_eq!(got[0]["n"].as_i64().unwrap(), want as i64);
}

/// A session as the firewall view can carry it: start in milliseconds, the endpoints,
/// the duration in whole seconds, and the bytes and packets each way.
type Session = (i64, IpAddr, u16, IpAddr, u16, u64, u64, u64, u64, u64);

fn session(flow: &Flow) -> Session {
    // The firewall counts whole seconds, so a source flow's duration is truncated.
    let whole_secs = flow.duration.trunc() as u64;
    (
        ms(flow.ts),
        flow.orig_h,
        flow.orig_p,
        flow.resp_h,
        flow.resp_p,
        whole_secs,
        flow.orig_bytes,
        flow.resp_bytes,
        flow.orig_pkts,
        flow.resp_pkts,
    )
}

#[test]
fn firewall_rows_convert_back_into_the_flows_they_came_from() {
    let f = fixture();
    let table = f.replay.query("dataset = panw_ngfw_traffic_raw", None).unwrap();
    let mut got: Vec<Session> = table
        .to_rows()
        .iter()
        .map(|row| session(&flow_from_row(row).unwrap_or_else(|err| panic!("{err}: {row:?}"))))
        .collect();
    let mut want: Vec<Session> = f.flows.iter().map(session).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert!(want.iter().filter(|s| s.5 > 0).count() > 100, "many flows last a second or more");
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the firewall rows do not give back the flows");
}

#[test]
fn story_rows_convert_back_into_the_flows_they_came_from() {
    let f = fixture();
    let table = f.replay.query("dataset = xdr_data", None).unwrap();
    let rows = table.to_rows();
    assert!(rows.iter().all(|row| row["action_network_is_server"] == Value::Bool(false)));
    let mut got: Vec<Session> = rows
        .iter()
        .map(|row| session(&flow_from_row(row).unwrap_or_else(|err| panic!("{err}: {row:?}"))))
        .collect();
    // A story carries no duration.
    let mut want: Vec<Session> =
        f.flows.iter().map(|flow| session(&Flow { duration: 0.0, ..*flow })).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the story rows do not give back the flows");
}

/// A tenant of its own, with incidents filed from detection, for tests that change it.
fn fresh_tenant_with_incidents() -> (TempDir, Replay) {
    let dir = TempDir::new().unwrap();
    let sim = dir.path().join("sim");
    let cfg = SimConfig { devices: 30, days: 4, seed: 5, start: SimConfig::DEFAULT_START };
    let summary = simulate(&cfg, &sim).unwrap();
    let data_dir = dir.path().join("data");
    Replay::load(&data_dir, Some(&sim.join(INVENTORY_FILE)), &[sim.join(CONN_LOG_FILE)]).unwrap();
    let replay = Replay::open(&data_dir).unwrap();
    let input = pivotwatch::pipeline::DetectInput {
        inventory: replay.inventory_file(),
        flows: replay.flow_files(),
        baseline: pivotwatch::pipeline::BaselineSource::Until(summary.baseline_until),
    };
    let detection = pivotwatch::pipeline::detect_files(Default::default(), &input, &mut |_| {})
        .unwrap()
        .detection;
    let n_alerting = detection.findings.iter().filter(|f| f.severity.is_alert()).count();
    assert!(n_alerting > 0, "the simulated attacks should raise alerts");
    assert_eq!(replay.import_findings(&detection.findings).unwrap(), n_alerting);
    (dir, replay)
}

#[tokio::test]
async fn the_replay_tenant_keeps_incidents_updates_and_actions_across_restarts() {
    use pivotwatch::xdr::{
        EndpointFilter, EndpointQuery, IncidentFilter, IncidentQuery, IncidentSort, IncidentStatus,
        IncidentUpdate, SortOrder, Xdr, XdrError, XqlRequest,
    };
    let (dir, replay) = fresh_tenant_with_incidents();

    // Incidents group the alerts per device, newest first when asked.
    let all = replay
        .list_incidents(&IncidentQuery::new().sort(IncidentSort::CreationTime, SortOrder::Desc))
        .await
        .unwrap();
    assert!(all.total_count.unwrap() >= 2);
    let created: Vec<i64> = all.items.iter().map(|i| i.creation_time.unwrap()).collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");
    let first = &all.items[0];
    let extra = replay.incident_extra_data(&first.incident_id, 100).await.unwrap();
    assert_eq!(extra.alerts.data.len() as u64, first.alert_count.unwrap());
    assert!(!extra.network_artifacts.data.is_empty());

    let page = replay.list_incidents(&IncidentQuery::new().page(1, 1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.total_count, all.total_count);

    // A comment and a status change survive reopening the tenant.
    let update = IncidentUpdate {
        status: Some(IncidentStatus::UnderInvestigation),
        comment: Some("pivotwatch triage: outbound SSH from a monitor".into()),
        ..Default::default()
    };
    replay.update_incident(&first.incident_id, &update).await.unwrap();
    let data_dir = dir.path().join("data");
    let reopened = Replay::open(&data_dir).unwrap();
    let investigating = reopened
        .list_incidents(
            &IncidentQuery::new()
                .filter(IncidentFilter::Status(IncidentStatus::UnderInvestigation)),
        )
        .await
        .unwrap();
    assert_eq!(investigating.items.len(), 1);
    let comments = &investigating.items[0].extra["comments"];
    assert_eq!(comments[0]["comment"], "pivotwatch triage: outbound SSH from a monitor");

    // Isolating a server is an action whose status can be read back, and audited.
    let endpoints = reopened.get_endpoints(&EndpointQuery::new()).await.unwrap();
    let target = endpoints.items[0].endpoint_id.clone();
    let action = reopened.isolate_endpoint(&target, None).await.unwrap();
    let status = reopened.action_status(&action.action_id).await.unwrap();
    assert_eq!(status.data[&target], "COMPLETED_SUCCESSFULLY");
    let isolated = reopened
        .get_endpoints(&EndpointQuery::new().filter(EndpointFilter::Isolated(true)))
        .await
        .unwrap();
    assert_eq!(isolated.items.len(), 1, "{:?}", isolated.items);
    let audit = reopened.audit_management_logs(&Default::default()).await.unwrap();
    assert_eq!(audit.items.len(), 2, "one update and one isolation");

    // Mistakes are named, and nothing is half-applied.
    let err = reopened.isolate_endpoint("ep-nowhere", None).await.unwrap_err();
    assert!(err.to_string().contains("no endpoint was found"), "{err}");
    let err = reopened
        .insert_parsed_alerts_wire(&[serde_json::json!({"product": "p", "vendor": "v",
            "local_ip": "10.0.0.1", "remote_ip": "10.0.0.2", "remote_port": "http",
            "severity": "High", "alert_name": "x"})])
        .unwrap_err();
    assert!(
        err.message.contains("alerts[0]: remote_port \"http\" is not a port"),
        "{}",
        err.message
    );
    let rows = reopened.run_xql(&XqlRequest::new("dataset = xdr_data | limit 3")).await.unwrap();
    assert_eq!(rows.rows.len(), 3);
    let refused = reopened
        .run_xql(&XqlRequest::new("dataset = xdr_data | target type = dataset x"))
        .await
        .unwrap_err();
    assert!(matches!(refused, XdrError::QueryRefused { .. }), "{refused:?}");
    assert!(refused.to_string().starts_with("query refused: "), "{refused}");
}
