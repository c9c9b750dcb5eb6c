//! XQL benchmarks: parsing speed on typical hunting queries, and the replay engine's
//! rows per second on `filter | comp count() by` over a simulated fleet.
//!
//! `cargo bench --bench xql` (set `BENCH_XQL_DEVICES` / `BENCH_XQL_DAYS` for another
//! fleet; the default is 100 devices over 14 days, about two million flows). Each
//! figure is the median of several runs in this one process, with a plain Rust loop
//! over the same flows as the peer that sets the floor for the engine.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use pivotwatch::ingest::read_flows;
use pivotwatch::ingest::sim::{CONN_LOG_FILE, INVENTORY_FILE, SimConfig, simulate};
use pivotwatch::model::Flow;
use pivotwatch::xdr::replay::Replay;
use pivotwatch::xql;

const QUERIES: [&str; 6] = [
    "config timeframe = 24h | dataset = xdr_data | filter event_type = STORY and action_remote_port = 22 | comp count() as n by action_local_ip",
    "dataset = panw_ngfw_traffic_raw | filter dest_ip not incidr \"10.0.0.0/8,172.16.0.0/12,192.168.0.0/16\" and extract_time(_time, \"HOUR\") < 5 | comp count() as flows, count_distinct(dest_ip) as peers by source_ip | sort desc flows | limit 20",
    "config timeframe = 7d | dataset = xdr_data | filter action_local_ip in (\"10.20.1.17\", \"10.20.1.18\") | fields _time, action_local_ip, action_remote_ip, action_remote_port, action_total_upload | sort desc _time | limit 100",
    "dataset = xdr_data | filter action_remote_port in (502, 102, 44818) | join (dataset = asset_inventory | fields xdm.asset.ipv4_addresses, xdm.asset.type.name) as a a.xdm.asset.ipv4_addresses = action_remote_ip | comp count() as n by action_local_ip, xdm.asset.type.name",
    "dataset = xdr_data | alter mb = divide(action_total_upload, 1048576) | filter mb > 100 | bin _time span = 1h | comp sum(mb) as total_mb by _time, action_local_ip",
    "dataset = xdr_data // beacons\n| filter action_remote_port = 443 | comp count() as n, values(action_remote_ip) as peers by action_local_ip | filter n > 50",
];

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn time_runs(runs: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..runs)
            .map(|_| {
                let started = Instant::now();
                f();
                started.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let env = |name: &str, default: usize| {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    };

    let per_run = 20_000;
    let parse_secs = time_runs(7, || {
        for i in 0..per_run {
            black_box(xql::parse(black_box(QUERIES[i % QUERIES.len()])).ok());
        }
    });
    let lex_secs = time_runs(7, || {
        for i in 0..per_run {
            black_box(xql::lexer::tokenize(black_box(QUERIES[i % QUERIES.len()])).ok());
        }
    });
    let parse_rate = per_run as f64 / parse_secs;
    println!(
        "parse: {parse_rate:.0} queries/s (median of 7 runs of {per_run}); tokenizing alone \
         {:.0}/s, so parsing costs {:.2}x tokenizing",
        per_run as f64 / lex_secs,
        parse_secs / lex_secs
    );

    let dir = tempfile::TempDir::new().expect("a temporary folder");
    let cfg = SimConfig {
        devices: env("BENCH_XQL_DEVICES", 100),
        days: env("BENCH_XQL_DAYS", 14) as u32,
        seed: 7,
        start: SimConfig::DEFAULT_START,
    };
    let sim = dir.path().join("sim");
    simulate(&cfg, &sim).expect("simulating the fleet");
    let data_dir = dir.path().join("data");
    let flow_file = sim.join(CONN_LOG_FILE);
    Replay::load(&data_dir, Some(&sim.join(INVENTORY_FILE)), std::slice::from_ref(&flow_file))
        .expect("loading the replay tenant");
    let started = Instant::now();
    let replay = Replay::open(&data_dir).expect("opening the replay tenant");
    let open_secs = started.elapsed().as_secs_f64();
    let n_rows = replay.info().flows as f64;

    let query = "dataset = xdr_data | filter action_remote_port = 443 \
                 | comp count() as n by action_local_ip";
    let engine_secs = time_runs(7, || {
        black_box(replay.query(query, None).expect("the benchmark query runs").n_rows());
    });
    let query_str = "dataset = xdr_data | filter action_network_protocol = \"udp\" \
                     | comp count() as n by action_local_ip";
    let engine_str_secs = time_runs(7, || {
        black_box(replay.query(query_str, None).expect("the benchmark query runs").n_rows());
    });

    let mut flows: Vec<Flow> = Vec::new();
    read_flows(&flow_file, &mut |f| flows.push(*f)).expect("reading the flows");
    let loop_secs = time_runs(7, || {
        let mut counts: HashMap<std::net::IpAddr, u64> = HashMap::new();
        for flow in black_box(&flows) {
            if flow.resp_p == 443 {
                *counts.entry(flow.orig_h).or_default() += 1;
            }
        }
        black_box(counts.len());
    });

    println!(
        "replay open: {n_rows:.0} flows read into three datasets in {open_secs:.2} s ({:.0} flows/s)",
        n_rows / open_secs
    );
    println!(
        "engine, filter port | comp count() by ip: {:.0} rows/s ({:.1} ms); on a string \
         column {:.0} rows/s ({:.1} ms)",
        n_rows / engine_secs,
        engine_secs * 1e3,
        n_rows / engine_str_secs,
        engine_str_secs * 1e3
    );
    println!(
        "peer, a Rust loop over Vec<Flow> with a HashMap: {:.0} rows/s ({:.1} ms); engine / \
         loop time ratio {:.2}",
        n_rows / loop_secs,
        loop_secs * 1e3,
        engine_secs / loop_secs
    );
}
