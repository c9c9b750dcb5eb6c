//! The ServiceNow, XSOAR and PAN-OS executors against local servers that speak the vendors'
//! formats: exact request bodies and headers, the failure paths (401, 429, 500,
//! silence), one effect per proposal however often it is retried, and no credential in
//! the audit trail.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use pivotwatch::actions::{
    Action, Executor, Gate, Outcome, PanosConfig, PanosCredentials, PanosExecutor, Policy, Secret,
    ServiceNowAuth, ServiceNowConfig, ServiceNowExecutor, State, Users, XsoarConfig, XsoarExecutor,
    run_approved,
};
use pivotwatch::audit::{self, Actor};
use pivotwatch::store::now_ms;

mod common;
use common::sqlite;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/integrations");
const PASSWORD: &str = "sn0w-Pa55word-for-tests";
const PAN_KEY: &str = "LUFRPT1EXAMPLEONLYnotARealKey=";
const USERS: &str = "[[user]]\nname = \"bea\"\nroles = [\"approver\"]\n";

#[derive(Clone)]
struct Seen {
    method: Method,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A scripted vendor: answers from a queue (then the default), records every request.
struct Vendor {
    script: Mutex<VecDeque<(u16, String)>>,
    default: (u16, String),
    seen: Mutex<Vec<Seen>>,
}

async fn handle(
    AxState(vendor): AxState<Arc<Vendor>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    vendor.seen.lock().unwrap().push(Seen { method, uri: uri.to_string(), headers, body });
    let (status, text) =
        vendor.script.lock().unwrap().pop_front().unwrap_or_else(|| vendor.default.clone());
    if status == 0 {
        // Silence: never answer within the client's timeout.
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let mut response = (StatusCode::from_u16(status.max(200)).unwrap(), text).into_response();
    if status == 429 {
        // This vendor asks throttled callers to wait two minutes.
        response.headers_mut().insert("retry-after", "120".parse().unwrap());
    }
    response
}

async fn serve_vendor(default: (u16, String), script: Vec<(u16, String)>) -> (Arc<Vendor>, String) {
    let vendor = Arc::new(Vendor {
        script: Mutex::new(script.into()),
        default,
        seen: Mutex::new(Vec::new()),
    });
    let app = Router::new().fallback(handle).with_state(Arc::clone(&vendor));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (vendor, format!("http://{addr}"))
}

fn sample(path: &str) -> String {
    std::fs::read_to_string(format!("{DATA}/{path}")).unwrap()
}

fn servicenow(base_url: &str) -> ServiceNowExecutor {
    ServiceNowExecutor::new(ServiceNowConfig {
        base_url: base_url.into(),
        auth: ServiceNowAuth::Basic {
            user: "svc.pivotwatch".into(),
            password: Secret::new(PASSWORD),
        },
        caller_id: "soc.copilot".into(),
        timeout: Duration::from_millis(500),
    })
    .unwrap()
}

/// A ServiceNow executor using OAuth's password grant against `base_url`.
fn servicenow_oauth(base_url: String) -> ServiceNowExecutor {
    ServiceNowExecutor::new(ServiceNowConfig {
        base_url,
        auth: ServiceNowAuth::OAuth {
            client_id: "pw-client".into(),
            client_secret: Secret::new("cl1ent-s3cret"),
            user: "svc".into(),
            password: Secret::new(PASSWORD),
        },
        caller_id: "soc.copilot".into(),
        timeout: Duration::from_millis(500),
    })
    .unwrap()
}

fn incident() -> Action {
    let request: Value = serde_json::from_str(&sample(
        "servicenow/table_api_create_incident_request.synthetic.json",
    ))
    .unwrap();
    Action::from_parts(
        "servicenow_incident",
        json!({"short_description": request["short_description"],
               "description": "DAG tag registered on fw-dc1 (timeout 3600s).",
               "urgency": 2, "impact": 2, "assignment_group": request["assignment_group"]}),
    )
    .unwrap()
}

/// Proposes and approves `action`; returns the gate and the proposal id.
async fn approved(db: &common::Db, action: Action) -> (Gate, String) {
    let gate = Gate::new(db.store.clone(), Policy::default(), Users::parse(USERS).unwrap());
    let p = gate.propose(action, &Actor::Agent, "test").await.unwrap().unwrap();
    gate.approve(&p.id, "bea", "ok").await.unwrap();
    (gate, p.id)
}

/// Runs due executions now, with retries made due at once.
async fn run(db: &common::Db, gate: &Gate, executor: &dyn Executor) {
    sqlx::query("UPDATE jobs SET run_after_ms = 0 WHERE state = 'queued'")
        .execute(db.store.pool())
        .await
        .unwrap();
    run_approved(gate, &[executor], "test", Duration::from_secs(60)).await.unwrap();
}

#[tokio::test]
async fn an_incident_is_opened_once_with_the_documented_body() {
    let db = sqlite().await;
    let created = sample("servicenow/table_api_create_incident_response.json");
    let none = json!({"result": []}).to_string();
    // Lookup finds nothing; the create times out (the incident may or may not exist);
    // the retry's lookup finds it and opens nothing more.
    let found = json!({"result": [{"sys_id": "abc123", "number": "INC0010007"}]}).to_string();
    let (vendor, url) = serve_vendor(
        (500, "{}".into()),
        vec![(200, none.clone()), (0, String::new()), (200, found)],
    )
    .await;
    let executor = servicenow(&url);
    let (gate, id) = approved(&db, incident()).await;

    run(&db, &gate, &executor).await;
    assert_eq!(gate.get(&id).await.unwrap().state, State::Executing, "a timeout is retried");
    run(&db, &gate, &executor).await;
    assert_eq!(gate.get(&id).await.unwrap().state, State::Succeeded);

    let seen = vendor.seen.lock().unwrap().clone();
    let posts: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::POST).collect();
    assert_eq!(posts.len(), 1, "one create, however often the action ran");
    let body: Value = serde_json::from_slice(&posts[0].body).unwrap();
    let expected: Value = serde_json::from_str(&sample(
        "servicenow/table_api_create_incident_request.synthetic.json",
    ))
    .unwrap();
    for field in
        ["short_description", "urgency", "impact", "assignment_group", "caller_id", "category"]
    {
        assert_eq!(body[field], expected[field], "{field}");
    }
    assert_eq!(body["correlation_id"], id.as_str());
    assert!(posts[0].uri.starts_with("/api/now/table/incident"), "{}", posts[0].uri);
    let auth = posts[0].headers["authorization"].to_str().unwrap();
    assert!(auth.starts_with("Basic "), "{auth}");
    assert_eq!(posts[0].headers["accept"], "application/json");
    let lookups: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::GET).collect();
    assert_eq!(lookups.len(), 2);
    assert!(lookups[1].uri.contains(&format!("correlation_id%3D{id}")), "{}", lookups[1].uri);

    // With a fresh vendor that answers the create, the record comes back with its number.
    let (_, url) = serve_vendor((201, created), vec![(200, none)]).await;
    let (gate2, id2) = approved(&db, incident()).await;
    run(&db, &gate2, &servicenow(&url)).await;
    assert_eq!(gate2.get(&id2).await.unwrap().state, State::Succeeded);
    let exported = serde_json::to_string(&audit::export(&db.store, 0).await.unwrap()).unwrap();
    assert!(exported.contains("INC0010007"), "the execution record names the incident");
    assert!(!exported.contains(PASSWORD));
}

#[tokio::test]
async fn refusals_are_final_and_overload_is_retried() {
    let db = sqlite().await;
    let unauthorized = sample("servicenow/table_api_error_401.synthetic.json");
    let (_, url) = serve_vendor((401, unauthorized), vec![]).await;
    let (gate, id) = approved(&db, incident()).await;
    run(&db, &gate, &servicenow(&url)).await;
    let p = gate.get(&id).await.unwrap();
    assert_eq!(p.state, State::Failed);
    let detail: String = sqlx::query_scalar("SELECT detail FROM executions WHERE proposal_id = $1")
        .bind(&id)
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert!(detail.contains("User Not Authenticated"), "{detail}");

    let forbidden = json!({"error": {"message": "Operation Failed",
                                     "detail": "ACL Exception Insert Failed due to security constraints"},
                           "status": "failure"})
    .to_string();
    let none = json!({"result": []}).to_string();
    let (_, url) = serve_vendor((403, forbidden), vec![(200, none)]).await;
    let (gate, id) = approved(&db, incident()).await;
    run(&db, &gate, &servicenow(&url)).await;
    assert_eq!(gate.get(&id).await.unwrap().state, State::Failed, "a 403 is final");

    for status in [429, 500, 503] {
        let (vendor, url) = serve_vendor((status, "{}".into()), vec![]).await;
        let (gate, id) = approved(&db, incident()).await;
        let executor = servicenow(&url);
        run(&db, &gate, &executor).await;
        run(&db, &gate, &executor).await;
        assert_eq!(gate.get(&id).await.unwrap().state, State::Executing, "HTTP {status}");
        let run_after: i64 =
            sqlx::query_scalar("SELECT run_after_ms FROM jobs WHERE payload LIKE $1")
                .bind(format!("%{id}%"))
                .fetch_one(db.store.pool())
                .await
                .unwrap();
        if status == 429 {
            assert!(run_after >= now_ms() + 115_000, "Retry-After is honoured");
        } else {
            assert!(run_after <= now_ms() + 10_000, "a 5xx backs off by seconds");
        }
        // Each run looked the incident up once and got the overload answer: nothing
        // was created.
        assert!(vendor.seen.lock().unwrap().iter().all(|s| s.method == Method::GET));
    }
}

fn panos(base_url: &str) -> PanosExecutor {
    panos_with(base_url, PanosCredentials::ApiKey(Secret::new(PAN_KEY)))
}

fn panos_with(base_url: &str, credentials: PanosCredentials) -> PanosExecutor {
    PanosExecutor::new(PanosConfig {
        base_url: base_url.into(),
        credentials,
        vsys: Some("vsys1".into()),
        target: None,
        timeout: Duration::from_millis(500),
        poll_interval: Duration::from_millis(5),
        max_wait: Duration::from_secs(5),
    })
    .unwrap()
}

fn squeeze(xml: &str) -> String {
    xml.split_whitespace().collect::<Vec<_>>().join("").replace("member", "member ")
}

#[tokio::test]
async fn quarantine_and_release_send_the_user_id_messages() {
    let db = sqlite().await;
    let success = "<response status=\"success\"><result><uid-response><version>2.0</version>\
                   <payload><register/></payload></uid-response></result></response>";
    let (vendor, url) = serve_vendor((200, success.into()), vec![]).await;
    let executor = panos(&url);
    let quarantine = Action::from_parts(
        "quarantine_device",
        json!({"device_id": "cam-0005", "ip": "10.1.2.3", "tag": "quarantine",
               "timeout_secs": 3600, "criticality": "medium"}),
    )
    .unwrap();
    let (gate, id) = approved(&db, quarantine).await;
    run(&db, &gate, &executor).await;
    assert_eq!(gate.get(&id).await.unwrap().state, State::Succeeded);
    let release = Action::from_parts(
        "release_device",
        json!({"device_id": "cam-0005", "ip": "10.1.2.3", "tag": "quarantine"}),
    )
    .unwrap();
    let (gate, id) = approved(&db, release).await;
    run(&db, &gate, &executor).await;
    assert_eq!(gate.get(&id).await.unwrap().state, State::Succeeded);

    let seen = vendor.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (request, expected) in seen.iter().zip([
        "panos/uid_message_register_quarantine.synthetic.xml",
        "panos/uid_message_unregister_quarantine.synthetic.xml",
    ]) {
        assert_eq!(request.uri, "/api/");
        assert_eq!(request.headers["x-pan-key"], PAN_KEY);
        let form: Vec<(String, String)> = form_pairs(&request.body);
        let get = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("type").as_deref(), Some("user-id"));
        assert_eq!(get("vsys").as_deref(), Some("vsys1"));
        assert_eq!(squeeze(&get("cmd").unwrap()), squeeze(&sample(expected)), "{expected}");
        assert!(get("key").is_none(), "the key travels in a header, not the body");
    }
    let exported = serde_json::to_string(&audit::export(&db.store, 0).await.unwrap()).unwrap();
    assert!(!exported.contains(PAN_KEY));
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

#[tokio::test]
async fn a_firewall_error_answer_fails_the_action_with_its_message() {
    let db = sqlite().await;
    let error = "<response status=\"error\" code=\"403\"><result><msg>Invalid credentials.</msg>\
                 </result></response>";
    let (_, url) = serve_vendor((200, error.into()), vec![]).await;
    let quarantine = Action::from_parts(
        "quarantine_device",
        json!({"device_id": "cam-0005", "ip": "10.1.2.3", "tag": "quarantine",
               "timeout_secs": 60, "criticality": "low"}),
    )
    .unwrap();
    let (gate, id) = approved(&db, quarantine).await;
    let outcome = {
        let approved = gate.claim_approved("t", 60_000, now_ms()).await.unwrap().unwrap();
        let outcome = panos(&url).execute(&approved).await;
        gate.finish(approved, outcome.clone(), now_ms()).await.unwrap();
        outcome
    };
    assert_eq!(outcome, Outcome::Failed("PAN-OS refused the request: Invalid credentials.".into()));
    assert_eq!(gate.get(&id).await.unwrap().state, State::Failed);
}

fn xsoar(base_url: &str, key_id: Option<&str>) -> XsoarExecutor {
    XsoarExecutor::new(XsoarConfig {
        base_url: base_url.into(),
        api_key: Secret::new(XSOAR_KEY),
        key_id: key_id.map(str::to_string),
        timeout: Duration::from_millis(500),
    })
    .unwrap()
}

const XSOAR_KEY: &str = "xsoar-key-0123456789ABCDEF";

#[tokio::test]
async fn an_xsoar_incident_runs_its_playbook_and_is_opened_once() {
    let db = sqlite().await;
    let request: Value =
        serde_json::from_str(&sample("xsoar/create_incident_request.synthetic.json")).unwrap();
    let action = Action::from_parts(
        "xsoar_incident",
        json!({"name": request["name"], "incident_type": request["type"],
               "severity": request["severity"], "details": request["details"],
               "playbook": request["playbookId"]}),
    )
    .unwrap();
    let none = json!({"total": 0, "data": []}).to_string();
    let created = json!({"id": "77", "investigationId": "77", "playbookId": request["playbookId"],
                         "version": 1})
    .to_string();
    for key_id in [None, Some("12")] {
        // XSOAR 6, then XSOAR 8 with its key id and path prefix. The first create
        // answers 502; the retry's search finds nothing and creates.
        let (vendor, url) = serve_vendor(
            (200, created.clone()),
            vec![(200, none.clone()), (502, "bad gateway".into()), (200, none.clone())],
        )
        .await;
        let (gate, id) = approved(&db, action.clone()).await;
        let executor = xsoar(&url, key_id);
        run(&db, &gate, &executor).await;
        run(&db, &gate, &executor).await;
        assert_eq!(gate.get(&id).await.unwrap().state, State::Succeeded);
        let seen = vendor.seen.lock().unwrap().clone();
        let prefix = if key_id.is_some() { "/xsoar/public/v1" } else { "" };
        let paths: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(
            paths,
            [
                format!("{prefix}/incidents/search"),
                format!("{prefix}/incident"),
                format!("{prefix}/incidents/search"),
                format!("{prefix}/incident"),
            ]
        );
        let create: Value = serde_json::from_slice(&seen[3].body).unwrap();
        for field in ["type", "severity", "playbookId", "createInvestigation"] {
            assert_eq!(create[field], request[field], "{field}");
        }
        assert_eq!(create["name"], format!("{} [{id}]", request["name"].as_str().unwrap()));
        assert_eq!(seen[3].headers["authorization"], XSOAR_KEY);
        assert_eq!(seen[3].headers.get("x-xdr-auth-id").map(|v| v.to_str().unwrap()), key_id);
    }
    let exported = serde_json::to_string(&audit::export(&db.store, 0).await.unwrap()).unwrap();
    assert!(!exported.contains(XSOAR_KEY));
}

#[tokio::test]
async fn a_war_room_entry_is_written_once_even_when_an_answer_is_lost() {
    let db = sqlite().await;
    let request: Value =
        serde_json::from_str(&sample("xsoar/war_room_entry_request.synthetic.json")).unwrap();
    let investigation = request["investigationId"].as_str().unwrap();
    let action = Action::from_parts(
        "xsoar_war_room_entry",
        json!({"incident_id": investigation, "entry": request["data"]}),
    )
    .unwrap();
    for key_id in [None, Some("12")] {
        let (gate, id) = approved(&db, action.clone()).await;
        let marker = format!("[pivotwatch {id}]");
        // The first write is made but its answer is lost (a 502 from a proxy); the
        // retry finds the entry by its marker among the latest and writes nothing more.
        let entries = json!({"id": investigation, "entries": [
            {"id": "3@1234", "contents": "Playbook started"},
            {"id": "4@1234", "contents": format!("{}\n\n{marker}", request["data"].as_str().unwrap())},
        ]});
        let (vendor, url) = serve_vendor(
            (200, json!({"id": "9@1234"}).to_string()),
            vec![(502, "bad gateway".into()), (200, entries.to_string())],
        )
        .await;
        let executor = xsoar(&url, key_id);
        run(&db, &gate, &executor).await;
        run(&db, &gate, &executor).await;
        assert_eq!(gate.get(&id).await.unwrap().state, State::Succeeded);
        let seen = vendor.seen.lock().unwrap().clone();
        let prefix = if key_id.is_some() { "/xsoar" } else { "" };
        let paths: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(
            paths,
            [format!("{prefix}/entry"), format!("{prefix}/investigation/{investigation}")]
        );
        let written: Value = serde_json::from_slice(&seen[0].body).unwrap();
        assert_eq!(written["investigationId"], request["investigationId"]);
        assert_eq!(written["markdown"], true);
        assert_eq!(written["data"], format!("{}\n\n{marker}", request["data"].as_str().unwrap()));
        assert_eq!(seen[1].headers["authorization"], XSOAR_KEY);
        assert_eq!(seen[1].headers.get("x-xdr-auth-id").map(|v| v.to_str().unwrap()), key_id);

        // Without the marker in the war room, the retry writes the entry again.
        let (gate, id) = approved(&db, action.clone()).await;
        let others = json!({"id": investigation, "entries": [{"id": "3@1234", "contents": "x"}]});
        let (vendor, url) = serve_vendor(
            (200, json!({"id": "10@1234"}).to_string()),
            vec![(503, "busy".into()), (200, others.to_string())],
        )
        .await;
        let executor = xsoar(&url, key_id);
        run(&db, &gate, &executor).await;
        run(&db, &gate, &executor).await;
        assert_eq!(gate.get(&id).await.unwrap().state, State::Succeeded);
        let paths: Vec<String> =
            vendor.seen.lock().unwrap().iter().map(|s| s.uri.clone()).collect();
        assert_eq!(
            paths,
            [
                format!("{prefix}/entry"),
                format!("{prefix}/investigation/{investigation}"),
                format!("{prefix}/entry")
            ]
        );
    }
}

#[tokio::test]
async fn a_panorama_change_sets_commits_pushes_and_waits_for_the_jobs() {
    let db = sqlite().await;
    let ok = "<response status=\"success\" code=\"20\"><msg>command succeeded</msg></response>";
    let enqueued =
        std::fs::read_to_string(format!("{DATA}/panos/commit_enqueued_response.synthetic.xml"))
            .unwrap();
    let running = "<response status=\"success\"><result><job><id>4</id><status>ACT</status>\
                   <result>PEND</result><progress>40</progress></job></result></response>";
    let finished =
        std::fs::read_to_string(format!("{DATA}/panos/commit_all_job_status_success.xml")).unwrap();
    let (vendor, url) = serve_vendor(
        (200, ok.into()),
        vec![
            (200, ok.into()),        // set address object
            (200, ok.into()),        // set rule
            (200, enqueued.clone()), // commit to Panorama
            (200, running.into()),   // job still running
            (200, finished.clone()), // job done
            (200, enqueued),         // commit-all
            (200, finished),         // job done
        ],
    )
    .await;
    let element =
        std::fs::read_to_string(format!("{DATA}/panos/security_rule_element.synthetic.xml"))
            .unwrap();
    let change = Action::from_parts(
        "panos_config_change",
        json!({"target": {"type": "panorama", "device_group": "Lab-Devices"},
               "sets": [
                 {"xpath": "/config/devices/entry[@name='localhost.localdomain']/device-group/entry[@name='Lab-Devices']/address", "element": "<entry name=\"pump-0007\"><ip-netmask>10.20.1.17/32</ip-netmask></entry>"},
                 {"xpath": "/config/devices/entry[@name='localhost.localdomain']/device-group/entry[@name='Lab-Devices']/pre-rulebase/security/rules", "element": element}
               ]}),
    )
    .unwrap();
    let (gate, id) = approved(&db, change).await;
    run(&db, &gate, &panos(&url)).await;
    let detail: Vec<String> = sqlx::query_scalar("SELECT detail FROM executions")
        .fetch_all(db.store.pool())
        .await
        .unwrap();
    assert_eq!(gate.get(&id).await.unwrap().state, State::Succeeded, "{detail:?}");

    let seen = vendor.seen.lock().unwrap().clone();
    let forms: Vec<Vec<(String, String)>> = seen.iter().map(|s| form_pairs(&s.body)).collect();
    let get = |i: usize, k: &str| forms[i].iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(forms.len(), 7);
    assert_eq!(
        (get(0, "type").unwrap(), get(0, "action").unwrap()),
        ("config".into(), "set".into())
    );
    assert!(get(1, "xpath").unwrap().ends_with("/pre-rulebase/security/rules"));
    assert_eq!(get(2, "cmd").as_deref(), Some("<commit></commit>"));
    assert_eq!(get(3, "cmd").as_deref(), Some("<show><jobs><id>4</id></jobs></show>"));
    assert_eq!(get(5, "action").as_deref(), Some("all"));
    assert!(get(5, "cmd").unwrap().contains("<entry name=\"Lab-Devices\"/>"));
}

#[tokio::test]
async fn a_rule_asked_to_go_first_is_moved_to_the_top_before_the_commit() {
    let db = sqlite().await;
    let ok = "<response status=\"success\"><msg>command succeeded</msg></response>";
    let enqueued =
        std::fs::read_to_string(format!("{DATA}/panos/commit_enqueued_response.synthetic.xml"))
            .unwrap();
    let finished =
        std::fs::read_to_string(format!("{DATA}/panos/commit_all_job_status_success.xml")).unwrap();
    let (vendor, url) = serve_vendor(
        (200, ok.into()),
        vec![(200, ok.into()), (200, ok.into()), (200, enqueued), (200, finished)],
    )
    .await;
    let rule = "/config/devices/entry[@name='localhost.localdomain']/vsys/entry[@name='vsys1']/rulebase/security/rules/entry[@name='pw-quarantine-deny-out']";
    let change = Action::from_parts(
        "panos_config_change",
        json!({"target": {"type": "firewall"},
               "sets": [{"xpath": rule, "element": "<action>deny</action>", "move": "top"}]}),
    )
    .unwrap();
    let (gate, id) = approved(&db, change).await;
    run(&db, &gate, &panos(&url)).await;
    assert_eq!(gate.get(&id).await.unwrap().state, State::Succeeded);
    let seen = vendor.seen.lock().unwrap().clone();
    let forms: Vec<Vec<(String, String)>> = seen.iter().map(|s| form_pairs(&s.body)).collect();
    let get = |i: usize, k: &str| forms[i].iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(get(0, "action").as_deref(), Some("set"));
    assert_eq!(
        (get(1, "action").as_deref(), get(1, "where").as_deref(), get(1, "xpath").as_deref()),
        (Some("move"), Some("top"), Some(rule))
    );
    assert_eq!(get(2, "cmd").as_deref(), Some("<commit></commit>"));

    // Only a rule can be moved.
    let err = Action::from_parts(
        "panos_config_change",
        json!({"target": {"type": "firewall"},
               "sets": [{"xpath": "/config/devices/entry/vsys/entry[@name='vsys1']/address", "element": "<entry name=\"a\"/>", "move": "top"}]}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("sets[0].move"), "{err}");
}

#[tokio::test]
async fn a_failed_commit_fails_the_change_with_the_job_result() {
    let db = sqlite().await;
    let ok = "<response status=\"success\"><msg>command succeeded</msg></response>";
    let enqueued =
        std::fs::read_to_string(format!("{DATA}/panos/commit_enqueued_response.synthetic.xml"))
            .unwrap();
    let failed = "<response status=\"success\"><result><job><id>4</id><status>FIN</status>\
                  <result>FAIL</result><details><line>rule pw-1 references unknown zone</line>\
                  </details></job></result></response>";
    let (_, url) = serve_vendor(
        (200, ok.into()),
        vec![(200, ok.into()), (200, enqueued), (200, failed.into())],
    )
    .await;
    let change = Action::from_parts(
        "panos_config_change",
        json!({"target": {"type": "firewall"},
               "sets": [{"xpath": "/config/devices/entry/vsys/entry[@name='vsys1']/tag", "element": "<entry name=\"pw\"/>"}]}),
    )
    .unwrap();
    let (gate, id) = approved(&db, change).await;
    run(&db, &gate, &panos(&url)).await;
    assert_eq!(gate.get(&id).await.unwrap().state, State::Failed);
    let detail: String = sqlx::query_scalar("SELECT detail FROM executions WHERE proposal_id = $1")
        .bind(&id)
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert!(detail.contains("unknown zone"), "{detail}");
}

#[tokio::test]
async fn a_login_becomes_an_api_key_once() {
    let db = sqlite().await;
    let keygen = sample("panos/keygen_response.synthetic.xml");
    let success = "<response status=\"success\"><result/></response>";
    let (vendor, url) = serve_vendor((200, success.into()), vec![(200, keygen)]).await;
    let executor = panos_with(
        &url,
        PanosCredentials::Login { user: "pw-api".into(), password: Secret::new("Fw-Pa55!") },
    );
    for device in ["cam-0001", "cam-0002"] {
        let action = Action::from_parts(
            "quarantine_device",
            json!({"device_id": device, "ip": "10.1.2.3", "tag": "quarantine",
                   "timeout_secs": 60, "criticality": "low"}),
        )
        .unwrap();
        let (gate, id) = approved(&db, action).await;
        run(&db, &gate, &executor).await;
        assert_eq!(gate.get(&id).await.unwrap().state, State::Succeeded);
    }
    let seen = vendor.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "one keygen, then two registrations");
    assert_eq!(seen[0].uri, "/api/?type=keygen");
    let login = form_pairs(&seen[0].body);
    assert!(login.contains(&("user".into(), "pw-api".into())));
    assert!(login.contains(&("password".into(), "Fw-Pa55!".into())));
    for registration in &seen[1..] {
        assert_eq!(registration.headers["x-pan-key"], PAN_KEY);
    }
    let exported = serde_json::to_string(&audit::export(&db.store, 0).await.unwrap()).unwrap();
    assert!(!exported.contains("Fw-Pa55!") && !exported.contains(PAN_KEY));
}

#[tokio::test]
async fn oauth_asks_for_a_token_once_and_sends_it_as_bearer() {
    let db = sqlite().await;
    let token = json!({"access_token": "tok-123", "refresh_token": "r", "expires_in": 1800,
                       "token_type": "Bearer"})
    .to_string();
    let none = json!({"result": []}).to_string();
    let created = sample("servicenow/table_api_create_incident_response.json");
    let (vendor, url) = serve_vendor(
        (201, created.clone()),
        vec![(200, token), (200, none.clone()), (201, created), (200, none)],
    )
    .await;
    let executor = servicenow_oauth(url);
    for _ in 0..2 {
        let (gate, id) = approved(&db, incident()).await;
        run(&db, &gate, &executor).await;
        assert_eq!(gate.get(&id).await.unwrap().state, State::Succeeded);
    }
    let seen = vendor.seen.lock().unwrap().clone();
    assert_eq!(seen[0].uri, "/oauth_token.do");
    let grant = form_pairs(&seen[0].body);
    assert!(grant.contains(&("grant_type".into(), "password".into())));
    assert!(grant.contains(&("client_id".into(), "pw-client".into())));
    let token_requests = seen.iter().filter(|s| s.uri == "/oauth_token.do").count();
    assert_eq!(token_requests, 1, "the token is kept until it nears expiry");
    for call in &seen[1..] {
        assert_eq!(call.headers["authorization"], "Bearer tok-123");
    }
    let exported = serde_json::to_string(&audit::export(&db.store, 0).await.unwrap()).unwrap();
    assert!(!exported.contains("cl1ent-s3cret") && !exported.contains("tok-123"));
}

#[tokio::test]
async fn an_expiring_oauth_token_is_refreshed_and_a_refused_refresh_falls_back_to_a_login() {
    let db = sqlite().await;
    // Tokens that live three seconds past the minute the executor keeps in reserve: one
    // proposal's search and create share a token, the next proposal needs a new one.
    let token = |access: &str, refresh: &str| {
        (
            200,
            json!({"access_token": access, "refresh_token": refresh, "expires_in": 63,
                   "token_type": "Bearer"})
            .to_string(),
        )
    };
    let none = (200, json!({"result": []}).to_string());
    let created = (201, sample("servicenow/table_api_create_incident_response.json"));
    let refused = (401, json!({"error": "invalid_grant"}).to_string());
    let (vendor, url) = serve_vendor(
        created.clone(),
        vec![
            token("tok-A", "ref-1"),
            none.clone(),
            created.clone(),
            token("tok-B", "ref-2"),
            none.clone(),
            created.clone(),
            refused,
            token("tok-C", "ref-3"),
            none,
            created,
        ],
    )
    .await;
    let executor = servicenow_oauth(url);
    for round in 0..3 {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(3_100)).await;
        }
        let (gate, id) = approved(&db, incident()).await;
        run(&db, &gate, &executor).await;
        let detail = audit::export(&db.store, 0).await.unwrap();
        assert_eq!(gate.get(&id).await.unwrap().state, State::Succeeded, "{:?}", detail.last());
    }
    let seen = vendor.seen.lock().unwrap().clone();
    let grants: Vec<(String, Option<String>)> = seen
        .iter()
        .filter(|s| s.uri == "/oauth_token.do")
        .map(|s| {
            let form = form_pairs(&s.body);
            let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            (field("grant_type").unwrap(), field("refresh_token"))
        })
        .collect();
    assert_eq!(
        grants,
        [
            ("password".to_string(), None),
            ("refresh_token".to_string(), Some("ref-1".to_string())),
            ("refresh_token".to_string(), Some("ref-2".to_string())),
            ("password".to_string(), None),
        ]
    );
    let bearers: Vec<&str> = seen
        .iter()
        .filter(|s| s.uri.starts_with("/api/now/table/incident"))
        .map(|s| s.headers["authorization"].to_str().unwrap())
        .collect();
    assert_eq!(
        bearers,
        [
            "Bearer tok-A",
            "Bearer tok-A",
            "Bearer tok-B",
            "Bearer tok-B",
            "Bearer tok-C",
            "Bearer tok-C"
        ]
    );
    let exported = serde_json::to_string(&audit::export(&db.store, 0).await.unwrap()).unwrap();
    for secret in ["ref-1", "ref-2", "tok-B", "cl1ent-s3cret"] {
        assert!(!exported.contains(secret), "{secret} reached the audit trail");
    }
}
