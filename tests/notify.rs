//! Notices of containment run on a standing approval: queued with the approval, posted
//! to Slack and Teams servers that speak their wire formats, retried per channel, and
//! recorded in the audit trail without credentials.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use pivotwatch::actions::policy::Phase;
use pivotwatch::actions::{
    Action, Channel, Gate, Policy, Secret, SlackChannel, State, TeamsChannel, TeamsConfig, Users,
    deliver_notices,
};
use pivotwatch::audit::{self, Actor};

mod common;
use common::{backends, drop_schema};

const USERS: &str = "[[user]]\nname = \"bea\"\nroles = [\"approver\"]\n\n\
                     [[user]]\nname = \"dee\"\nroles = [\"admin\"]\n";
const SLACK_TOKEN: &str = "xoxb-test-0000-notify";
const TEAMS_PASSWORD: &str = "teams-app-s3cret";
const TEAMS_TOKEN: &str = "eyJ0eXAiOiJKV1Qi.bot-token";

struct Seen {
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A scripted server for Slack's Web API or Teams' token and connector endpoints.
struct Chat {
    script: Mutex<VecDeque<(u16, Value)>>,
    seen: Mutex<Vec<Seen>>,
}

async fn answer(
    AxState(chat): AxState<Arc<Chat>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    chat.seen.lock().unwrap().push(Seen { uri: uri.to_string(), headers, body });
    let (status, body) = chat.script.lock().unwrap().pop_front().unwrap_or((500, json!({})));
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

async fn serve(script: Vec<(u16, Value)>) -> (Arc<Chat>, String) {
    let chat = Arc::new(Chat { script: Mutex::new(script.into()), seen: Mutex::new(Vec::new()) });
    let app = Router::new().fallback(answer).with_state(Arc::clone(&chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (chat, format!("http://{addr}"))
}

fn quarantine(device: &str) -> Action {
    Action::from_parts(
        "quarantine_device",
        json!({"device_id": device, "ip": "10.20.1.17", "tag": "pw-quarantine",
               "timeout_secs": 3600, "criticality": "high"}),
    )
    .unwrap()
}

/// A gate in the contain phase with a standing approval for quarantining pumps.
async fn containing(db: &common::Db) -> Gate {
    let gate = Gate::new(db.store.clone(), Policy::default(), Users::parse(USERS).unwrap());
    gate.set_phase("dee", Phase::Contain, "pilot on pumps").await.unwrap();
    gate.grant_standing("quarantine_device", &["pump-*".into()], "dee", "beaconing playbook")
        .await
        .unwrap();
    gate
}

async fn due_now(db: &common::Db) {
    sqlx::query("UPDATE jobs SET run_after_ms = 0 WHERE state = 'queued'")
        .execute(db.store.pool())
        .await
        .unwrap();
}

fn slack(url: &str) -> SlackChannel {
    SlackChannel::new(
        format!("{url}/api"),
        Secret::new(SLACK_TOKEN),
        "C0SOCALERTS".into(),
        Duration::from_millis(500),
    )
    .unwrap()
}

fn teams(url: &str) -> TeamsChannel {
    TeamsChannel::new(TeamsConfig {
        service_url: format!("{url}/amer/"),
        conversation: "19:soc@thread.tacv2".into(),
        app_id: "00000000-0000-0000-0000-00000000b07".into(),
        app_password: Secret::new(TEAMS_PASSWORD),
        token_url: format!("{url}/botframework.com/oauth2/v2.0/token"),
        timeout: Duration::from_millis(500),
    })
    .unwrap()
}

#[tokio::test]
async fn a_standing_containment_is_announced_once_per_channel() {
    for db in backends("a_standing_containment_is_announced_once_per_channel").await {
        let gate = containing(&db).await;
        let slack_ok = json!({"ok": true, "channel": "C0SOCALERTS", "ts": "1733300000.000100"});
        let (slack_server, slack_url) = serve(vec![(200, slack_ok)]).await;
        let token =
            json!({"token_type": "Bearer", "expires_in": 3600, "access_token": TEAMS_TOKEN});
        // Teams is down for the first post, then takes it.
        let (teams_server, teams_url) = serve(vec![
            (200, token),
            (503, json!({"error": {"code": "ServiceUnavailable", "message": "try later"}})),
            (201, json!({"id": "1:activity"})),
        ])
        .await;
        let slack = slack(&slack_url);
        let teams = teams(&teams_url);
        let channels: [&dyn Channel; 2] = [&slack, &teams];

        let p =
            gate.propose(quarantine("pump-0007"), &Actor::Agent, "beacons to 203.0.113.9").await;
        let p = p.unwrap().unwrap();
        assert_eq!(p.state, State::Approved);
        assert_eq!(
            deliver_notices(&db.store, &channels, "w", Duration::from_secs(60)).await.unwrap(),
            1
        );
        // Nothing is due until the Teams retry's time comes; then Teams alone is tried.
        assert_eq!(
            deliver_notices(&db.store, &channels, "w", Duration::from_secs(60)).await.unwrap(),
            0
        );
        due_now(&db).await;
        assert_eq!(
            deliver_notices(&db.store, &channels, "w", Duration::from_secs(60)).await.unwrap(),
            1
        );
        due_now(&db).await;
        assert_eq!(
            deliver_notices(&db.store, &channels, "w", Duration::from_secs(60)).await.unwrap(),
            0
        );

        let slack_seen = std::mem::take(&mut *slack_server.seen.lock().unwrap());
        assert_eq!(slack_seen.len(), 1, "Slack got the notice once");
        assert_eq!(slack_seen[0].uri, "/api/chat.postMessage");
        assert_eq!(slack_seen[0].headers["authorization"], format!("Bearer {SLACK_TOKEN}"));
        let message: Value = serde_json::from_slice(&slack_seen[0].body).unwrap();
        assert_eq!(message["channel"], "C0SOCALERTS");
        assert!(message["text"].as_str().unwrap().contains("pump-0007"));
        assert_eq!(message["blocks"][0]["type"], "header");
        let all = message.to_string();
        assert!(all.contains("release_device") && all.contains("dee") && all.contains(&p.id));

        let teams_seen = std::mem::take(&mut *teams_server.seen.lock().unwrap());
        let paths: Vec<&str> = teams_seen.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/botframework.com/oauth2/v2.0/token",
                "/amer/v3/conversations/19:soc@thread.tacv2/activities",
                "/amer/v3/conversations/19:soc@thread.tacv2/activities",
            ]
        );
        let form: Vec<(String, String)> =
            form_urlencoded::parse(&teams_seen[0].body).into_owned().collect();
        assert!(form.contains(&("grant_type".into(), "client_credentials".into())));
        assert!(form.contains(&("scope".into(), "https://api.botframework.com/.default".into())));
        assert_eq!(teams_seen[2].headers["authorization"], format!("Bearer {TEAMS_TOKEN}"));
        let activity: Value = serde_json::from_slice(&teams_seen[2].body).unwrap();
        assert_eq!(activity["type"], "message");
        let card = &activity["attachments"][0];
        assert_eq!(card["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert!(card.to_string().contains("pump-0007"));

        let records = audit::export(&db.store, 0).await.unwrap();
        let notices: Vec<(String, String)> = records
            .iter()
            .filter(|r| r.kind == "notification")
            .map(|r| {
                (
                    r.payload["channel"].as_str().unwrap().to_string(),
                    r.payload["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            notices,
            [
                ("slack".to_string(), "sent".to_string()),
                ("teams".to_string(), "retrying".to_string()),
                ("teams".to_string(), "sent".to_string()),
            ]
        );
        let exported = serde_json::to_string(&records).unwrap();
        for secret in [SLACK_TOKEN, TEAMS_PASSWORD, TEAMS_TOKEN] {
            assert!(!exported.contains(secret), "{secret} reached the audit trail");
        }
        assert!(audit::verify(&db.store).await.unwrap().ok);
        drop_schema(&db).await;
    }
}

#[tokio::test]
async fn only_containment_is_announced_and_a_refusal_is_not_retried() {
    for db in backends("only_containment_is_announced_and_a_refusal_is_not_retried").await {
        let gate = containing(&db).await;
        // A standing approval for case comments approves them quietly.
        gate.grant_standing("xdr_case_comment", &[], "bea", "routine").await.unwrap();
        let comment = Action::from_parts(
            "xdr_case_comment",
            json!({"incident_id": "41", "comment": "context attached"}),
        )
        .unwrap();
        let quiet = gate.propose(comment, &Actor::Agent, "").await.unwrap().unwrap();
        assert_eq!(quiet.state, State::Approved);
        // A containment that waits for people is not announced as one that ran.
        let waits = gate.propose(quarantine("cam-0001"), &Actor::Agent, "").await.unwrap().unwrap();
        assert_eq!(waits.state, State::Proposed);

        let refusal = json!({"ok": false, "error": "channel_not_found"});
        let (server, url) = serve(vec![(200, refusal)]).await;
        let slack = slack(&url);
        let channels: [&dyn Channel; 1] = [&slack];
        assert_eq!(
            deliver_notices(&db.store, &channels, "w", Duration::from_secs(60)).await.unwrap(),
            0
        );

        gate.propose(quarantine("pump-0009"), &Actor::Agent, "").await.unwrap().unwrap();
        assert_eq!(
            deliver_notices(&db.store, &channels, "w", Duration::from_secs(60)).await.unwrap(),
            1
        );
        due_now(&db).await;
        assert_eq!(
            deliver_notices(&db.store, &channels, "w", Duration::from_secs(60)).await.unwrap(),
            0
        );
        assert_eq!(server.seen.lock().unwrap().len(), 1, "a refusal is final");
        let records = audit::export(&db.store, 0).await.unwrap();
        let failed = records.iter().find(|r| r.kind == "notification").unwrap();
        assert_eq!(failed.payload["state"], "failed");
        assert!(failed.payload["detail"]["error"].as_str().unwrap().contains("channel_not_found"));

        // With no channel configured the notice is recorded as undelivered, not lost
        // silently and not left to block the queue.
        gate.propose(quarantine("pump-0010"), &Actor::Agent, "").await.unwrap().unwrap();
        assert_eq!(deliver_notices(&db.store, &[], "w", Duration::from_secs(60)).await.unwrap(), 1);
        let records = audit::export(&db.store, 0).await.unwrap();
        let last = records.iter().rev().find(|r| r.kind == "notification").unwrap();
        assert_eq!(last.payload["delivered"], false);
        assert!(last.payload["why"].as_str().unwrap().contains("no chat channel"));
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE kind = 'notify' AND state IN ('queued', 'running')",
        )
        .fetch_one(db.store.pool())
        .await
        .unwrap();
        assert_eq!(waiting, 0);
        drop_schema(&db).await;
    }
}
