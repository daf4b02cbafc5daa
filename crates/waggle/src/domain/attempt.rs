//! Delivery attempts and how they end (SPEC §3): an HTTP response of any status, or one of
//! the network-layer failure categories of the provider's page.

use std::fmt;

use serde::Serialize;

use super::ids::DeliveryId;
use super::time::Timestamp;

/// Why an attempt got no HTTP response. Every category but [`Self::DestinationRefused`]
/// is a request/network-layer failure and so is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCategory {
    ConnectTimeout,
    ReadTimeout,
    WriteTimeout,
    PoolTimeout,
    ConnectError,
    ReadError,
    WriteError,
    CloseError,
    LocalProtocolError,
    RemoteProtocolError,
    UnsupportedProtocol,
    ProxyError,
    DecodingError,
    TooManyRedirects,
    /// The destination resolved to an address the operator does not allow (SPEC §6).
    /// A policy decision, not a network failure: not retried.
    DestinationRefused,
}

impl FailureCategory {
    pub const ALL: [FailureCategory; 15] = [
        Self::ConnectTimeout,
        Self::ReadTimeout,
        Self::WriteTimeout,
        Self::PoolTimeout,
        Self::ConnectError,
        Self::ReadError,
        Self::WriteError,
        Self::CloseError,
        Self::LocalProtocolError,
        Self::RemoteProtocolError,
        Self::UnsupportedProtocol,
        Self::ProxyError,
        Self::DecodingError,
        Self::TooManyRedirects,
        Self::DestinationRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectTimeout => "connect_timeout",
            Self::ReadTimeout => "read_timeout",
            Self::WriteTimeout => "write_timeout",
            Self::PoolTimeout => "pool_timeout",
            Self::ConnectError => "connect_error",
            Self::ReadError => "read_error",
            Self::WriteError => "write_error",
            Self::CloseError => "close_error",
            Self::LocalProtocolError => "local_protocol_error",
            Self::RemoteProtocolError => "remote_protocol_error",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::ProxyError => "proxy_error",
            Self::DecodingError => "decoding_error",
            Self::TooManyRedirects => "too_many_redirects",
            Self::DestinationRefused => "destination_refused",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == value)
    }

    /// Whether another attempt may help.
    pub fn is_retriable(self) -> bool {
        self != Self::DestinationRefused
    }
}

impl fmt::Display for FailureCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// The destination answered; the delivery is complete whatever the status.
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        /// At most [`MAX_RESPONSE_BODY`] bytes of what came back.
        body: Vec<u8>,
    },
    Failure {
        category: FailureCategory,
        message: String,
    },
}

impl AttemptResult {
    /// Whether the attempt ended in an error, as the logs' `errors_only` filter counts
    /// them: an HTTP status of 400 or more, or no answer at all.
    pub fn is_error(&self) -> bool {
        match self {
            AttemptResult::Response { status, .. } => *status >= 400,
            AttemptResult::Failure { .. } => true,
        }
    }
}

/// How much of a response body an attempt keeps.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// One HTTP try of a delivery, as it is logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub delivery_id: DeliveryId,
    /// 1 for the first attempt.
    pub number: u32,
    pub started_at: Timestamp,
    pub duration: std::time::Duration,
    pub request_url: String,
    pub request_headers: Vec<(String, String)>,
    pub result: AttemptResult,
}

/// Where a delivery stands after an attempt (or a decision not to make one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// An HTTP response came back: done (unless its webhook retries that status).
    Delivered { status: u16 },
    /// A network failure, or a status the webhook retries (`status`); the next attempt
    /// is due `at`.
    RetryScheduled { at: Timestamp, status: Option<u16> },
    /// Retries used up, the window passed, or the destination was refused.
    Failed,
}

impl DeliveryState {
    pub fn status_str(self) -> &'static str {
        match self {
            Self::Delivered { .. } => "delivered",
            Self::RetryScheduled { .. } => "pending",
            Self::Failed => "failed",
        }
    }
}
