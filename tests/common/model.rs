//! An OpenAI-compatible chat completions server scripted per test: it answers from a
//! queue (a 500 once the queue is empty) and records every request body.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use pivotwatch::agent::llm::Llm;

/// Prompt tokens every scripted answer reports.
pub const PROMPT_TOKENS: u64 = 1500;

pub struct Model {
    script: Mutex<VecDeque<(u16, Value)>>,
    seen: Mutex<Vec<Value>>,
}

impl Model {
    /// The request bodies so far.
    pub fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

/// A 200 chat completion with `message`.
pub fn completion(message: Value, finish: &str) -> (u16, Value) {
    (
        200,
        json!({"id": "chatcmpl-7", "object": "chat.completion", "created": 1_733_300_000,
               "model": "test-model",
               "choices": [{"index": 0, "finish_reason": finish, "message": message}],
               "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 80, "total_tokens": PROMPT_TOKENS + 80}}),
    )
}

/// The model answers with text.
pub fn says(text: &str) -> (u16, Value) {
    completion(json!({"role": "assistant", "content": text}), "stop")
}

/// The endpoint refuses with an OpenAI-style error.
pub fn fails(status: u16, kind: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"message": format!("{kind} for tests"), "type": kind, "param": null, "code": null}}),
    )
}

async fn complete(State(model): State<Arc<Model>>, Json(body): Json<Value>) -> Response {
    model.seen.lock().unwrap().push(body);
    let (status, body) =
        model.script.lock().unwrap().pop_front().unwrap_or_else(|| fails(500, "server_error"));
    (StatusCode::from_u16(status).unwrap(), Json(body)).into_response()
}

/// Serves `script` on a free port; the client asks for `model_name` with `timeout`.
pub async fn serve(
    script: Vec<(u16, Value)>,
    model_name: &str,
    timeout: Duration,
) -> (Arc<Model>, Llm) {
    let model = Arc::new(Model { script: Mutex::new(script.into()), seen: Mutex::new(Vec::new()) });
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(complete))
        .with_state(Arc::clone(&model));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let llm = Llm::new(&format!("http://{addr}/v1"), None, model_name, timeout).unwrap();
    (model, llm)
}
