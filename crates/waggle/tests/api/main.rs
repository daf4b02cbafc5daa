//! Integration tests: the real app over real sockets, real receivers, real SQLite files.

mod cli;
mod crash;
mod delivery;
mod failures;
mod helpers;
mod logs;
mod webhooks;
