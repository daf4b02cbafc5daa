//! Receiver-side check of a waggle delivery's signature.
//!
//! A delivery carries `X-Bindbee-Webhook-Signature` (the name is configurable on the
//! sending side): the URL-safe, padded base64 of HMAC-SHA256 over the exact body bytes,
//! keyed by the organization's signature key as UTF-8. [`verify`] recomputes it and
//! compares in constant time, so a receiver written in Rust needs nothing else.
//!
//! Every delivery is also signed the Standard Webhooks way, with the same key:
//! `webhook-signature: v1,<base64 of HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}">`.
//! The key in that scheme's form is [`standard_secret`] (`whsec_` and the standard base64
//! of the key's UTF-8 bytes); [`verify_standard`] checks a delivery, its timestamp within
//! [`TOLERANCE_SECONDS`] of now, as the specification's libraries do.
#![forbid(unsafe_code)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
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
    hmac(signature_key.as_bytes(), &[body])
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The Standard Webhooks headers.
pub const STANDARD_ID_HEADER: &str = "webhook-id";
pub const STANDARD_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const STANDARD_SIGNATURE_HEADER: &str = "webhook-signature";

/// How far a delivery's `webhook-timestamp` may be from now, either way, in seconds.
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

/// The prefix of a secret in the Standard Webhooks form.
const SECRET_PREFIX: &str = "whsec_";

/// The signature key in the Standard Webhooks form: `whsec_` and the standard base64 of
/// its UTF-8 bytes, so that the specification's libraries sign with the very same bytes.
pub fn standard_secret(signature_key: &str) -> String {
    format!(
        "{SECRET_PREFIX}{}",
        STANDARD.encode(signature_key.as_bytes())
    )
}

/// One `v1,` signature of the Standard Webhooks scheme, as the sender computes it.
pub fn sign_standard(signature_key: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let stamp = timestamp.to_string();
    let mac = hmac(
        signature_key.as_bytes(),
        &[id.as_bytes(), b".", stamp.as_bytes(), b".", body],
    );
    format!("v1,{}", STANDARD.encode(mac))
}

/// Why a delivery did not verify under the Standard Webhooks scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandardError {
    /// The secret is neither a signature key nor `whsec_` and valid base64.
    BadSecret,
    /// `webhook-timestamp` is not a number of seconds.
    BadTimestamp,
    /// `webhook-timestamp` is further than [`TOLERANCE_SECONDS`] from now.
    Expired,
    /// No `v1,` signature in `webhook-signature` matches.
    NoMatch,
}

impl std::fmt::Display for StandardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BadSecret => "the secret is not valid",
            Self::BadTimestamp => "webhook-timestamp is not a number of seconds",
            Self::Expired => "webhook-timestamp is too far from now",
            Self::NoMatch => "no signature matches",
        })
    }
}

impl std::error::Error for StandardError {}

/// Checks a delivery under the Standard Webhooks scheme: `secret` is the signature key or
/// its `whsec_` form, `now` the receiver's clock in seconds since the Unix epoch. The
/// header may hold several signatures, separated by spaces (while a key is rotated, one
/// per key): one match is enough. Comparisons take the same time wherever they differ.
pub fn verify_standard(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
) -> Result<(), StandardError> {
    let key = match secret.strip_prefix(SECRET_PREFIX) {
        Some(encoded) => STANDARD
            .decode(encoded)
            .map_err(|_| StandardError::BadSecret)?,
        None => secret.as_bytes().to_vec(),
    };
    let stamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| StandardError::BadTimestamp)?;
    if (now - stamp).abs() > TOLERANCE_SECONDS {
        return Err(StandardError::Expired);
    }
    let stamp = stamp.to_string();
    let expected = STANDARD.encode(hmac(
        &key,
        &[id.as_bytes(), b".", stamp.as_bytes(), b".", body],
    ));
    let matched = signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .fold(false, |any, s| {
            any | bool::from(expected.as_bytes().ct_eq(s.as_bytes()))
        });
    if matched {
        Ok(())
    } else {
        Err(StandardError::NoMatch)
    }
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
    fn the_standard_scheme_verifies_with_the_key_or_its_secret_form() {
        let (id, at, body) = ("msg_1", 1_700_000_000, br#"{"a":1}"#.as_slice());
        let signature = sign_standard("key-1", id, at, body);
        let secret = standard_secret("key-1");
        assert!(secret.starts_with("whsec_"));
        let check = |secret: &str, signatures: &str, body: &[u8], now: i64| {
            verify_standard(secret, id, &at.to_string(), signatures, body, now)
        };
        assert_eq!(check("key-1", &signature, body, at), Ok(()));
        assert_eq!(check(&secret, &signature, body, at + 300), Ok(()));
        // During a rotation the header carries one signature per key.
        let both = format!("{} {signature}", sign_standard("key-0", id, at, body));
        assert_eq!(check(&secret, &both, body, at), Ok(()));
        assert_eq!(check("key-2", &both, body, at), Err(StandardError::NoMatch));
        assert_eq!(
            check(&secret, &signature, b"{}", at),
            Err(StandardError::NoMatch)
        );
        assert_eq!(
            check(&secret, &signature, body, at + 301),
            Err(StandardError::Expired)
        );
        assert_eq!(
            check(&secret, &signature, body, at - 301),
            Err(StandardError::Expired)
        );
        assert_eq!(
            verify_standard(&secret, id, "soon", &signature, body, at),
            Err(StandardError::BadTimestamp)
        );
        assert_eq!(
            check("whsec_!!", &signature, body, at),
            Err(StandardError::BadSecret)
        );
    }

    #[test]
    fn the_standard_scheme_matches_a_known_vector() {
        // python3 -c 'import base64,hmac,hashlib;print(base64.b64encode(hmac.new(
        //   b"secret", b"msg_1.1700000000.hello", hashlib.sha256).digest()).decode())'
        assert_eq!(
            sign_standard("secret", "msg_1", 1_700_000_000, b"hello"),
            "v1,RPPNlE8Iua+k+vnxQqM9n2ERntM7oH4pkD0v2F6qU8Y="
        );
        assert_eq!(standard_secret("secret"), "whsec_c2VjcmV0");
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
