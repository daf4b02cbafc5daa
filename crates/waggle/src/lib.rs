//! waggle: tells customers' servers what their connectors did, with signed HTTP POSTs that
//! are retried on network failures, logged attempt by attempt, and never lost.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod delivery;
pub mod domain;
pub mod listen;
pub mod orgs;
pub mod startup;
pub mod storage;
pub mod telemetry;
