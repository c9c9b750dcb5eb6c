//! pivotwatch learns how each IoT and OT device on a network normally behaves, scores
//! deviations against the device's own history and its peer group, and explains them.
//!
//! Layout, from the bottom up (each module depends only on those above it):
//! - `model`: plain domain types (flows, devices, findings).
//! - `timefmt`: RFC 3339 and duration text.
//! - `ingest`: Zeek `conn.log` and inventory readers, and the fleet simulator.
//! - `baseline`: feature windows, detectors, explanations and risk.
//! - `xdr`: the Cortex XDR boundary: the `Xdr` trait, its wire types and the REST client.
//! - `store`: SQLite or PostgreSQL: proposals, decisions, executions, audit, jobs.
//! - `audit`: the hash-chained audit trail on top of `store`.
//! - `knowledge`: ATT&CK for ICS, device knowledge and past cases, searchable (embedded
//!   index or Qdrant).
//! - `actions`: typed actions, the approval gate and policy, executors.
//! - `agent`: hunts (the offline planner today) over the tenant and the knowledge base.
//! - `cli`: the command-line front end; thin glue over the modules above.

pub mod actions;
pub mod agent;
pub mod audit;
pub mod baseline;
pub mod cli;
pub mod eval;
pub mod ingest;
pub mod knowledge;
pub mod model;
pub mod pipeline;
pub mod segment;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod timefmt;
pub mod xdr;
pub mod xql;
