//! The Qdrant index against a local gRPC server that records what qdrant-client sends and
//! answers as Qdrant does: the collection's vector config and payload indexes, upserts
//! with payloads and BM25 weights, the hybrid query with its prefetches and fusion. A
//! second test talks to a real server when `PIVOTWATCH_TEST_QDRANT_URL` is set.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use qdrant_client::qdrant::{
    CollectionExists, CollectionExistsResponse, CollectionOperationResponse, CountResponse,
    CountResult, CreateCollection, CreateFieldIndexCollection, FieldType, Modifier, PointId,
    PointsOperationResponse, QueryPoints, QueryResponse, ScoredPoint, UpdateResult, UpsertPoints,
    point_id, query, vector_input, vectors, vectors_config,
};

use pivotwatch::knowledge::qdrant::{DENSE, INDEXED_FIELDS, SPARSE, point_id as doc_point_id};
use pivotwatch::knowledge::sparse::{query_terms, query_weights};
use pivotwatch::knowledge::{Doc, Filter, KnowledgeIndex, Mode, QdrantIndex, Query};

/// What the server saw: the gRPC path and the decoded-later message bytes.
type Calls = Arc<Mutex<Vec<(String, Bytes)>>>;

/// A unary gRPC answer: one length-prefixed message, then `grpc-status: 0` as a trailer.
struct Unary {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for Unary {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

fn framed(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(0);
    out.put_u32(u32::try_from(body.len()).unwrap());
    out.put_slice(&body);
    out.freeze()
}

/// The answer Qdrant gives to each call the index makes. A query answers with the
/// points upserted so far, so the payload round trip is real.
fn answer(path: &str, calls: &Calls) -> Bytes {
    let done = || PointsOperationResponse {
        result: Some(UpdateResult { operation_id: Some(1), status: 2 }),
        ..Default::default()
    };
    match path {
        "/qdrant.Collections/CollectionExists" => {
            let created = calls.lock().unwrap().iter().any(|(p, _)| p.ends_with("/Create"));
            framed(&CollectionExistsResponse {
                result: Some(CollectionExists { exists: created }),
                time: 0.001,
            })
        }
        "/qdrant.Collections/Create" => {
            framed(&CollectionOperationResponse { result: true, time: 0.01 })
        }
        "/qdrant.Points/CreateFieldIndex" | "/qdrant.Points/Upsert" => framed(&done()),
        "/qdrant.Points/Count" => {
            framed(&CountResponse { result: Some(CountResult { count: 3 }), ..Default::default() })
        }
        "/qdrant.Points/Query" => {
            let calls = calls.lock().unwrap();
            let mut result = Vec::new();
            for (p, body) in calls.iter().filter(|(p, _)| p == "/qdrant.Points/Upsert") {
                let _ = p;
                let upsert = UpsertPoints::decode(body.clone()).unwrap();
                for (rank, point) in upsert.points.into_iter().enumerate() {
                    result.push(ScoredPoint {
                        id: point.id,
                        payload: point.payload,
                        score: 1.0 / (rank as f32 + 1.0),
                        ..Default::default()
                    });
                }
            }
            framed(&QueryResponse { result, ..Default::default() })
        }
        other => panic!("unexpected call {other}"),
    }
}

async fn serve() -> (Calls, String) {
    let calls: Calls = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::clone(&calls);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let path = request.uri().path().to_string();
                            let mut body = request.into_body().collect().await.unwrap().to_bytes();
                            // Drop the gRPC frame header: a compression flag and a length.
                            body.advance(5);
                            seen.lock().unwrap().push((path.clone(), body));
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            let reply = Unary {
                                data: Some(answer(&path, &seen)),
                                trailers: Some(trailers),
                            };
                            Ok::<_, Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .body(reply)
                                    .unwrap(),
                            )
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
            });
        }
    });
    (calls, format!("http://{addr}"))
}

fn docs() -> Vec<Doc> {
    let doc = |id: &str, kind: &str, title: &str, text: &str, tactic: &[&str]| {
        let mut fields = BTreeMap::new();
        if !tactic.is_empty() {
            fields.insert("tactic".to_string(), tactic.iter().map(|t| t.to_string()).collect());
        }
        Doc { id: id.into(), kind: kind.into(), title: title.into(), text: text.into(), fields }
    };
    vec![
        doc(
            "T0886",
            "technique",
            "Remote Services",
            "SSH, RDP and VNC into devices",
            &["initial-access", "lateral-movement"],
        ),
        doc("T0846", "technique", "Remote System Discovery", "sweeps for hosts", &["discovery"]),
        doc("case:41", "case", "Case 41 on pump-0007", "SSH to 203.0.113.9", &[]),
    ]
}

#[tokio::test]
async fn the_index_sends_the_collection_config_upserts_and_a_hybrid_query() {
    let (calls, url) = serve().await;
    let index = QdrantIndex::connect(&url, Some("qd-key".into()), "kb_test").unwrap();
    let docs = docs();
    let dense = vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0], vec![0.8, 0.6, 0.0]];
    index.upsert(&docs, &dense).await.unwrap();
    let query = Query {
        sparse: query_weights(&query_terms("ssh from a pump")),
        dense: Some(vec![1.0, 0.0, 0.0]),
        mode: Mode::Hybrid,
        filter: Filter::kind("technique").with("tactic", "lateral-movement"),
        limit: 5,
    };
    let hits = index.search(&query).await.unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0].doc, docs[0], "the document comes back whole from the payload");
    assert_eq!(index.count().await.unwrap(), 3);

    let calls = calls.lock().unwrap().clone();
    let paths: Vec<&str> = calls.iter().map(|(p, _)| p.as_str()).collect();
    let mut expected = vec!["/qdrant.Collections/CollectionExists", "/qdrant.Collections/Create"];
    expected.extend(std::iter::repeat_n("/qdrant.Points/CreateFieldIndex", INDEXED_FIELDS.len()));
    expected.extend(["/qdrant.Points/Upsert", "/qdrant.Points/Query", "/qdrant.Points/Count"]);
    assert_eq!(paths, expected, "a known collection is not asked about again");

    let create = CreateCollection::decode(calls[1].1.clone()).unwrap();
    assert_eq!(create.collection_name, "kb_test");
    let sparse = &create.sparse_vectors_config.unwrap().map[SPARSE];
    assert_eq!(sparse.modifier, Some(Modifier::Idf as i32));
    let Some(vectors_config::Config::ParamsMap(map)) = create.vectors_config.unwrap().config else {
        panic!("named dense vectors expected");
    };
    assert_eq!(map.map[DENSE].size, 3);
    assert_eq!(map.map[DENSE].distance, qdrant_client::qdrant::Distance::Cosine as i32);
    let indexed: Vec<(String, Option<i32>)> = calls[2..2 + INDEXED_FIELDS.len()]
        .iter()
        .map(|(_, body)| {
            let index = CreateFieldIndexCollection::decode(body.clone()).unwrap();
            (index.field_name, index.field_type)
        })
        .collect();
    let keyword = Some(FieldType::Keyword as i32);
    assert_eq!(indexed, INDEXED_FIELDS.map(|f| (f.to_string(), keyword)).to_vec());

    let upsert = UpsertPoints::decode(calls[calls.len() - 3].1.clone()).unwrap();
    assert_eq!(upsert.wait, Some(true));
    assert_eq!(upsert.points.len(), 3);
    let point = &upsert.points[0];
    assert_eq!(
        point.id,
        Some(PointId {
            point_id_options: Some(point_id::PointIdOptions::Num(doc_point_id("T0886")))
        })
    );
    let payload: serde_json::Value = serde_json::to_value(&point.payload).unwrap();
    assert_eq!(payload["kind"], "technique");
    assert_eq!(payload["doc_id"], "T0886");
    assert_eq!(payload["tactic"], serde_json::json!(["initial-access", "lateral-movement"]));
    let Some(vectors::VectorsOptions::Vectors(named)) =
        point.vectors.clone().unwrap().vectors_options
    else {
        panic!("named vectors expected");
    };
    assert!(named.vectors.contains_key(SPARSE) && named.vectors.contains_key(DENSE));

    let sent = QueryPoints::decode(calls[calls.len() - 2].1.clone()).unwrap();
    assert_eq!(sent.limit, Some(5));
    assert_eq!(sent.prefetch.len(), 2);
    assert_eq!(sent.prefetch[0].using.as_deref(), Some(SPARSE));
    assert_eq!(sent.prefetch[1].using.as_deref(), Some(DENSE));
    let Some(query::Variant::Nearest(input)) = sent.prefetch[0].query.clone().unwrap().variant
    else {
        panic!("a nearest query in the sparse prefetch");
    };
    let Some(vector_input::Variant::Sparse(sparse)) = input.variant else {
        panic!("a sparse vector in the sparse prefetch");
    };
    let expected: Vec<u32> = query.sparse.iter().map(|(i, _)| *i).collect();
    assert_eq!(sparse.indices, expected);
    assert_eq!(
        sent.query.unwrap().variant,
        Some(query::Variant::Fusion(qdrant_client::qdrant::Fusion::Rrf as i32))
    );
    let filter = format!("{:?}", sent.prefetch[0].filter);
    assert!(filter.contains("technique") && filter.contains("lateral-movement"), "{filter}");
}

#[tokio::test]
async fn a_real_qdrant_server_answers_a_sparse_search() {
    let Ok(url) = std::env::var("PIVOTWATCH_TEST_QDRANT_URL") else {
        eprintln!(
            "a_real_qdrant_server_answers_a_sparse_search: skipped: \
                   PIVOTWATCH_TEST_QDRANT_URL is not set"
        );
        return;
    };
    let collection = format!("pw_test_{}", std::process::id());
    let index = QdrantIndex::connect(&url, None, &collection).unwrap();
    let docs = pivotwatch::knowledge::attack_docs(pivotwatch::knowledge::Attack::shipped());
    index.upsert(&docs, &[]).await.unwrap();
    let query = Query {
        sparse: query_weights(&query_terms("infusion pump opened an SSH session outside")),
        dense: None,
        mode: Mode::Sparse,
        filter: Filter::kind("technique"),
        limit: 5,
    };
    let hits = index.search(&query).await.unwrap();
    assert!(hits.iter().any(|h| h.doc.id == "T0886"), "{hits:?}");
    assert_eq!(index.count().await.unwrap(), docs.len());
    let client = qdrant_client::Qdrant::from_url(&url).skip_compatibility_check().build().unwrap();
    client.delete_collection(&collection).await.unwrap();
}
