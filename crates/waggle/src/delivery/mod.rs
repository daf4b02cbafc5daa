//! Getting events to webhooks: the HTTP sender and its failure classification, the signing
//! keys it uses, each webhook's retry rules, the dispatcher that claims, attempts, retries
//! and records deliveries, the recoveries that make failed deliveries anew, and the check
//! that disables webhooks whose attempts have all failed for too long.

pub mod auto_disable;
pub mod dispatcher;
pub mod fanout;
pub mod keys;
mod lanes;
pub mod recover;
pub mod rules;
pub mod sender;

pub use dispatcher::Dispatcher;
pub use keys::KeyCache;
pub use sender::Sender;
