//! `Idempotency-Key`: a call that creates a record or emits events may carry a key of the
//! caller's choosing. Made again within a day with the same key, method, path and body,
//! it answers what it answered the first time (with `Idempotent-Replayed: true`) and
//! changes nothing, emits nothing; the same key with another call is a 422.
//!
//! The answer is written in the transaction of the call's own effects, so a call is never
//! done without its answer being kept, nor kept without being done, whichever node it
//! reached. Two calls with one key at once: the first to commit keeps the key, and the
//! other, refused by the store (`KeyTaken`), answers the first one's answer. Only
//! successful answers are kept: a refused call changed nothing, and may be made again.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::{body_bytes, parse_json, parse_optional_json, ApiError};
use super::AppState;
use crate::domain::ids::OrgId;
use crate::domain::{time, Invalid};
use crate::storage::{Remembered, StoreError};

pub const HEADER: &str = "idempotency-key";
/// The operations that take the header: every one whose handler extracts a [`Once`].
pub const OPERATIONS: &[&str] = &[
    "create_webhook",
    "create_connector",
    "start_sync",
    "complete_sync",
    "fail_sync",
    "data_changed",
];
/// On an answer given again.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// A key's length, at most.
const MAX_KEY: usize = 255;

/// A call's body, and its idempotency key when it has one: extracted in place of
/// [`JsonBody`](super::error::JsonBody).
pub struct Once<T> {
    pub body: T,
    key: Option<Keyed>,
}

#[derive(Clone)]
struct Keyed {
    key: String,
    /// SHA-256 of the method, the path and the body, hex.
    fingerprint: String,
}

/// How a [`Once`] reads its body.
pub trait OnceBody: Sized {
    fn parse(bytes: &[u8]) -> Result<Self, ApiError>;
}

/// A JSON object, as [`JsonBody`](super::error::JsonBody) reads it.
pub struct Required<T>(pub T);
/// A JSON object that may be left out (an empty body, or `null`).
pub struct Optional<T>(pub T);
/// Whatever the body, unread (it still counts in the fingerprint).
pub struct Ignored;

impl<T: DeserializeOwned> OnceBody for Required<T> {
    fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        parse_json(bytes).map(Required)
    }
}

impl<T: DeserializeOwned + Default> OnceBody for Optional<T> {
    fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        parse_optional_json(bytes).map(Optional)
    }
}

impl OnceBody for Ignored {
    fn parse(_: &[u8]) -> Result<Self, ApiError> {
        Ok(Ignored)
    }
}

/// The key as sent: 1 to 255 visible ASCII characters.
fn parse_key(value: &HeaderValue) -> Result<String, Invalid> {
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            Invalid::new(
                "value_error",
                format!("the Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters"),
            )
        })?;
    Ok(key.to_owned())
}

impl<S: Send + Sync, T: OnceBody> FromRequest<S> for Once<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let key = req
            .headers()
            .get(HEADER)
            .map(parse_key)
            .transpose()
            .map_err(|e| ApiError::field(&["header", "Idempotency-Key"], e))?;
        let call = format!("{} {}\n", req.method(), req.uri().path());
        let bytes = body_bytes(req, state).await?;
        let key = key.map(|key| {
            let digest = Sha256::new()
                .chain_update(call.as_bytes())
                .chain_update(&bytes)
                .finalize();
            Keyed {
                key,
                fingerprint: digest.iter().map(|b| format!("{b:02x}")).collect(),
            }
        });
        let body = T::parse(&bytes)?;
        Ok(Self { body, key })
    }
}

impl<T> Once<T> {
    /// The answer this same call got under its key, to give again; a 422 when the key
    /// went with another call.
    pub async fn earlier(
        &self,
        state: &AppState,
        org: OrgId,
    ) -> Result<Option<Response>, ApiError> {
        let Some(keyed) = &self.key else {
            return Ok(None);
        };
        let Some(kept) = state.store.remembered(org, &keyed.key, time::now()).await? else {
            return Ok(None);
        };
        if kept.fingerprint != keyed.fingerprint {
            return Err(ApiError::field(
                &["header", "Idempotency-Key"],
                Invalid::new(
                    "value_error.idempotency_key",
                    "this Idempotency-Key was used with another call (method, path or body) in the last 24 hours",
                ),
            ));
        }
        Ok(Some(replay(kept)))
    }

    /// The answer to keep under the call's key, made of what the call created: `None`
    /// when the call has no key.
    pub fn remember<B: Serialize>(
        &self,
        org: OrgId,
        status: StatusCode,
        body: &B,
    ) -> Option<Remembered> {
        let keyed = self.key.as_ref()?;
        Some(keyed.remembered(org, status, body))
    }

    /// As [`Once::remember`], for a record the store makes: the answer from it.
    pub fn remember_with<W, B: Serialize>(
        &self,
        org: OrgId,
        status: StatusCode,
        render: impl Fn(&W) -> B + Send + Sync + 'static,
    ) -> Option<Box<crate::storage::RememberWith<W>>> {
        let keyed = self.key.clone()?;
        Some(Box::new(move |made: &W| {
            keyed.remembered(org, status, &render(made))
        }))
    }

    /// What a call refused by the store answers: when another call took its key
    /// meanwhile, that call's answer (or a 422 if it was another call); else the error.
    pub async fn refused(
        &self,
        state: &AppState,
        org: OrgId,
        e: StoreError,
    ) -> Result<Response, ApiError> {
        if !matches!(e, StoreError::KeyTaken) {
            return Err(e.into());
        }
        match self.earlier(state, org).await? {
            Some(answer) => Ok(answer),
            // Taken, then gone: the answer expired in between. Unlikely enough to ask
            // for the call again rather than guess.
            None => Err(ApiError::Conflict(
                "another call with this Idempotency-Key was being made; make the call again".into(),
            )),
        }
    }
}

impl Keyed {
    fn remembered(&self, org: OrgId, status: StatusCode, body: &impl Serialize) -> Remembered {
        Remembered {
            org_id: org,
            key: self.key.clone(),
            fingerprint: self.fingerprint.clone(),
            status: status.as_u16(),
            body: serde_json::to_vec(body).expect("an answer serializes"),
            created_at: time::now(),
        }
    }
}

/// A kept answer, given again.
fn replay(kept: Remembered) -> Response {
    let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    let mut answer = (status, kept.body).into_response();
    let headers = answer.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    answer
}
