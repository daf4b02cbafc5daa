//! The OpenAPI 3.1 document of the REST API, served at `GET /api/v1/openapi.json`.
//!
//! It is made from the code, not written beside it: every route is registered with
//! `utoipa_axum::routes!`, which takes its path and method from the handler's
//! `#[utoipa::path]` annotation, so the router and the document cannot name different
//! routes. Request and answer bodies are the handlers' own types (`ToSchema`). What every
//! call may answer whatever it does (401, 429, 503, and 404/413/422 where the call takes
//! a path id, a body or a query) is added here once, by [`complete`], rather than on
//! each handler.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi as _};

use super::error::{ErrorOut, ValidationErrorOut};

/// The security scheme every authenticated operation names.
pub const BEARER: &str = "api_key";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "waggle",
        description = "Signed, retried, logged webhooks for connector syncs and data changes. \
            Every call but `/healthz`, `/metrics` and this document takes `Authorization: Bearer <API key>` \
            and acts for the key's organization; another organization's ids are not found (404).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    security(("api_key" = [])),
    components(schemas(ErrorOut, ValidationErrorOut)),
    modifiers(&BearerScheme),
    tags(
        (name = "webhooks", description = "Where an organization wants its events sent"),
        (name = "logs", description = "Every delivery, attempt by attempt"),
        (name = "connectors", description = "Connectors, their syncs and data changes: the calls that emit events"),
        (name = "api-keys", description = "The organization's own API keys"),
        (name = "stats", description = "Each webhook's deliveries, success rate and latency"),
        (name = "service", description = "Health and this document"),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut OpenApi) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                BEARER,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("wgl_…")
                        .build(),
                ),
            );
    }
}

/// The document's frame (info, security, shared schemas) before the routes add theirs.
pub fn base() -> OpenApi {
    ApiDoc::openapi()
}

/// The whole document, made once.
pub fn document() -> &'static OpenApi {
    static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = super::documented_routes().into_openapi();
        complete(&mut doc);
        doc
    })
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    security(()),
    responses((status = 200, description = "This document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| document().to_json().expect("the document serializes"));
    ([(header::CONTENT_TYPE, "application/json")], json.as_str())
}

/// Adds to each operation the answers it may give whatever it does.
pub fn complete(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            complete_operation(op);
        }
    }
}

fn complete_operation(op: &mut Operation) {
    let public = op
        .security
        .as_ref()
        .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
    if public {
        return;
    }
    let has = |place: ParameterIn| {
        op.parameters.iter().flatten().any(|p| match p {
            RefOr::T(p) => p.parameter_in == place,
            RefOr::Ref(_) => false,
        })
    };
    let (path_id, query) = (has(ParameterIn::Path), has(ParameterIn::Query));
    let idempotent = op
        .operation_id
        .as_deref()
        .is_some_and(|id| super::idempotency::OPERATIONS.contains(&id));
    if idempotent {
        op.parameters
            .get_or_insert_with(Vec::new)
            .push(RefOr::T(idempotency_key()));
        op.responses
            .responses
            .entry("409".to_owned())
            .or_insert(RefOr::T(error(
                "The sync job has already finished, or another call with this Idempotency-Key was being made",
            )));
    }
    let body = op.request_body.is_some();
    let responses = &mut op.responses.responses;
    let mut add = |status: &str, response: Response| {
        responses
            .entry(status.to_owned())
            .or_insert(RefOr::T(response));
    };
    add("401", error("No API key, or one that is not valid"));
    add(
        "429",
        with_header(
            error("Over the key's rate limit"),
            "Retry-After",
            "Seconds until a call would pass",
        ),
    );
    add(
        "503",
        error("The store cannot write; the node is restarting"),
    );
    if path_id {
        add("404", error("No such resource in the key's organization"));
    }
    if body {
        add("413", error("The body is larger than 1 MiB"));
    }
    if body || query || idempotent {
        add(
            "422",
            Response::builder()
                .description("Invalid input; `loc` names each field at fault")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ValidationErrorOut")))
                        .build(),
                )
                .build(),
        );
    }
    for response in op.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            for (name, what) in [
                ("X-RateLimit-Limit", "Calls a second this key may make"),
                ("X-RateLimit-Remaining", "Calls left in the burst"),
                (
                    "X-RateLimit-Reset",
                    "Seconds until the burst is whole again",
                ),
            ] {
                response
                    .headers
                    .entry(name.to_owned())
                    .or_insert_with(|| RefOr::T(integer_header(what)));
            }
        }
    }
}

/// The `Idempotency-Key` header of the calls that create or emit.
fn idempotency_key() -> utoipa::openapi::path::Parameter {
    use utoipa::openapi::path::ParameterBuilder;
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(utoipa::openapi::Required::False)
        .description(Some(
            "Made again within 24 hours with the same key, method, path and body, the call \
             answers what it answered the first time (with `Idempotent-Replayed: true`) and \
             changes nothing; the same key with another call is a 422.",
        ))
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some("^[!-~]{1,255}$")),
        ))
        .build()
}

/// An answer with the `{"detail": "…"}` body.
fn error(description: &str) -> Response {
    Response::builder()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorOut")))
                .build(),
        )
        .build()
}

fn with_header(mut response: Response, name: &str, what: &str) -> Response {
    response
        .headers
        .insert(name.to_owned(), RefOr::T(integer_header(what)));
    response
}

fn integer_header(what: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::Integer)
                .minimum(Some(0)),
        ))
        .description(Some(what))
        .build()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_call_that_takes_an_idempotency_key_is_an_operation_of_the_document() {
        let doc = super::document();
        let operations: Vec<&str> = doc
            .paths
            .paths
            .values()
            .flat_map(|item| [&item.get, &item.post, &item.patch, &item.delete])
            .flatten()
            .filter_map(|op| op.operation_id.as_deref())
            .collect();
        for id in super::super::idempotency::OPERATIONS {
            assert!(operations.contains(id), "{id} is not in {operations:?}");
        }
    }
}
