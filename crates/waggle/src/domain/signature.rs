//! Organization signature keys and the signature of a delivery's body (SPEC §4).

use std::time::Duration;

use rand::distributions::Alphanumeric;
use rand::Rng;

use super::time::Timestamp;

/// The longest a replaced key may keep signing beside the new one.
pub const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// An organization's signing secret. Its `Debug` hides the value so that it can never
/// reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SignatureKey(String);

impl SignatureKey {
    /// A fresh key: 48 random alphanumeric characters (about 285 bits).
    pub fn generate() -> Self {
        let key: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(48)
            .map(char::from)
            .collect();
        Self(format!("whsk_{key}"))
    }

    /// Wraps a key read back from storage.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `base64.urlsafe_b64encode(HMAC-SHA256(key, body))`, padding included.
    pub fn sign(&self, body: &[u8]) -> String {
        waggle_verify::sign(&self.0, body)
    }

    /// The `webhook-signature` value of the Standard Webhooks scheme (`v1,` and the
    /// standard base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`), with this key.
    pub fn sign_standard(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        waggle_verify::sign_standard(&self.0, id, timestamp, body)
    }

    /// This key as the Standard Webhooks libraries take it (`whsec_…`).
    pub fn standard_secret(&self) -> String {
        waggle_verify::standard_secret(&self.0)
    }

    /// Constant-time check of a received signature.
    pub fn verify(&self, body: &[u8], received: &str) -> bool {
        waggle_verify::verify(&self.0, body, received)
    }
}

/// Parses a grace period for a replaced key: a duration the humantime way (`0`, `1h`,
/// `24h`, `7d`), at most [`MAX_GRACE`].
pub fn parse_grace(value: &str) -> Result<Duration, String> {
    let grace = super::retry::parse_duration(value)?;
    if grace > MAX_GRACE {
        return Err(format!(
            "grace_period is at most 7d, not '{}'",
            value.trim()
        ));
    }
    Ok(grace)
}

/// A replaced key that still signs `webhook-signature`, beside the new key, until its
/// grace ends: receivers that still hold it keep verifying while they switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiringKey {
    pub key: SignatureKey,
    pub until: Timestamp,
}

/// The keys that sign a delivery: the organization's key, and the key it replaced while
/// that one's grace lasts.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    pub current: SignatureKey,
    pub retiring: Option<RetiringKey>,
}

impl SigningKeys {
    /// When the replaced key stops signing, if it still signs at `now`.
    pub fn retiring_until(&self, now: Timestamp) -> Option<Timestamp> {
        self.retiring_at(now).map(|r| r.until)
    }

    /// The replaced key, if it still signs at `now`.
    fn retiring_at(&self, now: Timestamp) -> Option<&RetiringKey> {
        self.retiring.as_ref().filter(|r| now < r.until)
    }

    /// `webhook-signature` of an attempt at `now`: the current key's `v1,` signature,
    /// then, during a grace, the replaced key's, separated by a space. The provider's
    /// header is the current key's alone ([`SignatureKey::sign`]).
    pub fn sign_standard(&self, id: &str, timestamp: i64, body: &[u8], now: Timestamp) -> String {
        let mut signatures = self.current.sign_standard(id, timestamp, body);
        if let Some(retiring) = self.retiring_at(now) {
            signatures.push(' ');
            signatures.push_str(&retiring.key.sign_standard(id, timestamp, body));
        }
        signatures
    }
}

impl std::fmt::Debug for SignatureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fresh_and_hidden_from_debug() {
        let a = SignatureKey::generate();
        let b = SignatureKey::generate();
        assert_ne!(a, b);
        assert!(!format!("{a:?}").contains(a.expose()));
        let sig = a.sign(b"{}");
        assert!(a.verify(b"{}", &sig));
        assert!(!b.verify(b"{}", &sig));
    }

    #[test]
    fn a_grace_is_a_duration_of_at_most_seven_days() {
        assert_eq!(parse_grace("0"), Ok(Duration::ZERO));
        assert_eq!(parse_grace("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_grace("7d"), Ok(MAX_GRACE));
        assert!(parse_grace("7d 1s").is_err());
        assert!(parse_grace("soon").is_err());
    }

    #[test]
    fn a_replaced_key_signs_beside_the_new_one_until_its_grace_ends() {
        let (old, new) = (SignatureKey::generate(), SignatureKey::generate());
        let until = crate::domain::time::now();
        let keys = SigningKeys {
            current: new.clone(),
            retiring: Some(RetiringKey {
                key: old.clone(),
                until,
            }),
        };
        let during = keys.sign_standard("id", 1, b"{}", until - chrono::Duration::seconds(1));
        assert_eq!(
            during,
            format!(
                "{} {}",
                new.sign_standard("id", 1, b"{}"),
                old.sign_standard("id", 1, b"{}")
            )
        );
        let after = keys.sign_standard("id", 1, b"{}", until);
        assert_eq!(after, new.sign_standard("id", 1, b"{}"));
    }
}
