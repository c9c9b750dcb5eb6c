//! Dense vectors from an OpenAI-compatible embeddings endpoint (`POST {base}/embeddings`,
//! as OpenAI, Azure OpenAI, vLLM, Ollama and llama.cpp serve it).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::KnowledgeError;

/// Turns texts into vectors of one fixed dimension.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// The model's name, recorded beside the vectors it made.
    fn model(&self) -> &str;

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, KnowledgeError>;
}

/// An OpenAI-compatible embeddings endpoint.
pub struct HttpEmbedder {
    http: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Option<String>,
}

/// How many texts one request carries; endpoints cap the batch (OpenAI at 2,048).
const BATCH: usize = 128;

impl HttpEmbedder {
    /// `base_url` ends before `/embeddings`, e.g. `http://127.0.0.1:11434/v1`.
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<HttpEmbedder, KnowledgeError> {
        reqwest::Url::parse(base_url)
            .map_err(|err| KnowledgeError::Config(format!("embeddings url {base_url:?}: {err}")))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|err| KnowledgeError::Config(format!("embeddings client: {err}")))?;
        Ok(HttpEmbedder {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            api_key,
        })
    }
}

#[async_trait]
impl Embedder for HttpEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, KnowledgeError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            let mut request = self
                .http
                .post(format!("{}/embeddings", self.base_url))
                .json(&json!({"model": self.model, "input": batch}));
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key);
            }
            let response = request
                .send()
                .await
                .map_err(|err| KnowledgeError::Embeddings(err.without_url().to_string()))?;
            let status = response.status();
            let body: Value = response
                .json()
                .await
                .map_err(|err| KnowledgeError::Embeddings(format!("answer is not JSON: {err}")))?;
            if !status.is_success() {
                let message = body["error"]["message"].as_str().unwrap_or("no message");
                return Err(KnowledgeError::Embeddings(format!("HTTP {status}: {message}")));
            }
            let mut data: Vec<&Value> = body["data"].as_array().into_iter().flatten().collect();
            // Entries carry their input's position; do not trust the order alone.
            data.sort_by_key(|d| d["index"].as_u64().unwrap_or(u64::MAX));
            if data.len() != batch.len() {
                return Err(KnowledgeError::Embeddings(format!(
                    "{} vectors for {} inputs",
                    data.len(),
                    batch.len()
                )));
            }
            for item in data {
                let vector: Vec<f32> = item["embedding"]
                    .as_array()
                    .ok_or_else(|| KnowledgeError::Embeddings("an entry has no embedding".into()))?
                    .iter()
                    .map(|v| v.as_f64().unwrap_or(0.0) as f32)
                    .collect();
                if let Some(first) = vectors.first().map(Vec::len)
                    && first != vector.len()
                {
                    return Err(KnowledgeError::Embeddings(format!(
                        "vectors of {first} and {} dimensions from one model",
                        vector.len()
                    )));
                }
                vectors.push(normalised(vector));
            }
        }
        Ok(vectors)
    }
}

/// The vector scaled to length one, so a dot product is the cosine.
pub fn normalised(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut vector {
            *x /= norm;
        }
    }
    vector
}
