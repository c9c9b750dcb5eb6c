//! The detection pipeline over files: read the inventory, stream every flow file into a
//! `Detector`, and return what it found with what the readers skipped. The command line
//! and the demo call this; `baseline` itself never touches a file.

use std::path::PathBuf;
use std::time::Instant;

use crate::baseline::{BaselineSplit, DetectConfig, Detection, Detector};
use crate::ingest::{self, IngestError, ReadSummary};
use crate::model::Flow;

/// What to read and how to split it.
#[derive(Clone, Debug)]
pub struct DetectInput {
    pub inventory: Option<PathBuf>,
    pub flows: Vec<PathBuf>,
    pub baseline: BaselineSource,
}

/// Where the baseline comes from.
#[derive(Clone, Debug)]
pub enum BaselineSource {
    /// Flows before this Unix time, in the same files.
    Until(f64),
    /// Separate files; every `flows` file is scored.
    Files(Vec<PathBuf>),
}

/// A finished run and what its readers reported.
#[derive(Debug)]
pub struct PipelineOutput {
    pub detection: Detection,
    pub baseline_read: ReadSummary,
    pub read: ReadSummary,
    pub timings: Timings,
}

/// Wall-clock seconds of each stage, for benchmarks.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Timings {
    /// Reading, parsing and folding flows into windows (one streaming pass).
    pub read_and_featurise_secs: f64,
    /// Building profiles, fitting the forests and scoring every window.
    pub profile_and_score_secs: f64,
}

/// Runs detection over files. `on_progress` is called every so many flows with the
/// number read so far, for a progress bar.
pub fn detect_files(
    config: DetectConfig,
    input: &DetectInput,
    on_progress: &mut dyn FnMut(u64),
) -> Result<PipelineOutput, IngestError> {
    let inventory = match &input.inventory {
        Some(path) => Some(ingest::read_inventory(path)?),
        None => None,
    };
    let split = match input.baseline {
        BaselineSource::Until(until) => BaselineSplit::Until(until),
        BaselineSource::Files(_) => BaselineSplit::Separate,
    };
    let mut detector = Detector::new(config, split, inventory.as_ref());
    let started = Instant::now();

    let mut n_flows = 0u64;
    let mut baseline_read = ReadSummary::default();
    if let BaselineSource::Files(files) = &input.baseline {
        for path in files {
            let mut sink = |flow: &Flow| {
                detector.observe_baseline(flow);
                n_flows += 1;
                if n_flows.is_multiple_of(PROGRESS_EVERY) {
                    on_progress(n_flows);
                }
            };
            baseline_read.merge(ingest::read_flows(path, &mut sink)?);
        }
    }
    let mut read = ReadSummary::default();
    for path in &input.flows {
        let mut sink = |flow: &Flow| {
            detector.observe(flow);
            n_flows += 1;
            if n_flows.is_multiple_of(PROGRESS_EVERY) {
                on_progress(n_flows);
            }
        };
        read.merge(ingest::read_flows(path, &mut sink)?);
    }
    let read_and_featurise_secs = started.elapsed().as_secs_f64();
    let scoring_started = Instant::now();
    let detection = detector.finish();
    let timings = Timings {
        read_and_featurise_secs,
        profile_and_score_secs: scoring_started.elapsed().as_secs_f64(),
    };
    Ok(PipelineOutput { detection, baseline_read, read, timings })
}

const PROGRESS_EVERY: u64 = 250_000;
