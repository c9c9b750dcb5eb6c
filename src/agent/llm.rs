//! The model: any OpenAI-compatible chat completions endpoint (OpenAI, Azure OpenAI,
//! vLLM, Ollama, llama.cpp server) through async-openai, configured by
//! `PIVOTWATCH_LLM_BASE_URL`, `PIVOTWATCH_LLM_API_KEY` and `PIVOTWATCH_LLM_MODEL`.
//!
//! Every call has a deadline. async-openai's own retry layer repeats a request that met a
//! rate limit (honouring `Retry-After`), a server error or a refused connection, three
//! times with exponential back-off; anything else fails at once, so the caller can fall
//! back to the offline planner and say so.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestToolMessage, ChatCompletionRequestUserMessage, ChatCompletionTool,
    ChatCompletionTools, CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
    CreateChatCompletionResponse, FinishReason, FunctionCall, FunctionObject,
};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tracing::Instrument;

use crate::actions::Secret;
use crate::actions::settings::Lookup;

#[derive(Debug, Error)]
pub enum LlmError {
    #[error("model settings: {0}")]
    Config(String),
    #[error("the model did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the model endpoint: {0}")]
    Endpoint(String),
    #[error("the model's answer was empty")]
    Empty,
}

/// A prompt template: its id (`<family>.v<N>`), text and the SHA-256 the audit trail
/// records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    pub id: Cow<'static, str>,
    pub text: Cow<'static, str>,
}

impl Prompt {
    const fn shipped(id: &'static str, text: &'static str) -> Prompt {
        Prompt { id: Cow::Borrowed(id), text: Cow::Borrowed(text) }
    }

    pub fn hash(&self) -> String {
        Sha256::digest(self.text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The id without its version: `hunt_xql` for `hunt_xql.v2`.
    pub fn family(&self) -> &str {
        family_of(&self.id).map_or(&self.id, |(family, _)| family)
    }
}

/// `("hunt_xql", 2)` for `hunt_xql.v2`.
fn family_of(id: &str) -> Option<(&str, u32)> {
    let (family, version) = id.rsplit_once(".v")?;
    Some((family, version.parse().ok()?))
}

/// The system prompt for question → XQL.
pub static HUNT_XQL: Prompt =
    Prompt::shipped("hunt_xql.v2", include_str!("../../prompts/hunt_xql.v2.md"));
/// The repair prompt, with `{errors}` filled in.
pub static HUNT_XQL_REPAIR: Prompt =
    Prompt::shipped("hunt_xql_repair.v1", include_str!("../../prompts/hunt_xql_repair.v1.md"));

/// The system prompt for triage with tools.
pub static TRIAGE: Prompt =
    Prompt::shipped("triage.v1", include_str!("../../prompts/triage.v1.md"));
/// Sent back once when a triage narrative states figures its evidence does not hold.
pub static TRIAGE_REWRITE: Prompt =
    Prompt::shipped("triage_rewrite.v1", include_str!("../../prompts/triage_rewrite.v1.md"));
/// The system prompt for an analyst's request answered with tools.
pub static ASK: Prompt = Prompt::shipped("ask.v1", include_str!("../../prompts/ask.v1.md"));

/// Every prompt the agent ships, by family.
pub static SHIPPED: [&Prompt; 5] = [&HUNT_XQL, &HUNT_XQL_REPAIR, &TRIAGE, &TRIAGE_REWRITE, &ASK];

/// The prompts a model is asked with: the shipped ones, or for each family the highest
/// version found in a prompts folder (`--prompts DIR`), so a new wording is measured by
/// adding `<family>.v<N+1>.md` beside the old one.
#[derive(Clone, Debug, Default)]
pub struct Prompts {
    chosen: BTreeMap<String, Prompt>,
}

impl Prompts {
    /// The highest version of each shipped family in `dir`; families without a file
    /// there keep the shipped text. Files of unknown families are an error, so a typo
    /// in a name is not silently measured as the old prompt.
    pub fn from_dir(dir: &Path) -> Result<Prompts, LlmError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|err| LlmError::Config(format!("prompts folder {}: {err}", dir.display())))?;
        let mut chosen: BTreeMap<String, (u32, Prompt)> = BTreeMap::new();
        for entry in entries {
            let path = entry
                .map_err(|err| {
                    LlmError::Config(format!("prompts folder {}: {err}", dir.display()))
                })?
                .path();
            if path.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let Some(id) = path.file_stem().and_then(|s| s.to_str()) else { continue };
            if id.eq_ignore_ascii_case("readme") {
                continue;
            }
            let Some((family, version)) = family_of(id) else {
                return Err(LlmError::Config(format!(
                    "{}: a prompt file is named <family>.v<N>.md",
                    path.display()
                )));
            };
            if !SHIPPED.iter().any(|p| p.family() == family) {
                let known: Vec<&str> = SHIPPED.iter().map(|p| p.family()).collect();
                return Err(LlmError::Config(format!(
                    "{}: no prompt family {family:?} (known: {})",
                    path.display(),
                    known.join(", ")
                )));
            }
            if chosen.get(family).is_some_and(|(v, _)| *v >= version) {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|err| LlmError::Config(format!("{}: {err}", path.display())))?;
            let prompt = Prompt { id: Cow::Owned(id.to_string()), text: Cow::Owned(text) };
            chosen.insert(family.to_string(), (version, prompt));
        }
        Ok(Prompts { chosen: chosen.into_iter().map(|(f, (_, p))| (f, p)).collect() })
    }

    /// The prompt to use in place of `shipped`.
    pub fn get(&self, shipped: &Prompt) -> Prompt {
        self.chosen.get(shipped.family()).cloned().unwrap_or_else(|| shipped.clone())
    }

    /// The id and hash of every prompt in use, shipped or chosen.
    pub fn in_use(&self) -> Vec<(String, String)> {
        SHIPPED.iter().map(|p| self.get(p)).map(|p| (p.id.to_string(), p.hash())).collect()
    }
}

/// A message of a conversation with tools, in the form the agent keeps and packs.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    System(String),
    User(String),
    Assistant { content: Option<String>, tool_calls: Vec<ToolCall> },
    Tool { call_id: String, content: String },
}

impl Message {
    /// The text the model reads, for token counts.
    pub fn text(&self) -> String {
        match self {
            Message::System(text) | Message::User(text) | Message::Tool { content: text, .. } => {
                text.clone()
            }
            Message::Assistant { content, tool_calls } => {
                let mut text = content.clone().unwrap_or_default();
                for call in tool_calls {
                    text.push_str(&call.name);
                    text.push_str(&call.arguments);
                }
                text
            }
        }
    }

    fn to_request(&self) -> ChatCompletionRequestMessage {
        match self {
            Message::System(text) => ChatCompletionRequestSystemMessage::from(text.as_str()).into(),
            Message::User(text) => ChatCompletionRequestUserMessage::from(text.as_str()).into(),
            Message::Assistant { content, tool_calls } => ChatCompletionRequestAssistantMessage {
                content: content.clone().map(ChatCompletionRequestAssistantMessageContent::Text),
                tool_calls: (!tool_calls.is_empty()).then(|| {
                    tool_calls
                        .iter()
                        .map(|call| {
                            ChatCompletionMessageToolCalls::Function(
                                ChatCompletionMessageToolCall {
                                    id: call.id.clone(),
                                    function: FunctionCall {
                                        name: call.name.clone(),
                                        arguments: call.arguments.clone(),
                                    },
                                },
                            )
                        })
                        .collect()
                }),
                ..Default::default()
            }
            .into(),
            Message::Tool { call_id, content } => ChatCompletionRequestToolMessage {
                content: content.clone().into(),
                tool_call_id: call_id.clone(),
            }
            .into(),
        }
    }
}

/// A tool call the model asked for; `arguments` is the model's JSON text, unchecked.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// What the model sees of a tool: its name, description and argument schema.
#[derive(Clone, Debug)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// One turn of a conversation with tools.
#[derive(Clone, Debug, Default)]
pub struct Turn {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub latency_ms: u64,
}

/// One answer and what it cost.
#[derive(Clone, Debug, Default)]
pub struct Completion {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub latency_ms: u64,
}

#[derive(Clone)]
pub struct Llm {
    client: Client<OpenAIConfig>,
    model: String,
    timeout: Duration,
    prompts: Prompts,
    cache: Option<Arc<ResponseCache>>,
}

impl Llm {
    /// `base_url` ends before `/chat/completions`, e.g. `http://127.0.0.1:11434/v1`.
    pub fn new(
        base_url: &str,
        api_key: Option<Secret>,
        model: &str,
        timeout: Duration,
    ) -> Result<Llm, LlmError> {
        reqwest::Url::parse(base_url)
            .map_err(|err| LlmError::Config(format!("llm.base_url {base_url:?}: {err}")))?;
        let mut config = OpenAIConfig::new().with_api_base(base_url.trim_end_matches('/'));
        // Local servers take any key; the client sends one either way.
        config = config.with_api_key(api_key.as_ref().map_or("none", Secret::expose));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|err| LlmError::Config(format!("llm client: {err}")))?;
        Ok(Llm {
            client: Client::with_config(config).with_http_client(http),
            model: model.to_string(),
            timeout,
            prompts: Prompts::default(),
            cache: None,
        })
    }

    /// Asks with these prompts instead of the shipped ones.
    pub fn with_prompts(mut self, prompts: Prompts) -> Llm {
        self.prompts = prompts;
        self
    }

    /// Answers repeated identical requests from `cache` (the evals' re-scoring).
    pub fn with_cache(mut self, cache: Arc<ResponseCache>) -> Llm {
        self.cache = Some(cache);
        self
    }

    /// The prompt this model is asked with in place of the shipped `prompt`.
    pub fn prompt(&self, prompt: &Prompt) -> Prompt {
        self.prompts.get(prompt)
    }

    /// The prompts in use, with their hashes.
    pub fn prompts(&self) -> &Prompts {
        &self.prompts
    }

    /// Sends one request, or answers it from the cache. Only a complete answer (stopped
    /// or asking for tools, no refusal) is kept, so a failure is asked again next time.
    async fn create(
        &self,
        request: CreateChatCompletionRequest,
        timeout: Duration,
    ) -> Result<CreateChatCompletionResponse, LlmError> {
        let key = self.cache.as_ref().map(|_| ResponseCache::key(&request));
        if let (Some(cache), Some(key)) = (&self.cache, &key)
            && let Some(response) = cache.get(key)
        {
            return Ok(response);
        }
        let response = tokio::time::timeout(timeout, self.client.chat().create(request))
            .await
            .map_err(|_| LlmError::Timeout(timeout))?
            .map_err(|err| self.endpoint_error(err))?;
        if let (Some(cache), Some(key)) = (&self.cache, &key) {
            cache.put(key, &response);
        }
        Ok(response)
    }

    /// The model the settings configure, or `None` when `llm.base_url` is unset.
    pub fn from_settings(get: Lookup<'_>) -> Result<Option<Llm>, LlmError> {
        let Some(base_url) = get("llm.base_url") else { return Ok(None) };
        let model = get("llm.model").ok_or_else(|| {
            LlmError::Config(
                "llm.model (PIVOTWATCH_LLM_MODEL) is required when llm.base_url is set".into(),
            )
        })?;
        Llm::new(&base_url, get("llm.api_key").map(Secret::new), &model, Duration::from_secs(60))
            .map(Some)
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// One chat completion that may call the given tools (several at once). A turn with
    /// neither text nor tool calls is `Empty`.
    pub async fn chat(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        timeout: Duration,
    ) -> Result<Turn, LlmError> {
        let mut request = CreateChatCompletionRequestArgs::default();
        request
            .model(self.model.clone())
            .messages(messages.iter().map(Message::to_request).collect::<Vec<_>>())
            .temperature(0.0);
        if !tools.is_empty() {
            request
                .tools(
                    tools
                        .iter()
                        .map(|tool| {
                            ChatCompletionTools::Function(ChatCompletionTool {
                                function: FunctionObject {
                                    name: tool.name.clone(),
                                    description: Some(tool.description.clone()),
                                    parameters: Some(tool.parameters.clone()),
                                    strict: None,
                                },
                            })
                        })
                        .collect::<Vec<_>>(),
                )
                .parallel_tool_calls(true);
        }
        let request = request.build().map_err(|err| LlmError::Config(err.to_string()))?;
        let timeout = timeout.min(self.timeout);
        let started = Instant::now();
        let response = self.create(request, timeout).await?;
        let usage = response.usage.clone();
        let Some(choice) = response.choices.into_iter().next() else {
            return Err(LlmError::Empty);
        };
        let tool_calls: Vec<ToolCall> = choice
            .message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .filter_map(|call| match call {
                ChatCompletionMessageToolCalls::Function(call) => Some(ToolCall {
                    id: call.id,
                    name: call.function.name,
                    arguments: call.function.arguments,
                }),
                // Custom (free-text) tools are never offered, so never honoured.
                ChatCompletionMessageToolCalls::Custom(_) => None,
            })
            .collect();
        let content = choice.message.content.filter(|t| !t.trim().is_empty());
        if content.is_none() && tool_calls.is_empty() {
            return Err(LlmError::Empty);
        }
        Ok(Turn {
            content,
            tool_calls,
            input_tokens: usage.as_ref().map_or(0, |u| u64::from(u.prompt_tokens)),
            output_tokens: usage.as_ref().map_or(0, |u| u64::from(u.completion_tokens)),
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    fn endpoint_error(&self, err: async_openai::error::OpenAIError) -> LlmError {
        match err {
            async_openai::error::OpenAIError::Reqwest(err) if err.is_timeout() => {
                LlmError::Timeout(self.timeout)
            }
            err => LlmError::Endpoint(err.to_string()),
        }
    }

    /// One chat completion.
    pub async fn complete(
        &self,
        messages: Vec<ChatCompletionRequestMessage>,
    ) -> Result<Completion, LlmError> {
        let request = CreateChatCompletionRequestArgs::default()
            .model(self.model.clone())
            .messages(messages)
            .temperature(0.0)
            .build()
            .map_err(|err| LlmError::Config(err.to_string()))?;
        let started = Instant::now();
        let span = tracing::info_span!(
            "gen_ai.chat",
            gen_ai.operation.name = "chat",
            gen_ai.system = "openai",
            gen_ai.request.model = %self.model,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
        );
        let response = self.create(request, self.timeout).instrument(span.clone()).await?;
        let usage = response.usage.clone();
        if let Some(usage) = &usage {
            span.record("gen_ai.usage.input_tokens", usage.prompt_tokens);
            span.record("gen_ai.usage.output_tokens", usage.completion_tokens);
        }
        let text = response
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .filter(|t| !t.trim().is_empty())
            .ok_or(LlmError::Empty)?;
        Ok(Completion {
            text,
            input_tokens: usage.as_ref().map_or(0, |u| u64::from(u.prompt_tokens)),
            output_tokens: usage.as_ref().map_or(0, |u| u64::from(u.completion_tokens)),
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

impl Prompt {
    /// Records one model call made with this prompt as an `inference` in the audit
    /// trail, when there is one: the model, the prompt's id and hash, tokens, latency,
    /// the tools it asked for and the evidence ids it cited. A trail that cannot be
    /// written is logged, never a reason to fail the answer.
    pub async fn record(
        &self,
        store: Option<&crate::store::Store>,
        model: &str,
        (input_tokens, output_tokens, latency_ms): (u64, u64, u64),
        tool_calls: Vec<String>,
        evidence: Vec<String>,
    ) {
        let Some(store) = store else { return };
        let inference = crate::audit::Inference {
            model: model.to_string(),
            prompt_id: self.id.to_string(),
            prompt_hash: self.hash(),
            input_tokens,
            output_tokens,
            latency_ms,
            tool_calls,
            evidence,
        };
        let payload = serde_json::to_value(&inference).unwrap_or_default();
        let actor = crate::audit::Actor::Agent;
        if let Err(err) =
            crate::audit::append(store, &actor, crate::audit::Kind::Inference, payload).await
        {
            tracing::error!("an inference could not be recorded in the audit trail: {err}");
        }
    }
}

/// `text` with the hex nonce after every `untrusted-data ` replaced by `*`.
fn mask_nonces(text: &str) -> String {
    const MARK: &str = "untrusted-data ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        let (head, tail) = rest.split_at(at + MARK.len());
        out.push_str(head);
        let hex = tail.chars().take_while(char::is_ascii_hexdigit).count();
        out.push('*');
        rest = &tail[hex..];
    }
    out.push_str(rest);
    out
}

/// Model answers on disk, one file per request, keyed by the SHA-256 of the whole request
/// (model, messages, tools, parameters). A folder per eval suite, so one suite's answers
/// can be cleared alone; files, so what is cached can be read and deleted by hand.
#[derive(Debug)]
pub struct ResponseCache {
    dir: std::path::PathBuf,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl ResponseCache {
    pub fn open(dir: &Path) -> std::io::Result<ResponseCache> {
        std::fs::create_dir_all(dir)?;
        Ok(ResponseCache {
            dir: dir.to_path_buf(),
            hits: Default::default(),
            misses: Default::default(),
        })
    }

    /// Deletes every cached answer in `dir`.
    pub fn clear(dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_dir_all(dir) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// The request's hash, with the per-run fence nonces masked: they are random so
    /// that planted text cannot guess them, and would otherwise make every request of
    /// a run with tools new to the cache.
    fn key(request: &CreateChatCompletionRequest) -> String {
        let body = serde_json::to_string(request).unwrap_or_default();
        Sha256::digest(mask_nonces(&body).as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn get(&self, key: &str) -> Option<CreateChatCompletionResponse> {
        use std::sync::atomic::Ordering;
        let found = std::fs::read(self.dir.join(format!("{key}.json")))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn put(&self, key: &str, response: &CreateChatCompletionResponse) {
        let complete = response.choices.first().is_some_and(|choice| {
            matches!(choice.finish_reason, Some(FinishReason::Stop | FinishReason::ToolCalls))
                && choice.message.refusal.is_none()
                && (choice.message.content.as_deref().is_some_and(|t| !t.trim().is_empty())
                    || choice.message.tool_calls.as_ref().is_some_and(|c| !c.is_empty()))
        });
        if !complete {
            return;
        }
        let Ok(bytes) = serde_json::to_vec(response) else { return };
        let staging = self.dir.join(format!("{key}.tmp"));
        if std::fs::write(&staging, bytes).is_ok() {
            let _ = std::fs::rename(&staging, self.dir.join(format!("{key}.json")));
        }
    }

    /// Answers served from the cache, and requests it could not answer.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_nonces_are_masked_and_nothing_else() {
        let a = mask_nonces("x <untrusted-data 00ff12 id=E1> y </untrusted-data 00ff12> z");
        let b = mask_nonces("x <untrusted-data abcdef id=E1> y </untrusted-data abcdef> z");
        assert_eq!(a, b);
        assert_eq!(a, "x <untrusted-data * id=E1> y </untrusted-data *> z");
        assert_ne!(mask_nonces("id=E1"), mask_nonces("id=E2"));
    }

    #[test]
    fn a_prompts_folder_takes_the_highest_version_and_refuses_unknown_families() {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::write(dir.path().join("hunt_xql.v1.md"), "one").unwrap();
        std::fs::write(dir.path().join("hunt_xql.v3.md"), "three").unwrap();
        std::fs::write(dir.path().join("README.md"), "notes").unwrap();
        let prompts = Prompts::from_dir(dir.path()).unwrap();
        let chosen = prompts.get(&HUNT_XQL);
        assert_eq!((chosen.id.as_ref(), chosen.text.as_ref()), ("hunt_xql.v3", "three"));
        assert_eq!(prompts.get(&TRIAGE), TRIAGE);
        std::fs::write(dir.path().join("hunt_sql.v2.md"), "typo").unwrap();
        let err = Prompts::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("hunt_sql") && err.contains("known"), "{err}");
    }
}
