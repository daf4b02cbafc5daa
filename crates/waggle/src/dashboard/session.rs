//! Signing in and out, and the session every other page needs.
//!
//! The session cookie holds 256 random bits; the store keeps only their SHA-256, with the
//! session's CSRF token. The login form has its own double-submit token (a short-lived
//! cookie and a hidden field), so another site cannot sign a browser in either.
//!
//! A session ends after 12 h without use, and 7 days after sign-in whatever its use;
//! signing out ends it on the server. Failed sign-ins are counted in the store (so on
//! every node alike): after 5 for one email, or 20 from one client address, within
//! 15 minutes, sign-in answers 429, even with the right password, until they age out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use argon2::password_hash::PasswordHash;
use argon2::{Argon2, PasswordVerifier};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use subtle::ConstantTimeEq;

use super::error::{render, PageError};
use super::extract::FormData;
use super::views::{Layout, LoginPage, PasswordPage};
use crate::api::auth::hash_key;
use crate::api::AppState;
use crate::domain::ids::{OrgId, UserId};
use crate::domain::time::{self, Timestamp};
use crate::storage::DashboardSession;

pub const SESSION_COOKIE: &str = "waggle_session";
/// The login form's double-submit token.
const LOGIN_COOKIE: &str = "waggle_login";
/// A session unused this long has ended.
const IDLE: chrono::Duration = chrono::Duration::hours(12);
/// A session ends this long after its sign-in, used or not.
const LIFETIME: chrono::Duration = chrono::Duration::days(7);
/// Its expiry moves on at most this often, not on every page.
const EXTEND_EVERY: chrono::Duration = chrono::Duration::minutes(1);
/// Failed sign-ins count for this long.
const FAILURE_WINDOW: chrono::Duration = chrono::Duration::minutes(15);
const FAILURES_PER_EMAIL: u32 = 5;
const FAILURES_PER_ADDRESS: u32 = 20;

/// The signed-in user's session: which organization every page is scoped to.
#[derive(Debug, Clone)]
pub struct Session {
    pub org_id: OrgId,
    pub user_id: UserId,
    pub org_name: String,
    /// Every form of this session carries it; every POST checks it.
    pub csrf_token: String,
    token_hash: String,
}

impl Session {
    /// The frame of a page of this session's: the sidebar with its organization.
    pub fn layout(
        &self,
        title: impl Into<String>,
        active: &'static str,
        notice: Option<&str>,
    ) -> Layout {
        Layout::signed_in(title, &self.org_name, &self.csrf_token, active, notice)
    }

    /// Refuses a form that does not carry this session's CSRF token.
    fn check_csrf(&self, form: &FormData) -> Result<(), PageError> {
        let sent = form.get("csrf_token").unwrap_or("");
        if same_secret(sent, &self.csrf_token) {
            Ok(())
        } else {
            tracing::warn!(org_id = %self.org_id, "dashboard form without a valid CSRF token");
            Err(PageError::Forbidden)
        }
    }
}

fn same_secret(a: &str, b: &str) -> bool {
    !b.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl FromRequestParts<AppState> for Session {
    /// Anyone without a live session is sent to the login page.
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let found = match cookie(&parts.headers, SESSION_COOKIE) {
            Some(token) => state
                .store
                .session(&hash_key(token), time::now())
                .await
                .map_err(|e| PageError::from(e).into_response())?,
            None => None,
        };
        let Some(found) = found else {
            return Err(to_login(parts));
        };
        if let Some(until) = extended(time::now(), found.created_at, found.expires_at) {
            state
                .store
                .extend_session(&found.token_hash, until)
                .await
                .map_err(|e| PageError::from(e).into_response())?;
        }
        let org = state
            .keys
            .organization(found.org_id)
            .await
            .map_err(|e| PageError::from(e).into_response())?;
        Ok(Session {
            org_id: found.org_id,
            user_id: found.user_id,
            org_name: org.name,
            csrf_token: found.csrf_token,
            token_hash: found.token_hash,
        })
    }
}

/// A form posted by a signed-in user, which carries the session's CSRF token: the only
/// way a page handler gets a POST's fields.
pub struct Posted {
    pub session: Session,
    pub form: FormData,
}

impl FromRequest<AppState> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let form = FormData::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        session
            .check_csrf(&form)
            .map_err(IntoResponse::into_response)?;
        Ok(Posted { session, form })
    }
}

/// A session's new expiry when it is used at `now`: 12 h on, but never past 7 days from
/// its sign-in, and only once it moves by a minute or more.
fn extended(now: Timestamp, created_at: Timestamp, expires_at: Timestamp) -> Option<Timestamp> {
    let until = (now + IDLE).min(created_at + LIFETIME);
    (until - expires_at >= EXTEND_EVERY).then_some(until)
}

/// 303 to the login page, coming back to the page asked for when it was a GET.
fn to_login(parts: &Parts) -> Response {
    if parts.method == Method::GET {
        let next = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", next)
            .finish();
        Redirect::to(&format!("/login?{query}")).into_response()
    } else {
        Redirect::to("/login").into_response()
    }
}

/// Only paths of this site, so the login cannot send a browser elsewhere.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/webhooks".to_owned(),
    }
}

/// The value of one cookie of the request.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// 256 random bits, URL-safe base64.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn set_cookie(name: &str, value: &str, path: &str, max_age_secs: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; SameSite=Lax; Path={path}; Max-Age={max_age_secs}"
    ))
    .expect("cookie values are base64")
}

fn login_form(
    status: StatusCode,
    email: &str,
    next: &str,
    error: Option<&'static str>,
) -> Result<Response, PageError> {
    let csrf = random_token();
    let page = LoginPage {
        layout: Layout::bare("Sign in"),
        email: email.to_owned(),
        next: next.to_owned(),
        error,
        csrf: csrf.clone(),
    };
    let mut response = render(status, &page)?;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &csrf, "/login", 3600),
    );
    Ok(response)
}

pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, PageError> {
    let next = local_path(query.get("next").map(String::as_str));
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        if state
            .store
            .session(&hash_key(token), time::now())
            .await?
            .is_some()
        {
            return Ok(Redirect::to(&next).into_response());
        }
    }
    login_form(StatusCode::OK, "", &next, None)
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: FormData,
) -> Result<Response, PageError> {
    let email = form.get("email").unwrap_or("").trim().to_owned();
    let password = form.get("password").unwrap_or("").to_owned();
    let next = local_path(form.get("next"));
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if !same_secret(form.get("csrf_token").unwrap_or(""), expected) {
        return login_form(
            StatusCode::FORBIDDEN,
            &email,
            &next,
            Some("This sign-in form had expired. Please sign in again."),
        );
    }
    let now = time::now();
    let (counted, address) = (email.to_lowercase(), peer.ip().to_string());
    let (by_email, by_address) = state
        .store
        .login_failures(&counted, &address, now - FAILURE_WINDOW)
        .await?;
    if by_email >= FAILURES_PER_EMAIL || by_address >= FAILURES_PER_ADDRESS {
        tracing::warn!(address = %address, "dashboard sign-in refused: too many failures");
        return login_form(
            StatusCode::TOO_MANY_REQUESTS,
            &email,
            &next,
            Some("Too many failed sign-ins. Wait 15 minutes, then try again."),
        );
    }
    let user = if email.is_empty() || email.len() > 320 {
        None
    } else {
        state.store.dashboard_user_by_email(&email).await?
    };
    // An unknown email costs the same hash as a wrong password: no telling which it was.
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| unknown_user_hash().to_owned());
    let verified = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|e| PageError::Internal(e.into()))?;
    let Some(user) = user.filter(|_| verified) else {
        tracing::info!("dashboard sign-in refused");
        state
            .store
            .record_login_failure(&counted, &address, now, now - FAILURE_WINDOW)
            .await?;
        return login_form(
            StatusCode::OK,
            &email,
            &next,
            Some("Incorrect email or password."),
        );
    };
    if by_email > 0 {
        state.store.clear_login_failures(&counted).await?;
    }
    let token = random_token();
    let session = DashboardSession {
        token_hash: hash_key(&token),
        user_id: user.id,
        org_id: user.org_id,
        csrf_token: random_token(),
        created_at: now,
        expires_at: now + IDLE,
    };
    state.store.create_session(&session).await?;
    tracing::info!(org_id = %user.org_id, user_id = %user.id, "dashboard sign-in");
    let mut response = Redirect::to(&next).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &token, "/", LIFETIME.num_seconds()),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", "/login", 0),
    );
    Ok(response)
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A real argon2 hash of nothing anyone can type, checked when the email is unknown.
fn unknown_user_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| crate::orgs::hash_password(&random_token()))
}

pub async fn logout(
    State(state): State<AppState>,
    Posted { session, .. }: Posted,
) -> Result<Response, PageError> {
    state.store.delete_session(&session.token_hash).await?;
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", "/", 0));
    Ok(response)
}

pub async fn password_page(session: Session) -> Result<Response, PageError> {
    password_form(&session, StatusCode::OK, None)
}

fn password_form(
    session: &Session,
    status: StatusCode,
    error: Option<&'static str>,
) -> Result<Response, PageError> {
    let page = PasswordPage {
        layout: session.layout("Change password", "", None),
        csrf: session.csrf_token.clone(),
        error,
    };
    render(status, &page)
}

/// Changes the signed-in user's password, once the current one is given, and ends their
/// other sessions.
pub async fn change_password(
    State(state): State<AppState>,
    Posted { session, form }: Posted,
) -> Result<Response, PageError> {
    let current = form.get("current").unwrap_or("").to_owned();
    let new = form.get("new").unwrap_or("").to_owned();
    if new != form.get("confirm").unwrap_or("") {
        let error = Some("The two new passwords differ.");
        return password_form(&session, StatusCode::UNPROCESSABLE_ENTITY, error);
    }
    if new.chars().count() < crate::orgs::MIN_PASSWORD_CHARS {
        let error = Some("The new password must have at least 8 characters.");
        return password_form(&session, StatusCode::UNPROCESSABLE_ENTITY, error);
    }
    let user = state
        .store
        .dashboard_user(session.user_id)
        .await?
        .ok_or(PageError::NotFound)?;
    let hash = user.password_hash;
    let verified = tokio::task::spawn_blocking(move || verify_password(&current, &hash))
        .await
        .map_err(|e| PageError::Internal(e.into()))?;
    if !verified {
        let error = Some("The current password is not right.");
        return password_form(&session, StatusCode::UNPROCESSABLE_ENTITY, error);
    }
    let hash = tokio::task::spawn_blocking(move || crate::orgs::hash_password(&new))
        .await
        .map_err(|e| PageError::Internal(e.into()))?;
    state
        .store
        .set_password(session.user_id, &hash, &session.token_hash)
        .await?;
    tracing::info!(org_id = %session.org_id, user_id = %session.user_id, "dashboard password changed; other sessions ended");
    Ok(Redirect::to("/webhooks?notice=password-changed").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_used_session_lasts_12_hours_more_but_never_past_7_days() {
        let signed_in = time::now();
        let expires = signed_in + IDLE;
        // Used within the minute: left as it is.
        assert_eq!(
            extended(
                signed_in + chrono::Duration::seconds(30),
                signed_in,
                expires
            ),
            None
        );
        // Used an hour later: 12 h from then.
        let later = signed_in + chrono::Duration::hours(1);
        assert_eq!(extended(later, signed_in, expires), Some(later + IDLE));
        // Near its seventh day: its absolute end, and nothing after.
        let near_end = signed_in + LIFETIME - chrono::Duration::hours(2);
        assert_eq!(
            extended(near_end, signed_in, near_end),
            Some(signed_in + LIFETIME)
        );
        assert_eq!(extended(near_end, signed_in, signed_in + LIFETIME), None);
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_path(Some("/logs?x=1")), "/logs?x=1");
        assert_eq!(local_path(Some("//evil.example")), "/webhooks");
        assert_eq!(local_path(Some("https://evil.example")), "/webhooks");
        assert_eq!(local_path(Some("/\\evil.example")), "/webhooks");
        assert_eq!(local_path(None), "/webhooks");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; waggle_session=tok; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("ab", "abc"));
        assert!(!same_secret("", ""));
    }

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let hash = crate::orgs::hash_password("correct horse");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("x", "not a phc string"));
    }
}
