//! Bearer API keys. A key is 256 random bits shown once; the store keeps its SHA-256 (a
//! slow password hash buys nothing for keys that cannot be guessed, and would cost every
//! call). A valid key scopes the call to its organization; a deleted key is refused at
//! once, on every node.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;
use crate::domain::ids::{ApiKeyId, OrgId};
use crate::domain::time;
use crate::storage::NewApiKey;

/// The organization an authenticated call acts for, and the key it called with.
#[derive(Debug, Clone, Copy)]
pub struct ApiAuth {
    pub org_id: OrgId,
    pub key_id: ApiKeyId,
}

/// A freshly made key: the secret to show once, and what the store keeps.
pub struct IssuedKey {
    pub secret: String,
    pub stored: NewApiKey,
}

/// A new key named `name` (already parsed).
pub fn issue_key(name: &str) -> IssuedKey {
    let random: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(43)
        .map(char::from)
        .collect();
    let secret = format!("wgl_{random}");
    IssuedKey {
        stored: NewApiKey {
            id: ApiKeyId::new(),
            name: name.to_owned(),
            prefix: secret[..12].to_owned(),
            hash: hash_key(&secret),
        },
        secret,
    }
}

pub fn hash_key(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Remembers the keys already checked (keys are never reassigned, so a hash that named an
/// organization once always does) and when each key's `last_used_at` was last written, to
/// write it at most once a minute per key instead of on every call.
#[derive(Default)]
pub struct KeyUsage {
    known: Mutex<HashMap<String, (ApiKeyId, OrgId)>>,
    written: Mutex<HashMap<ApiKeyId, Instant>>,
}

/// Keys remembered at most; past that the memory starts over.
const KNOWN_KEYS: usize = 10_000;

impl KeyUsage {
    fn known(&self, hash: &str) -> Option<(ApiKeyId, OrgId)> {
        self.known
            .lock()
            .expect("key usage lock")
            .get(hash)
            .copied()
    }

    fn remember(&self, hash: String, found: (ApiKeyId, OrgId)) {
        let mut known = self.known.lock().expect("key usage lock");
        if known.len() >= KNOWN_KEYS {
            known.clear();
        }
        known.insert(hash, found);
    }

    /// Forgets a deleted key, so that this node refuses it from now on.
    pub fn forget(&self, key: ApiKeyId) {
        self.known
            .lock()
            .expect("key usage lock")
            .retain(|_, (id, _)| *id != key);
    }

    fn due(&self, key: ApiKeyId) -> bool {
        let mut written = self.written.lock().expect("key usage lock");
        let now = Instant::now();
        match written.get(&key) {
            Some(at) if now.duration_since(*at) < Duration::from_secs(60) => false,
            _ => {
                written.insert(key, now);
                true
            }
        }
    }
}

impl FromRequestParts<AppState> for ApiAuth {
    type Rejection = ApiError;

    /// The call's key as [`limit`] found it, or (outside it) as found now.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(auth) = parts.extensions.get::<ApiAuth>() {
            return Ok(*auth);
        }
        authenticate(state, &parts.headers).await
    }
}

/// The organization of the call's bearer key.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<ApiAuth, ApiError> {
    let header = headers.get(AUTHORIZATION).ok_or(ApiError::Unauthorized(
        "missing Authorization header; use 'Bearer <API key>'",
    ))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 128)
        .ok_or(ApiError::Unauthorized(
            "malformed Authorization header; use 'Bearer <API key>'",
        ))?;
    // Where every call reads the database (several nodes), one that cannot be reached
    // answers at once rather than after waiting for a connection.
    if state.store.shared() && state.store.health().borrow().trouble().is_some() {
        return Err(ApiError::Unavailable);
    }
    let hash = hash_key(token);
    // Keys are remembered only where this node sees every delete: with several nodes,
    // a key another node deleted must be refused here at once, so each call asks.
    let remembered = match state.store.shared() {
        true => None,
        false => state.key_usage.known(&hash),
    };
    let (key_id, org_id) = match remembered {
        Some(found) => found,
        None => {
            let found = state
                .store
                .api_key_by_hash(&hash)
                .await?
                .ok_or(ApiError::Unauthorized("invalid API key"))?;
            state.key_usage.remember(hash, found);
            found
        }
    };
    if state.key_usage.due(key_id) {
        let store = state.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(key_id, time::now()).await {
                tracing::warn!(error = %e, "could not record API key use");
            }
        });
    }
    Ok(ApiAuth { org_id, key_id })
}

/// Around every API call that carries a key: finds the key once, holds it to its rate
/// limit (a 429 past it), and says where it stands in the answer's headers. A call
/// without a valid key goes on to its handler, which answers 401 (or 404 for a path
/// that is none of the API's).
pub async fn limit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if !request.headers().contains_key(AUTHORIZATION) {
        return next.run(request).await;
    }
    let Ok(auth) = authenticate(&state, request.headers()).await else {
        return next.run(request).await;
    };
    let standing = match state.limits.check(auth.key_id) {
        Ok(standing) => standing,
        Err(refused) => {
            let mut response = ApiError::TooManyRequests {
                per_second: refused.standing.limit,
                retry_after: refused.retry_after,
            }
            .into_response();
            refused.standing.write(response.headers_mut());
            return response;
        }
    };
    request.extensions_mut().insert(auth);
    let mut response = next.run(request).await;
    if let Some(standing) = standing {
        standing.write(response.headers_mut());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_are_unique_and_stored_only_as_hashes() {
        let a = issue_key("a");
        let b = issue_key("b");
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.stored.hash, hash_key(&a.secret));
        assert!(!a.stored.hash.contains(&a.secret));
        assert!(a.secret.starts_with(&a.stored.prefix));
        assert_eq!(a.secret.len(), 47);
    }
}
