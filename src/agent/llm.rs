//! The model: any OpenAI-compatible chat completions endpoint (OpenAI, Azure OpenAI,
//! vLLM, Ollama, llama.cpp server) through async-openai, configured by
//! `PIVOTWATCH_LLM_BASE_URL`, `PIVOTWATCH_LLM_API_KEY` and `PIVOTWATCH_LLM_MODEL`.
//!
//! Every call has a deadline. async-openai's own retry layer repeats a request that met a
//! rate limit (honouring `Retry-After`), a server error or a refused connection, three
//! times with exponential back-off; anything else fails at once, so the caller can fall
//! back to the offline planner and say so.

use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestToolMessage, ChatCompletionRequestUserMessage, ChatCompletionTool,
    ChatCompletionTools, CreateChatCompletionRequestArgs, FunctionCall, FunctionObject,
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

/// A prompt template: its id, text and the SHA-256 the audit trail records.
#[derive(Clone, Debug)]
pub struct Prompt {
    pub id: &'static str,
    pub text: &'static str,
}

impl Prompt {
    pub fn hash(&self) -> String {
        Sha256::digest(self.text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The system prompt for question → XQL.
pub const HUNT_XQL: Prompt =
    Prompt { id: "hunt_xql.v1", text: include_str!("../../prompts/hunt_xql.v1.md") };
/// The repair prompt, with `{errors}` filled in.
pub const HUNT_XQL_REPAIR: Prompt =
    Prompt { id: "hunt_xql_repair.v1", text: include_str!("../../prompts/hunt_xql_repair.v1.md") };

/// The system prompt for triage with tools.
pub const TRIAGE: Prompt =
    Prompt { id: "triage.v1", text: include_str!("../../prompts/triage.v1.md") };
/// Sent back once when a triage narrative states figures its evidence does not hold.
pub const TRIAGE_REWRITE: Prompt =
    Prompt { id: "triage_rewrite.v1", text: include_str!("../../prompts/triage_rewrite.v1.md") };

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

pub struct Llm {
    client: Client<OpenAIConfig>,
    model: String,
    timeout: Duration,
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
        })
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
        let response = tokio::time::timeout(timeout, self.client.chat().create(request))
            .await
            .map_err(|_| LlmError::Timeout(timeout))?
            .map_err(|err| self.endpoint_error(err))?;
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
        let response = tokio::time::timeout(self.timeout, self.client.chat().create(request))
            .instrument(span.clone())
            .await
            .map_err(|_| LlmError::Timeout(self.timeout))?
            .map_err(|err| self.endpoint_error(err))?;
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
