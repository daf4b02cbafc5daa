//! Connectors and their sync jobs (SPEC §1).

use serde::{Deserialize, Serialize};

use super::event::Environment;
use super::ids::{ConnectorId, OrgId, SyncId};
use super::time::{self, Timestamp};
use super::Invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectorStatus {
    Complete,
    Incomplete,
    RelinkNeeded,
}

impl ConnectorStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorStatus::Complete => "COMPLETE",
            ConnectorStatus::Incomplete => "INCOMPLETE",
            ConnectorStatus::RelinkNeeded => "RELINK_NEEDED",
        }
    }

    pub fn parse(value: &str) -> Result<Self, Invalid> {
        match value.trim() {
            "COMPLETE" => Ok(Self::Complete),
            "INCOMPLETE" => Ok(Self::Incomplete),
            "RELINK_NEEDED" => Ok(Self::RelinkNeeded),
            other => Err(Invalid::new(
                "type_error.enum",
                format!("unknown connector_status '{other}'; expected COMPLETE, INCOMPLETE or RELINK_NEEDED"),
            )),
        }
    }
}

/// A connector as stored, and as snapshotted into events.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Connector {
    pub id: ConnectorId,
    #[serde(skip)]
    pub org_id: OrgId,
    pub environment: Environment,
    pub display_name: String,
    pub integration_slug: String,
    pub categories: Vec<String>,
    pub origin_id: String,
    pub connector_status: ConnectorStatus,
    pub end_user_name: String,
    pub end_user_email: String,
    #[serde(with = "time::serde_format")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncType {
    Manual,
    Automated,
}

impl SyncType {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncType::Manual => "MANUAL",
            SyncType::Automated => "AUTOMATED",
        }
    }

    pub fn parse(value: &str) -> Result<Self, Invalid> {
        match value.trim() {
            "MANUAL" => Ok(Self::Manual),
            "AUTOMATED" => Ok(Self::Automated),
            other => Err(Invalid::new(
                "type_error.enum",
                format!("unknown sync_type '{other}'; expected MANUAL or AUTOMATED"),
            )),
        }
    }
}

/// Where a sync job stands; `Syncing` until it completes or fails, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum DisplayStatus {
    Syncing,
    Done,
    Failed,
}

impl DisplayStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DisplayStatus::Syncing => "Syncing",
            DisplayStatus::Done => "Done",
            DisplayStatus::Failed => "Failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "Syncing" => Some(Self::Syncing),
            "Done" => Some(Self::Done),
            "Failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// Why a sync failed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SyncError {
    #[serde(with = "time::serde_format")]
    #[schema(value_type = String, format = DateTime)]
    pub failed_at: Timestamp,
    pub message: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SyncJob {
    pub id: SyncId,
    pub connector_id: ConnectorId,
    pub initial_sync: bool,
    pub sync_type: SyncType,
    pub display_status: DisplayStatus,
    #[serde(with = "time::serde_format")]
    #[schema(value_type = String, format = DateTime)]
    pub last_sync_start_time: Timestamp,
    #[serde(with = "time::serde_format::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    pub error: Option<SyncError>,
}

/// Parses one of a connector's free-text fields.
pub fn parse_field(value: &str, what: &str) -> Result<String, Invalid> {
    super::parse_text(value, 255, what)
}

/// Parses the category list: at most 20 entries of at most 64 characters.
pub fn parse_categories(values: &[String]) -> Result<Vec<String>, Invalid> {
    if values.len() > 20 {
        return Err(Invalid::new(
            "value_error.list.max_items",
            "at most 20 categories",
        ));
    }
    values
        .iter()
        .map(|v| super::parse_text(v, 64, "category"))
        .collect()
}

/// Parses an end user's email: short, one `@` with text on both sides.
pub fn parse_email(value: &str) -> Result<String, Invalid> {
    let value = super::parse_text(value, 254, "email")?;
    match value.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !value.contains(' ') =>
        {
            Ok(value)
        }
        _ => Err(Invalid::new(
            "value_error.email",
            format!("'{value}' is not a valid email address"),
        )),
    }
}
