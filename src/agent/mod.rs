//! The agent: answers hunters' questions and writes triage for analysts by calling typed
//! tools. Without a model configured, the offline planner answers hunts
//! deterministically from a grammar of IoT/OT hunt intents.

pub mod ask;
pub mod grounding;
pub mod hunt;
pub mod llm;
pub mod planner;
pub mod run;
pub mod schema;
pub mod tools;
pub mod triage;

pub use hunt::{FollowUp, HuntResult, hunt, hunt_offline};
pub use triage::{DeviceFacts, TriageOptions, TriageResult, triage, triage_offline};
