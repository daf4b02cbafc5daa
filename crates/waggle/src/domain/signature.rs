//! Organization signature keys and the signature of a delivery's body (SPEC §4).

use rand::distributions::Alphanumeric;
use rand::Rng;

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
}
