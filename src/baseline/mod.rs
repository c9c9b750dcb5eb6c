//! Behavioural baselines and deviation scoring.
