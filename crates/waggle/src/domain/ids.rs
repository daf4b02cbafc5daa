//! Typed ids. Every id is a UUIDv7, so its text form sorts by creation time, which the
//! cursor pagination relies on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh id, ordered after every id made before it.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

typed_id!(
    /// An organization: the tenant that owns webhooks, connectors, keys and logs.
    OrgId
);
typed_id!(
    /// An API key's row (not the secret itself).
    ApiKeyId
);
typed_id!(
    /// A dashboard user.
    UserId
);
typed_id!(
    /// A connector linked to an end user's HR system.
    ConnectorId
);
typed_id!(
    /// One sync job of a connector.
    SyncId
);
typed_id!(
    /// A webhook (destination configuration).
    WebhookId
);
typed_id!(
    /// One thing that happened.
    EventId
);
typed_id!(
    /// One event sent to one webhook; also the `webhook-id` header receivers de-duplicate on.
    DeliveryId
);
typed_id!(
    /// One recovery: the failed deliveries of a webhook in a range, made anew.
    RecoveryId
);
