//! Every way an API call can fail, answered in the provider's shapes: `{"detail": "…"}`,
//! and for validation `422 {"detail": [{"loc": [...], "msg": "…", "type": "…"}]}`.
//!
//! Handlers return `Result<_, ApiError>`; internal errors log their cause and answer a
//! bare 500, so nothing about the database or a secret leaks to a caller.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::domain::Invalid;
use crate::storage::StoreError;

/// One validation problem: where, what, and its kind.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct FieldError {
    /// Where: `body` or `query`, then the field's path.
    #[schema(example = json!(["body", "url"]))]
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    pub fn new(loc: &[&str], invalid: Invalid) -> Self {
        Self {
            loc: loc.iter().map(|s| s.to_string()).collect(),
            msg: invalid.message,
            kind: invalid.kind.to_owned(),
        }
    }
}

/// The answer of every refused call but a validation error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorOut {
    /// What went wrong, for a person to read.
    pub detail: String,
}

/// The answer of a call whose input is invalid (422): every problem found at once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ValidationErrorOut {
    pub detail: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("rate limit exceeded: at most {per_second} requests per second per API key; retry in {retry_after} s")]
    TooManyRequests { per_second: u32, retry_after: u64 },
    /// The store can no longer write (see `Store::health`); the process is stopping.
    #[error("storage unavailable")]
    Unavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn field(loc: &[&str], invalid: Invalid) -> Self {
        Self::Validation(vec![FieldError::new(loc, invalid)])
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(message) => ApiError::Conflict(message),
            e if e.is_unavailable() => {
                tracing::error!(error = %e, "storage unavailable");
                ApiError::Unavailable
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::Unauthorized(message) => {
                (StatusCode::UNAUTHORIZED, json!({ "detail": message }))
            }
            ApiError::NotFound(_)
            | ApiError::Conflict(_)
            | ApiError::PayloadTooLarge
            | ApiError::TooManyRequests { .. }
            | ApiError::Unavailable => {
                let status = match self {
                    ApiError::NotFound(_) => StatusCode::NOT_FOUND,
                    ApiError::Conflict(_) => StatusCode::CONFLICT,
                    ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
                    ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::PAYLOAD_TOO_LARGE,
                };
                (status, json!({ "detail": self.to_string() }))
            }
            ApiError::Validation(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "detail": errors }),
            ),
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "detail": "internal server error" }),
                )
            }
        };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after, .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// A JSON request body. Unlike axum's `Json`, it does not insist on a content type, and it
/// reports where the body is wrong in the provider's 422 shape.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse_json(&body_bytes(req, state).await?).map(JsonBody)
    }
}

/// A request's whole body: 413 past the limit.
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<bytes::Bytes, ApiError> {
    bytes::Bytes::from_request(req, state)
        .await
        .map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_) => ApiError::PayloadTooLarge,
            _ => ApiError::field(&["body"], Invalid::new("value_error", e.body_text())),
        })
}

/// As [`parse_json`], for a body that may be left out: an empty one (or `null`) is
/// `T::default()`.
pub fn parse_optional_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) || bytes.trim_ascii() == b"null" {
        return Ok(T::default());
    }
    parse_json(bytes)
}

/// Parses a JSON object into `T`, naming the failing field. Before any field is read,
/// the document must be well formed, be an object (serde would also read a struct from
/// an array of its fields in order), nest at most [`MAX_JSON_DEPTH`] deep, and name no
/// key twice in one object (serde_json alone keeps the last of two).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    check_shape(bytes)?;
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::field(
            &["body"],
            Invalid::new("type_error.dict", "the body must be a JSON object"),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let mut loc = vec!["body".to_owned()];
        if e.inner().is_syntax() || e.inner().is_eof() {
            return json_problem(loc, e.inner());
        }
        loc.extend(
            e.path()
                .iter()
                .map(|seg| seg.to_string())
                .filter(|seg| !seg.is_empty() && seg != "?"),
        );
        json_problem(loc, e.inner())
    })?;
    de.end()
        .map_err(|e| json_problem(vec!["body".to_owned()], &e))?;
    Ok(value)
}

fn json_problem(mut loc: Vec<String>, error: &serde_json::Error) -> ApiError {
    let message = error.to_string();
    // The field named in the message, unless the path already ends with it.
    let named = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(|field| (loc.last().map(String::as_str) != Some(field)).then(|| field.to_owned()))
    };
    let kind = if error.is_syntax() || error.is_eof() {
        "value_error.jsondecode"
    } else if let Some(field) = named("missing field `") {
        loc.extend(field);
        "value_error.missing"
    } else if let Some(field) = named("unknown field `") {
        loc.extend(field);
        "value_error.extra"
    } else if let Some(field) = named("duplicate field `") {
        loc.extend(field);
        "value_error.duplicate"
    } else {
        "type_error"
    };
    ApiError::Validation(vec![FieldError {
        loc,
        msg: strip_position(&message),
        kind: kind.to_owned(),
    }])
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// How deep a request's JSON may nest: objects and arrays within one another.
pub const MAX_JSON_DEPTH: usize = 32;

/// Reads a JSON document through, refusing one nested deeper than [`MAX_JSON_DEPTH`] or
/// with a key twice in one object, where it is.
fn check_shape(bytes: &[u8]) -> Result<(), ApiError> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut path = Vec::new();
    let checked = Shape { path: &mut path }.deserialize(&mut de);
    match checked {
        Ok(()) => Ok(()),
        Err(e) if e.is_data() => {
            let mut loc = vec!["body".to_owned()];
            loc.extend(path.iter().map(Step::to_string));
            let kind = match e.to_string().starts_with("duplicate key") {
                true => "value_error.duplicate",
                false => "value_error.depth",
            };
            Err(ApiError::Validation(vec![FieldError {
                loc,
                msg: strip_position(&e.to_string()),
                kind: kind.to_owned(),
            }]))
        }
        Err(e) => Err(json_problem(vec!["body".to_owned()], &e)),
    }
}

/// A JSON value read for its shape only; `path` is where the reading is.
struct Shape<'p> {
    path: &'p mut Vec<Step>,
}

/// One step of a path into a JSON document; an index is only made text if it is shown.
enum Step {
    Index(usize),
    Key(String),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Index(i) => i.fmt(f),
            Step::Key(k) => f.write_str(k),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Shape<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Shape<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.deeper::<A::Error>()?;
        let mut index = 0usize;
        loop {
            self.path.push(Step::Index(index));
            if seq.next_element_seed(Shape { path: self.path })?.is_none() {
                self.path.pop();
                break;
            }
            self.path.pop();
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.deeper::<A::Error>()?;
        let mut keys = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                self.path.push(Step::Key(key.clone()));
                return Err(serde::de::Error::custom(format!(
                    "duplicate key `{key}` in one object"
                )));
            }
            self.path.push(Step::Key(key));
            map.next_value_seed(Shape { path: self.path })?;
            self.path.pop();
        }
        Ok(())
    }
}

impl Shape<'_> {
    /// Refuses to go past [`MAX_JSON_DEPTH`] (the path holds one entry per level above).
    fn deeper<E: serde::de::Error>(&self) -> Result<(), E> {
        match self.path.len() >= MAX_JSON_DEPTH {
            true => Err(E::custom(format!(
                "the JSON nests deeper than {MAX_JSON_DEPTH} levels"
            ))),
            false => Ok(()),
        }
    }
}

/// Collects validation problems across fields, so a caller sees all of them at once.
#[derive(Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    /// Keeps `Ok` values and records `Err`s under `loc`.
    pub fn check<T>(&mut self, loc: &[&str], result: Result<T, Invalid>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(invalid) => {
                self.0.push(FieldError::new(loc, invalid));
                None
            }
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}
