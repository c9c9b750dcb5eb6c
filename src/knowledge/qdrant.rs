//! The knowledge index on a Qdrant server, for deployments whose replicas share one
//! index. One collection holds every document as a point with a sparse vector named
//! `text` (BM25 term weights; the collection's IDF modifier supplies the IDF half) and,
//! when an embedder is configured, a dense cosine vector named `dense`. Hybrid queries
//! prefetch from both and fuse them with Qdrant's reciprocal rank fusion.

use std::collections::HashMap;

use async_trait::async_trait;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    Distance, FieldType, Filter as QFilter, Fusion, Modifier, PointStruct, PrefetchQueryBuilder,
    Query as QQuery, QueryPointsBuilder, SparseVectorParamsBuilder, SparseVectorsConfigBuilder,
    UpsertPointsBuilder, VectorInput, VectorParamsBuilder, VectorsConfigBuilder,
};
use tokio::sync::OnceCell;

use super::sparse::doc_weights;
use super::{Doc, Hit, KnowledgeError, KnowledgeIndex, Mode, Query};

/// The name of the sparse (lexical) vector in every point.
pub const SPARSE: &str = "text";
/// The name of the dense vector, when there is one.
pub const DENSE: &str = "dense";
/// The payload fields with keyword indexes, the ones searches filter on.
pub const INDEXED_FIELDS: [&str; 7] =
    ["kind", "tactic", "vendor", "model", "device_kind", "verdict", "technique"];
/// The document length BM25 normalises against. Qdrant keeps no length statistics, so a
/// fixed typical length stands in for the corpus average.
const TYPICAL_LEN: f32 = 120.0;

pub struct QdrantIndex {
    client: Qdrant,
    collection: String,
    /// Set once the collection is known to exist with its indexes.
    ready: OnceCell<()>,
}

impl QdrantIndex {
    /// A client of the server at `url` (its gRPC port, usually 6334).
    pub fn connect(
        url: &str,
        api_key: Option<String>,
        collection: &str,
    ) -> Result<QdrantIndex, KnowledgeError> {
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .timeout(std::time::Duration::from_secs(10))
            // The version check is a request at start-up that fails loudly when the
            // server is down; the first real request reports that clearly enough.
            .skip_compatibility_check()
            .build()
            .map_err(|err| KnowledgeError::Config(format!("qdrant url {url:?}: {err}")))?;
        Ok(QdrantIndex { client, collection: collection.to_string(), ready: OnceCell::new() })
    }

    /// Creates the collection with its vectors and payload indexes when it is missing.
    /// The dense size is fixed by the first vectors written.
    async fn ensure(&self, dense_size: Option<u64>) -> Result<(), KnowledgeError> {
        self.ready
            .get_or_try_init(|| async {
                let exists =
                    self.client.collection_exists(&self.collection).await.map_err(qdrant)?;
                if exists {
                    return Ok(());
                }
                let mut sparse = SparseVectorsConfigBuilder::default();
                sparse.add_named_vector_params(
                    SPARSE,
                    SparseVectorParamsBuilder::default().modifier(Modifier::Idf as i32),
                );
                let mut create =
                    CreateCollectionBuilder::new(&self.collection).sparse_vectors_config(sparse);
                if let Some(size) = dense_size {
                    let mut dense = VectorsConfigBuilder::default();
                    dense.add_named_vector_params(
                        DENSE,
                        VectorParamsBuilder::new(size, Distance::Cosine),
                    );
                    create = create.vectors_config(dense);
                }
                self.client.create_collection(create).await.map_err(qdrant)?;
                for field in INDEXED_FIELDS {
                    self.client
                        .create_field_index(
                            CreateFieldIndexCollectionBuilder::new(
                                &self.collection,
                                field,
                                FieldType::Keyword,
                            )
                            .wait(true),
                        )
                        .await
                        .map_err(qdrant)?;
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Whether the collection exists; reading never creates it, since its dense size is
    /// only known from the first vectors written.
    async fn exists(&self) -> Result<bool, KnowledgeError> {
        if self.ready.initialized() {
            return Ok(true);
        }
        self.client.collection_exists(&self.collection).await.map_err(qdrant)
    }

    fn filter(query: &Query) -> Option<QFilter> {
        let mut must = Vec::new();
        if let Some(kind) = &query.filter.kind {
            must.push(Condition::matches("kind", kind.clone()));
        }
        for (field, value) in &query.filter.fields {
            must.push(Condition::matches(field.as_str(), value.clone()));
        }
        (!must.is_empty()).then(|| QFilter::must(must))
    }
}

fn qdrant(err: qdrant_client::QdrantError) -> KnowledgeError {
    KnowledgeError::Qdrant(err.to_string())
}

/// A document id as a point id: 64-bit FNV-1a, stable across processes. The document
/// id itself travels in the payload.
pub fn point_id(doc_id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in doc_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A document as a point's payload: the filterable fields at the top level, the whole
/// document under `doc`.
pub fn payload(doc: &Doc) -> serde_json::Value {
    let mut payload = serde_json::Map::new();
    payload.insert("doc_id".into(), doc.id.clone().into());
    payload.insert("kind".into(), doc.kind.clone().into());
    for (field, values) in &doc.fields {
        if field != "kind" && field != "doc_id" && field != "doc" {
            payload.insert(field.clone(), values.clone().into());
        }
    }
    payload.insert("doc".into(), serde_json::to_value(doc).unwrap_or_default());
    serde_json::Value::Object(payload)
}

#[async_trait]
impl KnowledgeIndex for QdrantIndex {
    async fn upsert(&self, docs: &[Doc], dense: &[Vec<f32>]) -> Result<(), KnowledgeError> {
        if docs.is_empty() {
            return Ok(());
        }
        if !dense.is_empty() && dense.len() != docs.len() {
            return Err(KnowledgeError::Config(format!(
                "{} dense vectors for {} documents",
                dense.len(),
                docs.len()
            )));
        }
        self.ensure(dense.first().map(|v| v.len() as u64)).await?;
        let mut points = Vec::with_capacity(docs.len());
        for (i, doc) in docs.iter().enumerate() {
            let mut vectors: HashMap<String, qdrant_client::qdrant::Vector> = HashMap::new();
            let weights = doc_weights(&doc.terms(), TYPICAL_LEN);
            vectors.insert(SPARSE.into(), weights.into());
            if let Some(vector) = dense.get(i) {
                vectors.insert(DENSE.into(), vector.clone().into());
            }
            let payload = qdrant_client::Payload::try_from(payload(doc))
                .map_err(|err| KnowledgeError::Qdrant(format!("payload of {}: {err}", doc.id)))?;
            points.push(PointStruct::new(point_id(&doc.id), vectors, payload));
        }
        // Batches keep each request well under the server's message size limit.
        for batch in points.chunks(256) {
            self.client
                .upsert_points(
                    UpsertPointsBuilder::new(&self.collection, batch.to_vec()).wait(true),
                )
                .await
                .map_err(qdrant)?;
        }
        Ok(())
    }

    async fn search(&self, query: &Query) -> Result<Vec<Hit>, KnowledgeError> {
        if !self.exists().await? {
            return Ok(Vec::new());
        }
        let limit = query.limit as u64;
        let sparse_input = || VectorInput::from(query.sparse.as_slice());
        let filter = Self::filter(query);
        let mut request = QueryPointsBuilder::new(&self.collection).limit(limit).with_payload(true);
        match (query.mode, &query.dense) {
            (Mode::Hybrid, Some(dense)) => {
                let depth = (limit * 4).max(20);
                let mut sparse = PrefetchQueryBuilder::default()
                    .query(QQuery::new_nearest(sparse_input()))
                    .using(SPARSE)
                    .limit(depth);
                let mut dense_prefetch = PrefetchQueryBuilder::default()
                    .query(QQuery::new_nearest(dense.clone()))
                    .using(DENSE)
                    .limit(depth);
                if let Some(filter) = &filter {
                    sparse = sparse.filter(filter.clone());
                    dense_prefetch = dense_prefetch.filter(filter.clone());
                }
                request = request
                    .add_prefetch(sparse)
                    .add_prefetch(dense_prefetch)
                    .query(QQuery::new_fusion(Fusion::Rrf));
            }
            (Mode::Dense, Some(dense)) => {
                request = request.query(QQuery::new_nearest(dense.clone())).using(DENSE);
            }
            _ => {
                request = request.query(QQuery::new_nearest(sparse_input())).using(SPARSE);
            }
        }
        if let Some(filter) = filter {
            request = request.filter(filter);
        }
        let answer = self.client.query(request).await.map_err(qdrant)?;
        let mut hits = Vec::with_capacity(answer.result.len());
        for point in answer.result {
            let Some(doc) = point.payload.get("doc") else { continue };
            let doc: Doc = serde_json::to_value(doc)
                .and_then(serde_json::from_value)
                .map_err(|err| KnowledgeError::Qdrant(format!("a point's doc payload: {err}")))?;
            hits.push(Hit { doc, score: point.score, matched: Vec::new() });
        }
        Ok(hits)
    }

    async fn count(&self) -> Result<usize, KnowledgeError> {
        if !self.exists().await? {
            return Ok(0);
        }
        let count = self
            .client
            .count(CountPointsBuilder::new(&self.collection).exact(true))
            .await
            .map_err(qdrant)?;
        Ok(count.result.map_or(0, |r| r.count as usize))
    }
}
