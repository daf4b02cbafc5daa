//! The event catalog (SPEC §2) and the environments webhooks and connectors live in.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// What happened; the value of `webhook.event` in payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    ConnectorSyncStarted,
    ConnectorSyncError,
    ConnectorSynced,
    EmployeeDataChanged,
    ConnectorDataModified,
}

impl EventType {
    /// Every event type, in the order of the dashboard's checkboxes.
    pub const ALL: [EventType; 5] = [
        EventType::ConnectorSyncStarted,
        EventType::ConnectorSyncError,
        EventType::ConnectorSynced,
        EventType::EmployeeDataChanged,
        EventType::ConnectorDataModified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ConnectorSyncStarted => "connector_sync_started",
            EventType::ConnectorSyncError => "connector_sync_error",
            EventType::ConnectorSynced => "connector_synced",
            EventType::EmployeeDataChanged => "employee_data_changed",
            EventType::ConnectorDataModified => "connector_data_modified",
        }
    }

    /// The dashboard checkbox's label.
    pub fn label(self) -> &'static str {
        match self {
            EventType::ConnectorSyncStarted => "Sync start",
            EventType::ConnectorSyncError => "Sync error",
            EventType::ConnectorSynced => "Sync completed",
            EventType::EmployeeDataChanged => "Employee model change",
            EventType::ConnectorDataModified => "Data model change",
        }
    }

    /// The provider's one-line description of when it fires.
    pub fn description(self) -> &'static str {
        match self {
            EventType::ConnectorSyncStarted => "Receive an alert when a connector's sync starts.",
            EventType::ConnectorSyncError => "Get notified when a connector sync fails.",
            EventType::ConnectorSynced => "Get notified when a connector sync job is successful.",
            EventType::EmployeeDataChanged => {
                "Receive an alert when any employee data is modified."
            }
            EventType::ConnectorDataModified => "Receive an alert when any data model is modified.",
        }
    }

    pub fn parse(value: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == value.trim())
            .ok_or_else(|| {
                Invalid::new(
                    "type_error.enum",
                    format!(
                        "unknown event type '{value}'; expected one of: {}",
                        Self::ALL.map(Self::as_str).join(", ")
                    ),
                )
            })
    }

    /// Parses a list of event types: at least one, at most [`MAX_EVENTS_LISTED`] entries,
    /// duplicates removed, catalog order kept.
    pub fn parse_set(values: &[String]) -> Result<Vec<Self>, Invalid> {
        if values.is_empty() {
            return Err(Invalid::new(
                "value_error.list.min_items",
                "subscribe to at least one event type",
            ));
        }
        if values.len() > MAX_EVENTS_LISTED {
            return Err(Invalid::new(
                "value_error.list.max_items",
                format!("list at most {MAX_EVENTS_LISTED} event types"),
            ));
        }
        let parsed = values
            .iter()
            .map(|v| Self::parse(v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::ALL
            .into_iter()
            .filter(|t| parsed.contains(t))
            .collect())
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most entries an `events` list may have (the catalog has five; repeats are allowed
/// up to this).
pub const MAX_EVENTS_LISTED: usize = 50;

/// Production or development: a webhook's `type`, a connector's `environment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Production,
    Development,
}

impl Environment {
    pub const ALL: [Environment; 2] = [Environment::Production, Environment::Development];

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Development => "development",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Environment::Production => "Production",
            Environment::Development => "Development",
        }
    }

    /// The provider's explanation: what a webhook of this type receives alerts for.
    pub fn description(self) -> &'static str {
        match self {
            Environment::Production => {
                "Receives alerts for Production connectors. Recommended for live customer integrations."
            }
            Environment::Development => {
                "Receives alerts for Development connectors. Recommended for testing and development connectors."
            }
        }
    }

    pub fn parse(value: &str) -> Result<Self, Invalid> {
        match value.trim().to_ascii_lowercase().as_str() {
            "production" => Ok(Environment::Production),
            "development" => Ok(Environment::Development),
            _ => Err(Invalid::new(
                "type_error.enum",
                format!("unknown environment '{value}'; expected 'production' or 'development'"),
            )),
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_through_their_names() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()).unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert!(EventType::parse("connector_sync_finished").is_err());
    }

    #[test]
    fn an_event_set_needs_one_member_and_drops_duplicates() {
        assert!(EventType::parse_set(&[]).is_err());
        let set = EventType::parse_set(&[
            "connector_synced".into(),
            "connector_sync_started".into(),
            "connector_synced".into(),
        ])
        .unwrap();
        assert_eq!(
            set,
            vec![EventType::ConnectorSyncStarted, EventType::ConnectorSynced]
        );
    }

    #[test]
    fn environments_parse_case_insensitively() {
        assert_eq!(
            Environment::parse("Production").unwrap(),
            Environment::Production
        );
        assert!(Environment::parse("staging").is_err());
    }
}
