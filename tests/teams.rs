//! Teams over real HTTP: Bot Framework activities signed with a key pair the test
//! generates and publishes through a local OpenID metadata document. Forged, expired,
//! misaddressed and wrongly endorsed tokens are refused with nothing stored; card
//! buttons (`Action.Execute`, and `Action.Submit` from older clients) decide through
//! the gate and are answered with the refreshed card; questions are answered through
//! a local connector, once per activity however often it is delivered.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use pivotwatch::ingest::sim::SimConfig;
use pivotwatch::server::{AppState, RawSettings, ServerConfig, build_state, serve};

mod common;

const APP_ID: &str = "00000000-0000-0000-0000-0000000000b0";
const ISSUER: &str = "https://api.botframework.com";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key and its public half as a JWK.
struct Key {
    pair: KeyPair,
    kid: String,
}

impl Key {
    fn new(kid: &str) -> Key {
        Key { pair: KeyPair::generate(KeySize::Rsa2048).unwrap(), kid: kid.into() }
    }

    fn jwk(&self, endorsements: &[&str]) -> Value {
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(self.pair.public_key());
        json!({"kty": "RSA", "use": "sig", "kid": self.kid, "n": b64(&public.n),
               "e": b64(&public.e), "endorsements": endorsements})
    }

    /// A compact JWT over `claims`, signed RS256 (the header names `alg` and this kid).
    fn sign(&self, alg: &str, claims: &Value) -> String {
        let header = json!({"alg": alg, "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature).unwrap();
        format!("{input}.{}", b64(&signature))
    }
}

/// The Bot Framework's side, locally: OpenID metadata and keys, the token endpoint,
/// and the connector, which records every activity sent to it.
struct BotFramework {
    base: String,
    sent: Arc<Mutex<Vec<Value>>>,
}

async fn bot_framework(keys: Value) -> BotFramework {
    use axum::routing::{get, post};
    let sent = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let metadata = json!({"issuer": ISSUER, "jwks_uri": format!("{base}/keys"),
                          "id_token_signing_alg_values_supported": ["RS256"]});
    let recorded = Arc::clone(&sent);
    let app = axum::Router::new()
        .route("/openid", get(move || async move { axum::Json(metadata) }))
        .route("/keys", get(move || async move { axum::Json(keys) }))
        .route(
            "/token",
            post(|| async { axum::Json(json!({"access_token": "bot-token", "expires_in": 3600})) }),
        )
        .fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let recorded = Arc::clone(&recorded);
                async move {
                    let mut value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    value["_method"] = json!(method.as_str());
                    value["_path"] = json!(uri.path());
                    value["_auth"] = json!(
                        headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                    );
                    recorded.lock().unwrap().push(value);
                    axum::Json(json!({"id": "1733300999999"}))
                }
            },
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    BotFramework { base, sent }
}

struct Running {
    base: String,
    state: Arc<AppState>,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
    /// The service URL activities name (the local connector).
    service_url: String,
}

async fn start(bot: &BotFramework) -> Running {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().to_path_buf();
    let config = SimConfig { devices: 30, days: 6, seed: 5, ..SimConfig::default() };
    common::fleet::tenant(&config, &data.join("sim"), &data);
    std::fs::write(
        data.join("users.toml"),
        "[[user]]\nname = \"ana\"\nroles = [\"analyst\"]\nteams_aad_object_id = \"aad-ana\"\n\n\
         [[user]]\nname = \"abe\"\nroles = [\"approver\"]\nteams_aad_object_id = \"aad-abe\"\n",
    )
    .unwrap();
    let data_text = data.display().to_string();
    let metadata = format!("{}/openid", bot.base);
    let token_url = format!("{}/token", bot.base);
    let raw = RawSettings::from_pairs(&[
        ("data_dir", data_text.as_str()),
        ("server.listen", "127.0.0.1:0"),
        ("teams.app_id", APP_ID),
        ("teams.app_password", "bot-password"),
        ("teams.openid_metadata", metadata.as_str()),
        ("teams.token_url", token_url.as_str()),
    ]);
    let state = build_state(ServerConfig::validate(&raw).unwrap(), &raw).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let served = Arc::clone(&state);
    tokio::spawn(async move { serve(served, listener, stopped).await.unwrap() });
    Running {
        base,
        state,
        stop,
        _dir: dir,
        http: reqwest::Client::new(),
        service_url: format!("{}/", bot.base),
    }
}

fn now() -> i64 {
    pivotwatch::store::now_ms() / 1000
}

impl Running {
    fn claims(&self) -> Value {
        json!({"iss": ISSUER, "aud": APP_ID, "exp": now() + 3600, "nbf": now() - 10,
               "serviceUrl": self.service_url})
    }

    fn activity(&self, kind: &str, id: &str, aad: &str) -> Value {
        json!({"type": kind, "id": id, "channelId": "msteams", "serviceUrl": self.service_url,
               "timestamp": "2026-12-04T10:00:00.000Z",
               "from": {"id": "29:1user", "name": "Someone", "aadObjectId": aad},
               "recipient": {"id": format!("28:{APP_ID}"), "name": "pivotwatch"},
               "conversation": {"id": "19:socchannel@thread.tacv2", "conversationType": "channel"},
               "channelData": {"tenant": {"id": "tenant-1"}},
               "replyToId": "1733300000000"})
    }

    async fn post(&self, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/v1/teams/messages", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn teams_jobs(&self) -> i64 {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM jobs WHERE kind = 'teams'")
            .fetch_one(self.state.store.pool())
            .await
            .unwrap()
    }

    async fn propose(&self, comment: &str) -> String {
        let action = pivotwatch::actions::Action::XdrCaseComment {
            incident_id: "4711".into(),
            comment: comment.into(),
        };
        let system = pivotwatch::audit::Actor::System;
        self.state.gate.propose(action, &system, "test").await.unwrap().unwrap().id
    }
}

async fn wait_sent(bot: &BotFramework, n: usize) -> Vec<Value> {
    for _ in 0..150 {
        let sent: Vec<Value> = bot
            .sent
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["_path"].as_str().unwrap().starts_with("/v3/"))
            .cloned()
            .collect();
        if sent.len() >= n {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {n} activities reached the connector");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_misaddressed_tokens_are_refused_with_nothing_stored() {
    let good = Key::new("key-1");
    let skype_only = Key::new("key-2");
    let keys = json!({"keys": [good.jwk(&["msteams", "webchat"]), skype_only.jwk(&["skype"])]});
    let bot = bot_framework(keys).await;
    let server = start(&bot).await;
    let proposal = server.propose("refused").await;
    let mut press = server.activity("invoke", "f:1", "aad-abe");
    press["name"] = json!("adaptiveCard/action");
    press["value"] = json!({"action": {"type": "Action.Execute", "verb": "approve",
                                       "data": {"actionId": proposal}}, "trigger": "manual"});
    let body = press.to_string();

    let (status, error) = server.post(None, &body).await;
    assert_eq!(status, 401, "{error}");
    assert!(error["error"].as_str().unwrap().contains("bearer token"), "{error}");

    let claims = server.claims();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = claims.clone();
        change(&mut claims);
        claims
    };
    // A key the metadata does not publish, under a published kid.
    let impostor = Key::new("key-1");
    let cases: Vec<(&str, String)> = vec![
        ("signature", impostor.sign("RS256", &claims)),
        ("expired", good.sign("RS256", &with(&|c| c["exp"] = json!(now() - 600)))),
        ("audience", good.sign("RS256", &with(&|c| c["aud"] = json!("another-bot")))),
        ("issuer", good.sign("RS256", &with(&|c| c["iss"] = json!("https://evil.example")))),
        (
            "service URL",
            good.sign("RS256", &with(&|c| c["serviceUrl"] = json!("https://evil.example/"))),
        ),
        ("endorsed", skype_only.sign("RS256", &claims)),
        ("algorithm", good.sign("HS256", &claims)),
        ("unknown key", Key::new("key-9").sign("RS256", &claims)),
        ("not a JWT", "not.a.jwt".to_string()),
    ];
    for (what, token) in &cases {
        let (status, error) = server.post(Some(token), &body).await;
        assert_eq!(status, 403, "{what}: {error}");
        assert!(error["error"].as_str().unwrap().contains("refused"), "{what}: {error}");
    }
    let valid = good.sign("RS256", &claims);
    let (status, error) = server.post(Some(&valid), "{\"type\": \"message\",").await;
    assert_eq!(status, 400, "{error}");
    let mut odd = server.activity("event", "f:2", "aad-abe");
    odd["name"] = json!("custom");
    let (status, error) = server.post(Some(&valid), &odd.to_string()).await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"].as_str().unwrap().contains("\"event\""), "{error}");

    // Nothing was decided, queued or sent.
    assert_eq!(server.state.gate.get(&proposal).await.unwrap().state.as_str(), "proposed");
    assert_eq!(server.teams_jobs().await, 0);
    assert!(bot.sent.lock().unwrap().is_empty());

    // The same request with a valid token goes through.
    let (status, answer) = server.post(Some(&valid), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(server.state.gate.get(&proposal).await.unwrap().state.as_str(), "approved");
    let _ = server.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buttons_decide_with_a_refreshed_card_and_questions_are_answered_once() {
    let key = Key::new("key-1");
    let bot = bot_framework(json!({"keys": [key.jwk(&["msteams"])]})).await;
    let server = start(&bot).await;
    let token = key.sign("RS256", &server.claims());

    // A write-up that offers two proposals.
    let first = server.propose("post the write-up").await;
    let second = server.propose("post another").await;
    let notice = json!({"proposal": first, "title": "Case 4711, pump-07: risk 91, critical",
        "text": "What happened: pump-07 left its baseline.",
        "decisions": [{"proposal": first, "label": "xdr case comment", "open": true},
                      {"proposal": second, "label": "xdr case comment", "open": true}]});
    server
        .state
        .store
        .save_write_up("tr-0001", &notice, &[first.clone(), second.clone()])
        .await
        .unwrap();

    // Action.Execute: decided as the approver, answered with the refreshed card.
    let mut press = server.activity("invoke", "f:10", "aad-abe");
    press["name"] = json!("adaptiveCard/action");
    press["value"] = json!({"action": {"type": "Action.Execute", "id": "approve-btn",
        "verb": "approve", "data": {"actionId": first}}, "trigger": "manual"});
    let (status, answer) = server.post(Some(&token), &press.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(answer["type"], "application/vnd.microsoft.card.adaptive");
    let card = answer["value"].to_string();
    assert!(card.contains("Approved by abe at 20"), "{card}");
    assert!(card.contains("pump-07"), "the write-up itself is refreshed: {card}");
    // The decided proposal lost its buttons; the other keeps its pair.
    let sets: Vec<&Value> = answer["value"]["body"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "ActionSet")
        .collect();
    assert_eq!(sets.len(), 1, "{card}");
    assert_eq!(sets[0]["actions"][0]["data"]["actionId"], second.as_str());
    assert_eq!(server.state.gate.get(&first).await.unwrap().state.as_str(), "approved");

    // Someone the users file does not name decides nothing and is told why.
    let mut stranger = press.clone();
    stranger["from"]["aadObjectId"] = json!("aad-nobody");
    stranger["value"]["action"]["data"]["actionId"] = json!(second);
    let (status, answer) = server.post(Some(&token), &stranger.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(answer["type"], "application/vnd.microsoft.activity.message");
    assert!(answer["value"].as_str().unwrap().contains("not in pivotwatch's users file"));
    assert_eq!(server.state.gate.get(&second).await.unwrap().state.as_str(), "proposed");

    // Action.Submit from an older client: a message whose value holds the decision.
    let mut submit = server.activity("message", "f:11", "aad-abe");
    submit["value"] = json!({"decision": "reject", "actionId": second});
    let (status, _) = server.post(Some(&token), &submit.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(server.state.gate.get(&second).await.unwrap().state.as_str(), "rejected");
    let sent = wait_sent(&bot, 1).await;
    assert_eq!(sent[0]["_path"], "/v3/conversations/19:socchannel@thread.tacv2/activities/f:11");
    assert_eq!(sent[0]["_auth"], "Bearer bot-token");
    assert!(sent[0]["text"].as_str().unwrap().contains("reject"), "{}", sent[0]);
    assert_eq!(sent[0]["replyToId"], "f:11");

    // A question, delivered three times, is answered once in its conversation.
    let (ip, name) = {
        let inventory = server
            .state
            .xdr
            .run_xql(&pivotwatch::xdr::XqlRequest::new(
                "dataset = asset_inventory | fields xdm.asset.ipv4_addresses, xdm.asset.name \
                 | limit 1",
            ))
            .await
            .unwrap();
        let first_row = &inventory.rows[0];
        let value = first_row.get("xdm.asset.ipv4_addresses").unwrap();
        let ip = value.as_str().map(str::to_string);
        let name = first_row.get("xdm.asset.name").unwrap().as_str().unwrap().to_string();
        (ip.unwrap_or_else(|| value[0].as_str().unwrap().to_string()), name)
    };
    let mut question = server.activity("message", "f:12", "aad-ana");
    question["text"] = json!(format!("<at>pivotwatch</at> device {ip}"));
    for _ in 0..3 {
        let (status, _) = server.post(Some(&token), &question.to_string()).await;
        assert_eq!(status, 200);
    }
    let sent = wait_sent(&bot, 2).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let replies: Vec<Value> = bot
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["_path"].as_str().unwrap().ends_with("/activities/f:12"))
        .cloned()
        .collect();
    assert_eq!(replies.len(), 1, "answered once: {sent:?}");
    let text = replies[0]["text"].as_str().unwrap();
    assert!(text.contains(&name) && text.contains("criticality"), "{text}");
    assert_eq!(replies[0]["recipient"]["aadObjectId"], "aad-ana");
    let _ = server.stop.send(true);
}
