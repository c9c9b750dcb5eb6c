//! What the agent and the hunts can look up: ATT&CK for ICS, what each device model
//! normally does, and how analysts judged past cases.
//!
//! Everything is a `Doc` in a `KnowledgeIndex`: the embedded index in process by default,
//! a Qdrant server when one is configured. Search is hybrid: BM25 over terms (always; the
//! query expanded with ATT&CK words for analysts' network words) and, when an embeddings
//! endpoint is configured, dense vectors, fused by reciprocal rank.

pub mod attack;
pub mod cases;
pub mod devices;
pub mod embed;
pub mod embedded;
pub mod qdrant;
pub mod sparse;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use attack::Attack;
pub use embed::{Embedder, HttpEmbedder};
pub use embedded::EmbeddedIndex;
pub use qdrant::QdrantIndex;

#[derive(Debug, Error)]
pub enum KnowledgeError {
    #[error("knowledge settings: {0}")]
    Config(String),
    #[error("embeddings endpoint: {0}")]
    Embeddings(String),
    #[error("Qdrant: {0}")]
    Qdrant(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// One retrievable thing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    /// Unique across kinds: `T0886`, `M0930`, `device:Axis/P3245-LV`, `case:41`.
    pub id: String,
    /// `technique`, `tactic`, `mitigation`, `asset`, `group`, `software`, `campaign`,
    /// `device` or `case`.
    pub kind: String,
    pub title: String,
    pub text: String,
    /// Keyword fields a search can filter on: `tactic`, `vendor`, `model`, `verdict`.
    #[serde(default)]
    pub fields: BTreeMap<String, Vec<String>>,
}

impl Doc {
    /// The terms the lexical half indexes: the title counts three times.
    pub fn terms(&self) -> Vec<String> {
        let title = sparse::terms(&self.title);
        let mut all = Vec::with_capacity(title.len() * 3 + 64);
        for _ in 0..3 {
            all.extend(title.iter().cloned());
        }
        all.extend(sparse::terms(&self.text));
        for values in self.fields.values() {
            for value in values {
                all.extend(sparse::terms(value));
            }
        }
        all
    }

    /// The text the dense half embeds.
    pub fn embedding_text(&self) -> String {
        format!("{}\n{}", self.title, self.text)
    }
}

/// Payload conditions a hit must meet; all given ones must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    #[serde(default)]
    pub kind: Option<String>,
    /// Field name to the value it must contain.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

impl Filter {
    pub fn kind(kind: &str) -> Filter {
        Filter { kind: Some(kind.to_string()), fields: BTreeMap::new() }
    }

    pub fn with(mut self, field: &str, value: &str) -> Filter {
        self.fields.insert(field.to_string(), value.to_string());
        self
    }

    pub fn matches(&self, doc: &Doc) -> bool {
        self.kind.as_ref().is_none_or(|kind| &doc.kind == kind)
            && self.fields.iter().all(|(field, value)| {
                doc.fields.get(field).is_some_and(|values| values.iter().any(|v| v == value))
            })
    }
}

/// Which halves of the hybrid search to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Sparse,
    Dense,
    Hybrid,
}

/// A search as the index receives it: the query's sparse vector always, its dense
/// vector when an embedder made one.
#[derive(Clone, Debug)]
pub struct Query {
    pub sparse: Vec<(u32, f32)>,
    pub dense: Option<Vec<f32>>,
    pub mode: Mode,
    pub filter: Filter,
    pub limit: usize,
}

/// A found document and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub doc: Doc,
    /// The fused score (reciprocal rank fusion) or the single half's score.
    pub score: f32,
    /// The query terms the document shares, best first, when the lexical half found it.
    #[serde(default)]
    pub matched: Vec<String>,
}

/// Where documents are kept and searched.
#[async_trait]
pub trait KnowledgeIndex: Send + Sync {
    /// Adds or replaces documents (by id). `dense` is empty or one vector per document.
    async fn upsert(&self, docs: &[Doc], dense: &[Vec<f32>]) -> Result<(), KnowledgeError>;

    async fn search(&self, query: &Query) -> Result<Vec<Hit>, KnowledgeError>;

    /// How many documents the index holds.
    async fn count(&self) -> Result<usize, KnowledgeError>;
}

/// Reciprocal rank fusion's damping constant: the usual 60.
pub const RRF_K: f32 = 60.0;

/// The knowledge base as its users see it: an index, and an embedder when configured.
#[derive(Clone)]
pub struct Knowledge {
    index: Arc<dyn KnowledgeIndex>,
    embedder: Option<Arc<dyn Embedder>>,
}

impl Knowledge {
    pub fn new(index: Arc<dyn KnowledgeIndex>, embedder: Option<Arc<dyn Embedder>>) -> Knowledge {
        Knowledge { index, embedder }
    }

    /// The embedded index loaded with ATT&CK for ICS and the shipped device knowledge.
    pub async fn embedded_default() -> Result<Knowledge, KnowledgeError> {
        let knowledge = Knowledge::new(Arc::new(EmbeddedIndex::default()), None);
        knowledge.add(&base_docs(devices::DeviceKnowledge::shipped())).await?;
        Ok(knowledge)
    }

    pub fn index(&self) -> &Arc<dyn KnowledgeIndex> {
        &self.index
    }

    pub fn has_dense(&self) -> bool {
        self.embedder.is_some()
    }

    /// Indexes documents, embedding them when an embedder is configured.
    pub async fn add(&self, docs: &[Doc]) -> Result<(), KnowledgeError> {
        let dense = match &self.embedder {
            Some(embedder) => {
                let texts: Vec<String> = docs.iter().map(Doc::embedding_text).collect();
                embedder.embed(&texts).await?
            }
            None => Vec::new(),
        };
        self.index.upsert(docs, &dense).await
    }

    /// Searches in `mode`; without an embedder, dense and hybrid fall back to sparse.
    pub async fn search(
        &self,
        text: &str,
        mode: Mode,
        filter: Filter,
        limit: usize,
    ) -> Result<Vec<Hit>, KnowledgeError> {
        let (words, added) = sparse::split_query(text);
        let (dense, mode) = match (&self.embedder, mode) {
            (Some(embedder), Mode::Dense | Mode::Hybrid) => {
                let vector = embedder.embed(&[text.to_string()]).await?.pop();
                (vector, mode)
            }
            _ => (None, Mode::Sparse),
        };
        let query = Query { sparse: sparse::weigh(&words, &added), dense, mode, filter, limit };
        let mut hits = self.index.search(&query).await?;
        let terms: Vec<String> = words.into_iter().chain(added).collect();
        for hit in &mut hits {
            hit.matched = shared_terms(&terms, &hit.doc);
        }
        Ok(hits)
    }

    /// ATT&CK for ICS techniques for a behaviour that the detection rules did not map,
    /// each with the reason it was chosen.
    pub async fn map_behaviour(
        &self,
        behaviour: &str,
        limit: usize,
    ) -> Result<Vec<Mapping>, KnowledgeError> {
        let hits = self.search(behaviour, Mode::Hybrid, Filter::kind("technique"), limit).await?;
        let attack = Attack::shipped();
        Ok(hits
            .into_iter()
            .map(|hit| {
                let tactics = attack
                    .techniques
                    .get(&hit.doc.id)
                    .map(|t| t.tactics.iter().map(|s| attack.tactic_name(s).to_string()).collect())
                    .unwrap_or_default();
                let reason = if hit.matched.is_empty() {
                    "closest in meaning to the description (dense retrieval)".to_string()
                } else {
                    format!("matched terms: {}", hit.matched.join(", "))
                };
                Mapping { id: hit.doc.id, name: hit.doc.title, tactics, score: hit.score, reason }
            })
            .collect())
    }
}

/// A technique proposed for a behaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    pub id: String,
    pub name: String,
    pub tactics: Vec<String>,
    pub score: f32,
    pub reason: String,
}

/// A technique resolved for display: what detection's rule IDs turn into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TechniqueRef {
    pub id: String,
    pub name: String,
    pub tactics: Vec<String>,
    pub mitigations: Vec<(String, String)>,
    pub url: String,
}

/// Resolves technique IDs (as detection tags findings) to names, tactics and
/// mitigations; an ID this release does not hold is named in the error.
pub fn resolve(ids: &[String]) -> Result<Vec<TechniqueRef>, String> {
    let attack = Attack::shipped();
    ids.iter()
        .map(|id| {
            let t = attack.technique(id)?;
            Ok(TechniqueRef {
                id: t.entry.id.clone(),
                name: t.entry.name.clone(),
                tactics: t.tactics.iter().map(|s| attack.tactic_name(s).to_string()).collect(),
                mitigations: t
                    .mitigations
                    .iter()
                    .map(|m| (m.clone(), attack.name(m).unwrap_or_default().to_string()))
                    .collect(),
                url: t.entry.url.clone(),
            })
        })
        .collect()
}

/// The query terms (before expansion words are counted twice) a document contains.
fn shared_terms(query: &[String], doc: &Doc) -> Vec<String> {
    let doc_terms: std::collections::HashSet<String> = doc.terms().into_iter().collect();
    let mut shared: Vec<String> = Vec::new();
    for term in query {
        if doc_terms.contains(term) && !shared.contains(term) {
            shared.push(term.clone());
        }
    }
    shared.truncate(8);
    shared
}

/// ATT&CK for ICS and the given device knowledge as documents.
pub fn base_docs(devices: &devices::DeviceKnowledge) -> Vec<Doc> {
    let mut docs = attack_docs(Attack::shipped());
    docs.extend(devices.docs());
    docs
}

/// Every live ATT&CK for ICS object as a document. A technique's text carries its
/// tactics and the names of its mitigations and targeted assets too, so a question in
/// those words finds it.
pub fn attack_docs(attack: &Attack) -> Vec<Doc> {
    let mut docs = Vec::new();
    for t in attack.techniques.values() {
        let tactics: Vec<String> =
            t.tactics.iter().map(|s| attack.tactic_name(s).to_string()).collect();
        let assets: Vec<&str> = t.assets.iter().filter_map(|a| attack.name(a)).collect();
        let text = format!(
            "{}\nTactics: {}.\nTargets: {}.\nHow it shows: {}",
            t.entry.description,
            tactics.join(", "),
            assets.join(", "),
            t.detection
        );
        let mut fields = BTreeMap::new();
        fields.insert("tactic".to_string(), t.tactics.clone());
        docs.push(Doc {
            id: t.entry.id.clone(),
            kind: "technique".into(),
            title: t.entry.name.clone(),
            text,
            fields,
        });
    }
    for (short, tactic) in &attack.tactics {
        let mut fields = BTreeMap::new();
        fields.insert("tactic".to_string(), vec![short.clone()]);
        docs.push(Doc {
            id: tactic.id.clone(),
            kind: "tactic".into(),
            title: tactic.name.clone(),
            text: tactic.description.clone(),
            fields,
        });
    }
    for (kind, entry) in attack.others.values() {
        docs.push(Doc {
            id: entry.id.clone(),
            kind: kind.as_str().into(),
            title: entry.name.clone(),
            text: entry.description.clone(),
            fields: BTreeMap::new(),
        });
    }
    docs
}

/// The name of the Qdrant collection pivotwatch keeps its knowledge in, unless
/// `qdrant.collection` says otherwise.
pub const DEFAULT_COLLECTION: &str = "pivotwatch_knowledge";

/// The knowledge base the settings describe: a Qdrant server when `qdrant.url` is set
/// (`PIVOTWATCH_QDRANT_URL`, with `qdrant.api_key` and `qdrant.collection`), else the
/// embedded index; dense vectors when `embeddings.url` and `embeddings.model` are set
/// (`embeddings.api_key` optional). ATT&CK for ICS and the device knowledge are indexed
/// when the index holds fewer documents than they make.
pub async fn from_settings(
    get: crate::actions::settings::Lookup<'_>,
    devices: &devices::DeviceKnowledge,
) -> Result<Knowledge, KnowledgeError> {
    let embedder: Option<Arc<dyn Embedder>> = match (get("embeddings.url"), get("embeddings.model"))
    {
        (Some(url), Some(model)) => Some(Arc::new(HttpEmbedder::new(
            &url,
            &model,
            get("embeddings.api_key"),
            std::time::Duration::from_secs(60),
        )?)),
        (Some(_), None) => {
            return Err(KnowledgeError::Config(
                "embeddings.model (PIVOTWATCH_EMBEDDINGS_MODEL) is required when embeddings.url \
                 is set"
                    .into(),
            ));
        }
        _ => None,
    };
    let index: Arc<dyn KnowledgeIndex> = match get("qdrant.url") {
        Some(url) => Arc::new(QdrantIndex::connect(
            &url,
            get("qdrant.api_key"),
            &get("qdrant.collection").unwrap_or_else(|| DEFAULT_COLLECTION.into()),
        )?),
        None => Arc::new(EmbeddedIndex::default()),
    };
    let knowledge = Knowledge::new(index, embedder);
    let docs = base_docs(devices);
    if knowledge.index.count().await? < docs.len() {
        knowledge.add(&docs).await?;
    }
    Ok(knowledge)
}

/// One behaviour description and the techniques a senior ICS analyst expects for it
/// (`evals/attack_mapping.jsonl`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingCase {
    pub id: String,
    pub query: String,
    /// Best first.
    pub expected: Vec<String>,
}

/// How well retrieval maps behaviour to techniques over an evaluation set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MappingScore {
    pub cases: usize,
    /// The share of expected techniques found in the top five, averaged over cases.
    pub recall_at_5: f64,
    /// The mean reciprocal rank of the first expected technique found (0 when none is
    /// in the top 10).
    pub mrr: f64,
    /// Cases with no expected technique in the top five.
    pub misses: Vec<String>,
}

/// Scores technique retrieval in `mode` over `cases`.
pub async fn score_mapping(
    knowledge: &Knowledge,
    cases: &[MappingCase],
    mode: Mode,
) -> Result<MappingScore, KnowledgeError> {
    let mut score = MappingScore { cases: cases.len(), ..MappingScore::default() };
    for case in cases {
        let hits = knowledge.search(&case.query, mode, Filter::kind("technique"), 10).await?;
        let ids: Vec<&str> = hits.iter().map(|h| h.doc.id.as_str()).collect();
        let found = case.expected.iter().filter(|e| ids.iter().take(5).any(|id| id == e)).count();
        score.recall_at_5 += found as f64 / case.expected.len().max(1) as f64;
        if let Some(rank) = ids.iter().position(|id| case.expected.iter().any(|e| e == id)) {
            score.mrr += 1.0 / (rank as f64 + 1.0);
        }
        if found == 0 {
            score.misses.push(case.id.clone());
        }
    }
    let n = cases.len().max(1) as f64;
    score.recall_at_5 /= n;
    score.mrr /= n;
    Ok(score)
}

/// Reads an evaluation set of JSON lines.
pub fn read_mapping_cases(text: &str) -> Result<Vec<MappingCase>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| serde_json::from_str(line).map_err(|err| format!("line {}: {err}", i + 1)))
        .collect()
}
