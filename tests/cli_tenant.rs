//! The command line against a tenant: `pivotwatch xdr-sim` serves a replay tenant over
//! the Cortex XDR API and `pivotwatch xql run`, given its URL and key, asks it over
//! HTTP and gets what the same command prints from the replay tenant directly.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use pivotwatch::ingest::sim::{CONN_LOG_FILE, INVENTORY_FILE, SimConfig, simulate};
use pivotwatch::xdr::replay::Replay;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_pivotwatch");
const KEY_ID: &str = "9";
const KEY: &str = "cli-test-key-abcdef0123456789";

/// Ends the simulator however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tenant() -> TempDir {
    let dir = TempDir::new().unwrap();
    let sim = dir.path().join("sim");
    let cfg = SimConfig { devices: 12, days: 2, seed: 3, start: SimConfig::DEFAULT_START };
    simulate(&cfg, &sim).unwrap();
    Replay::load(dir.path(), Some(&sim.join(INVENTORY_FILE)), &[sim.join(CONN_LOG_FILE)]).unwrap();
    dir
}

/// Starts `xdr-sim` on a free port and returns it with its base URL.
fn serve(data_dir: &Path, key_type: &str) -> (Running, String) {
    let mut child = Command::new(BIN)
        .args(["xdr-sim", "--listen", "127.0.0.1:0", "--query-latency", "50ms", "--data-dir"])
        .arg(data_dir)
        .env("PIVOTWATCH_XDR_API_KEY_ID", KEY_ID)
        .env("PIVOTWATCH_XDR_API_KEY", KEY)
        .env("PIVOTWATCH_XDR_KEY_TYPE", key_type)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let running = Running(child);
    let start = line.find("http://").unwrap_or_else(|| panic!("no address in {line:?}"));
    let end = line[start..].find("/public_api").unwrap() + start;
    assert!(!line.contains(KEY), "the key must not be printed: {line}");
    (running, line[start..end].to_string())
}

fn xql_run(query: &str, data_dir: &Path, remote: Option<(&str, &str)>) -> Output {
    let mut command = Command::new(BIN);
    command.args(["xql", "run", query, "--json", "--limit", "1000", "--data-dir"]).arg(data_dir);
    for var in ["PIVOTWATCH_XDR_URL", "PIVOTWATCH_XDR_API_KEY_ID", "PIVOTWATCH_XDR_API_KEY"] {
        command.env_remove(var);
    }
    if let Some((url, key_type)) = remote {
        command
            .env("PIVOTWATCH_XDR_URL", url)
            .env("PIVOTWATCH_XDR_API_KEY_ID", KEY_ID)
            .env("PIVOTWATCH_XDR_API_KEY", KEY)
            .env("PIVOTWATCH_XDR_KEY_TYPE", key_type);
    }
    command.output().unwrap()
}

fn lines(output: &Output) -> Vec<serde_json::Value> {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn xql_run_over_http_prints_what_the_replay_tenant_answers() {
    let dir = tenant();
    let (_sim, url) = serve(dir.path(), "advanced");
    let query = "dataset = panw_ngfw_traffic_raw | filter dest_port in (443, 502, 47808) \
                 | comp count() as sessions, sum(bytes_sent) as sent by source_ip, dest_port \
                 | sort asc source_ip, asc dest_port";
    let local = lines(&xql_run(query, dir.path(), None));
    let remote = lines(&xql_run(query, dir.path(), Some((&url, "advanced"))));
    assert!(local.len() > 5, "{local:?}");
    assert_eq!(remote, local);

    // A query that writes is refused before it is sent, with its own exit code.
    let refused = xql_run(
        "dataset = xdr_data | target type = dataset x",
        dir.path(),
        Some((&url, "advanced")),
    );
    assert_eq!(refused.status.code(), Some(3), "{}", String::from_utf8_lossy(&refused.stderr));
    // A syntax error the tenant reports is exit 1 with the tenant's message.
    let unknown = xql_run(
        "dataset = xdr_data | filter action_remot_port = 1",
        dir.path(),
        Some((&url, "advanced")),
    );
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("action_remote_port"));
    // The wrong key type is refused by the tenant as unauthorised.
    let wrong = xql_run("dataset = xdr_data | limit 1", dir.path(), Some((&url, "standard")));
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.to_ascii_lowercase().contains("unauthori"), "{stderr}");
    assert!(!stderr.contains(KEY), "{stderr}");
}

#[test]
fn a_url_without_a_key_is_a_configuration_error_naming_the_setting() {
    let dir = TempDir::new().unwrap();
    let output = Command::new(BIN)
        .args(["xql", "run", "dataset = xdr_data | limit 1", "--data-dir"])
        .arg(dir.path())
        .env("PIVOTWATCH_XDR_URL", "https://api-example.xdr.eu.paloaltonetworks.com")
        .env("PIVOTWATCH_XDR_API_KEY_ID", "3")
        .env_remove("PIVOTWATCH_XDR_API_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("xdr.api_key") && stderr.contains("PIVOTWATCH_XDR_API_KEY"),
        "{stderr}"
    );
}
