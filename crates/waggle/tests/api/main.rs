//! Integration tests: the real app over real sockets, real receivers, a real database
//! (SQLite files, or PostgreSQL with `WAGGLE_TEST_BACKEND=postgres`).

mod api_keys;
mod cli;
mod crash;
mod delivery;
mod destinations;
mod failures;
mod helpers;
mod idempotency;
mod input;
mod limits;
mod logs;
mod memory;
mod metrics;
mod multinode;
mod openapi;
mod ordered;
mod outage;
mod recover;
mod retention;
mod retry_policies;
mod stats;
mod storage;
#[path = "../support/mod.rs"]
mod support;
mod traces;
mod webhooks;
