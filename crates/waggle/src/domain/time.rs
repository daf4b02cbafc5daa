//! Timestamps as the provider writes them: UTC, microseconds, `+00:00`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

use super::Invalid;

/// A point in time, stored as microseconds since the Unix epoch.
pub type Timestamp = DateTime<Utc>;

pub fn now() -> Timestamp {
    Utc::now()
}

/// `2024-07-22T09:49:30.478384+00:00`, the shape of the provider's sample payload.
pub fn format(ts: &Timestamp) -> String {
    ts.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// A standard duration as a time delta (saturating: durations here are seconds long).
pub fn to_delta(d: std::time::Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

pub fn to_micros(ts: &Timestamp) -> i64 {
    ts.timestamp_micros()
}

pub fn from_micros(micros: i64) -> Timestamp {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// Parses an ISO 8601 date or date-time; one without an offset is taken as UTC.
pub fn parse(value: &str) -> Result<Timestamp, Invalid> {
    let value = value.trim();
    if let Ok(ts) = DateTime::parse_from_rfc3339(value) {
        return Ok(ts.with_timezone(&Utc));
    }
    for pattern in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(value, pattern) {
            return Ok(Utc.from_utc_datetime(&naive));
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists")));
    }
    Err(Invalid::new(
        "value_error.datetime",
        format!("invalid datetime '{value}': expected ISO 8601, e.g. 2024-07-22T09:49:30+00:00"),
    ))
}

/// Serde helper: a timestamp in the provider's format.
pub mod serde_format {
    use serde::Serializer;

    use super::Timestamp;

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(ts))
    }

    pub mod option {
        use serde::Serializer;

        use super::super::Timestamp;

        pub fn serialize<S: Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match ts {
                Some(ts) => s.serialize_str(&super::super::format(ts)),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_provider() {
        let ts = parse("2024-07-22T09:49:30.478384+00:00").unwrap();
        assert_eq!(format(&ts), "2024-07-22T09:49:30.478384+00:00");
    }

    #[test]
    fn no_offset_means_utc_and_offsets_are_honoured() {
        assert_eq!(
            parse("2024-07-22T09:49:30").unwrap(),
            parse("2024-07-22T09:49:30Z").unwrap()
        );
        assert_eq!(
            parse("2024-07-22T11:49:30+02:00").unwrap(),
            parse("2024-07-22T09:49:30Z").unwrap()
        );
        assert_eq!(
            parse("2024-07-22").unwrap(),
            parse("2024-07-22T00:00:00Z").unwrap()
        );
        assert!(parse("yesterday").is_err());
        assert!(parse("2024-13-01").is_err());
    }

    #[test]
    fn micros_round_trip() {
        let ts = parse("2024-07-22T09:49:30.478384Z").unwrap();
        assert_eq!(from_micros(to_micros(&ts)), ts);
    }
}
