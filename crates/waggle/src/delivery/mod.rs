//! Getting events to webhooks: the HTTP sender and its failure classification, the signing
//! keys it uses, and the dispatcher that claims, attempts, retries and records deliveries.

pub mod dispatcher;
pub mod fanout;
pub mod keys;
mod lanes;
pub mod sender;

pub use dispatcher::Dispatcher;
pub use keys::KeyCache;
pub use sender::Sender;
