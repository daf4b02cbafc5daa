//! Receiver-side check of a waggle delivery's signature.
//!
//! A delivery carries `X-Bindbee-Webhook-Signature` (the name is configurable on the
//! sending side): the URL-safe, padded base64 of HMAC-SHA256 over the exact body bytes,
//! keyed by the organization's signature key as UTF-8. [`verify`] recomputes it and
//! compares in constant time, so a receiver written in Rust needs nothing else.
#![forbid(unsafe_code)]

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header that carries the signature by default.
pub const SIGNATURE_HEADER: &str = "X-Bindbee-Webhook-Signature";

/// The signature of `body` under `signature_key`, exactly as the sender computes it.
pub fn sign(signature_key: &str, body: &[u8]) -> String {
    URL_SAFE.encode(digest(signature_key, body))
}

/// Whether `received` is the signature of `body` under `signature_key`.
///
/// The comparison takes the same time wherever the first differing byte is.
pub fn verify(signature_key: &str, body: &[u8], received: &str) -> bool {
    let expected = sign(signature_key, body);
    expected.as_bytes().ct_eq(received.trim().as_bytes()).into()
}

fn digest(signature_key: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(signature_key.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_changed_body_does_not() {
        let body = br#"{"webhook":{"event":"connector_synced"}}"#;
        let signature = sign("key-1", body);
        assert!(verify("key-1", body, &signature));
        assert!(!verify("key-2", body, &signature));
        assert!(!verify("key-1", b"{}", &signature));
        assert!(!verify("key-1", body, ""));
    }

    #[test]
    fn matches_a_known_vector() {
        // python3 -c 'import base64,hmac,hashlib;print(base64.urlsafe_b64encode(
        //   hmac.new(b"secret", b"hello", hashlib.sha256).digest()).decode())'
        assert_eq!(
            sign("secret", b"hello"),
            "iKqz7ejTrflNJquQ07r9SiCDBww7zOnAFO4EpEOEfAs="
        );
    }
}
