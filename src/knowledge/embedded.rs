//! The index that needs no server: exact search in process. BM25 over posting lists
//! (term frequencies and document lengths kept raw, so adding a document is cheap and
//! the statistics stay exact) and, when documents carry dense vectors, a brute-force
//! cosine scan. The corpus is small (ATT&CK for ICS is under 300 live objects, plus
//! device models and past cases), so exact search answers in well under a millisecond
//! per thousand documents; see `benches/knowledge.rs`.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;

use super::sparse::{idf, term_index, tf_weight};
use super::{Doc, Hit, KnowledgeError, KnowledgeIndex, Mode, Query, RRF_K};

#[derive(Default)]
pub struct EmbeddedIndex {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    docs: Vec<Doc>,
    by_id: HashMap<String, usize>,
    /// Each document's distinct term indexes, to take it out of the posting lists.
    doc_terms: Vec<Vec<u32>>,
    lengths: Vec<f32>,
    total_len: f64,
    /// Term index to (document, term frequency).
    postings: HashMap<u32, Vec<(u32, f32)>>,
    dense: Vec<Option<Vec<f32>>>,
}

impl State {
    fn put(&mut self, doc: Doc, dense: Option<Vec<f32>>) {
        let terms = doc.terms();
        let mut counts: HashMap<u32, f32> = HashMap::new();
        for term in &terms {
            *counts.entry(term_index(term)).or_default() += 1.0;
        }
        let slot = match self.by_id.get(&doc.id) {
            Some(&slot) => {
                self.unlink(slot);
                slot
            }
            None => {
                self.docs.push(doc.clone());
                self.doc_terms.push(Vec::new());
                self.lengths.push(0.0);
                self.dense.push(None);
                self.by_id.insert(doc.id.clone(), self.docs.len() - 1);
                self.docs.len() - 1
            }
        };
        let id = u32::try_from(slot).unwrap_or(u32::MAX);
        for (&term, &tf) in &counts {
            self.postings.entry(term).or_default().push((id, tf));
        }
        self.doc_terms[slot] = counts.into_keys().collect();
        self.lengths[slot] = terms.len() as f32;
        self.total_len += terms.len() as f64;
        self.docs[slot] = doc;
        self.dense[slot] = dense;
    }

    /// Takes a document's terms out of the statistics before it is replaced.
    fn unlink(&mut self, slot: usize) {
        let id = u32::try_from(slot).unwrap_or(u32::MAX);
        for term in std::mem::take(&mut self.doc_terms[slot]) {
            if let Some(list) = self.postings.get_mut(&term) {
                list.retain(|(doc, _)| *doc != id);
            }
        }
        self.total_len -= f64::from(self.lengths[slot]);
    }

    /// BM25 scores of the documents that share a term with the query.
    fn sparse_scores(&self, query: &[(u32, f32)]) -> HashMap<u32, f32> {
        let n = self.docs.len() as f32;
        let avg_len = (self.total_len / self.docs.len().max(1) as f64) as f32;
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for (term, q_weight) in query {
            let Some(list) = self.postings.get(term) else { continue };
            let term_idf = idf(n, list.len() as f32);
            for &(doc, tf) in list {
                let weight = tf_weight(tf, self.lengths[doc as usize], avg_len);
                *scores.entry(doc).or_default() += q_weight * term_idf * weight;
            }
        }
        scores
    }

    fn dense_scores(&self, query: &[f32]) -> Vec<(u32, f32)> {
        let mut scores = Vec::with_capacity(self.dense.len());
        for (slot, vector) in self.dense.iter().enumerate() {
            if let Some(vector) = vector
                && vector.len() == query.len()
            {
                scores.push((u32::try_from(slot).unwrap_or(u32::MAX), dot(vector, query)));
            }
        }
        scores
    }

    /// The best `limit` documents passing the filter, best first. Only the best are
    /// sorted: a partial selection first puts them ahead of the rest.
    fn ranked(
        &self,
        scores: impl IntoIterator<Item = (u32, f32)>,
        query: &Query,
        limit: usize,
    ) -> Vec<(u32, f32)> {
        let mut ranked: Vec<(u32, f32)> = scores
            .into_iter()
            .filter(|(doc, score)| *score > 0.0 && query.filter.matches(&self.docs[*doc as usize]))
            .collect();
        // Ties broken by document id so results never depend on hash order.
        let order = |a: &(u32, f32), b: &(u32, f32)| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.docs[a.0 as usize].id.cmp(&self.docs[b.0 as usize].id))
        };
        if ranked.len() > limit && limit > 0 {
            ranked.select_nth_unstable_by(limit - 1, order);
            ranked.truncate(limit);
        }
        ranked.sort_by(order);
        ranked.truncate(limit);
        ranked
    }
}

#[async_trait]
impl KnowledgeIndex for EmbeddedIndex {
    async fn upsert(&self, docs: &[Doc], dense: &[Vec<f32>]) -> Result<(), KnowledgeError> {
        if !dense.is_empty() && dense.len() != docs.len() {
            return Err(KnowledgeError::Config(format!(
                "{} dense vectors for {} documents",
                dense.len(),
                docs.len()
            )));
        }
        let mut state = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, doc) in docs.iter().enumerate() {
            state.put(doc.clone(), dense.get(i).cloned());
        }
        Ok(())
    }

    async fn search(&self, query: &Query) -> Result<Vec<Hit>, KnowledgeError> {
        let state = self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Each half looks deeper than the answer so the fusion has material.
        let depth = (query.limit * 4).max(20);
        let sparse = || state.ranked(state.sparse_scores(&query.sparse), query, depth);
        let dense = || match &query.dense {
            Some(vector) => state.ranked(state.dense_scores(vector), query, depth),
            None => Vec::new(),
        };
        let ranked: Vec<(u32, f32)> = match query.mode {
            Mode::Sparse => sparse(),
            Mode::Dense => dense(),
            Mode::Hybrid => fuse(&[sparse(), dense()]),
        };
        Ok(ranked
            .into_iter()
            .take(query.limit)
            .map(|(doc, score)| Hit {
                doc: state.docs[doc as usize].clone(),
                score,
                matched: Vec::new(),
            })
            .collect())
    }

    async fn count(&self) -> Result<usize, KnowledgeError> {
        Ok(self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner).docs.len())
    }
}

/// The dot product, summed in eight lanes so the compiler can use SIMD (a single
/// running sum is a dependency chain it may not reorder).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0_f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for lane in 0..8 {
            lanes[lane] += a[i * 8 + lane] * b[i * 8 + lane];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for i in chunks * 8..a.len().min(b.len()) {
        sum += a[i] * b[i];
    }
    sum
}

/// Reciprocal rank fusion: a document's score is the sum over the lists of
/// 1 / (k + its rank), so agreement between the halves counts and raw scores of
/// different scales never meet.
pub fn fuse(lists: &[Vec<(u32, f32)>]) -> Vec<(u32, f32)> {
    let mut fused: HashMap<u32, f32> = HashMap::new();
    for list in lists {
        for (rank, (doc, _)) in list.iter().enumerate() {
            *fused.entry(*doc).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
    }
    let mut ranked: Vec<(u32, f32)> = fused.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::knowledge::sparse::{query_terms, query_weights};
    use crate::knowledge::{Filter, attack_docs};

    fn doc(id: &str, kind: &str, title: &str, text: &str) -> Doc {
        Doc {
            id: id.into(),
            kind: kind.into(),
            title: title.into(),
            text: text.into(),
            fields: BTreeMap::new(),
        }
    }

    fn query(text: &str, mode: Mode, dense: Option<Vec<f32>>) -> Query {
        Query {
            sparse: query_weights(&query_terms(text)),
            dense,
            mode,
            filter: Filter::default(),
            limit: 5,
        }
    }

    #[tokio::test]
    async fn replacing_a_document_leaves_no_trace_of_the_old_text() {
        let index = EmbeddedIndex::default();
        index.upsert(&[doc("a", "case", "pump ssh", "ssh to the internet")], &[]).await.unwrap();
        index.upsert(&[doc("b", "case", "camera", "rtsp stream")], &[]).await.unwrap();
        assert_eq!(index.search(&query("ssh", Mode::Sparse, None)).await.unwrap()[0].doc.id, "a");
        index.upsert(&[doc("a", "case", "pump", "firmware update")], &[]).await.unwrap();
        assert_eq!(index.count().await.unwrap(), 2);
        assert!(index.search(&query("ssh", Mode::Sparse, None)).await.unwrap().is_empty());
        let hits = index.search(&query("firmware", Mode::Sparse, None)).await.unwrap();
        assert_eq!(hits.len(), 1);
    }

    #[tokio::test]
    async fn hybrid_search_rewards_agreement_and_filters_apply() {
        let index = EmbeddedIndex::default();
        let docs = [
            doc("x", "technique", "Remote Services", "ssh telnet rdp"),
            doc("y", "technique", "Remote System Discovery", "scan sweep"),
            doc("z", "case", "Remote Services case", "ssh from a pump"),
        ];
        let dense = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        index.upsert(&docs, &dense).await.unwrap();
        let q = query("ssh sessions", Mode::Hybrid, Some(vec![1.0, 0.0]));
        let hits = index.search(&q).await.unwrap();
        assert_eq!(hits[0].doc.id, "x", "first in both halves");
        let q = Query { filter: Filter::kind("technique"), ..q };
        assert!(index.search(&q).await.unwrap().iter().all(|h| h.doc.kind == "technique"));
        let dense_only = index.search(&query("", Mode::Dense, Some(vec![0.0, 1.0]))).await.unwrap();
        assert_eq!(dense_only[0].doc.id, "y");
    }

    #[tokio::test]
    async fn the_attack_corpus_answers_clear_questions() {
        let index = EmbeddedIndex::default();
        index.upsert(&attack_docs(crate::knowledge::Attack::shipped()), &[]).await.unwrap();
        for (question, expected) in [
            ("infusion pump opened an SSH session to an outside address", "T0886"),
            ("someone swept the subnet looking for hosts", "T0846"),
            ("engineering workstation pushed new ladder logic to the PLC", "T0843"),
        ] {
            let q =
                Query { filter: Filter::kind("technique"), ..query(question, Mode::Sparse, None) };
            let hits = index.search(&q).await.unwrap();
            let ids: Vec<&str> = hits.iter().map(|h| h.doc.id.as_str()).collect();
            assert!(ids.contains(&expected), "{question}: {ids:?}");
        }
    }
}
