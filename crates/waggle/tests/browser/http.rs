//! The dashboard's rules over plain HTTP, no browser needed: pages need a session,
//! sign-in tells nothing about which emails exist, every POST needs the session's CSRF
//! token, and one organization's ids are another's 404s.

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::{receiver, spawn_app, wait_for, Visitor, PASSWORD};

#[tokio::test]
async fn pages_send_visitors_without_a_session_to_the_login() {
    let app = spawn_app().await;
    let mut visitor = Visitor::new(&app);
    for path in [
        "/",
        "/webhooks",
        "/logs",
        "/logs/0190f5e4-0000-7000-8000-000000000000",
    ] {
        let page = visitor.get(path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        let location = page.location.expect("location");
        assert!(
            location == "/webhooks" || location.starts_with("/login"),
            "{path} → {location}"
        );
    }
    assert_eq!(
        visitor.get("/webhooks").await.location.as_deref(),
        Some("/login?next=%2Fwebhooks")
    );
    let page = visitor
        .post(
            "/webhooks",
            &[("url", "https://example.com"), ("name", "x")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/login"));
    let page = visitor
        .post("/webhooks/signature-key/regenerate", &[])
        .await;
    assert_eq!(page.location.as_deref(), Some("/login"));
    let (_, listed) = app.api(&app.first, "GET", "/api/v1/webhooks", None).await;
    assert_eq!(listed["items"], json!([]));
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    let mut wrong_password = Visitor::new(&app);
    let page = wrong_password
        .sign_in(&app.first.email, "not the password")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Incorrect email or password."));
    assert!(
        page.body
            .contains(&format!("value=\"{}\"", app.first.email)),
        "the email stays typed"
    );
    assert!(!wrong_password.has_session());

    let mut unknown = Visitor::new(&app);
    let other = unknown
        .sign_in("nobody@example.com", "not the password")
        .await;
    assert_eq!(other.status, page.status);
    assert!(other.body.contains("Incorrect email or password."));
    assert!(!unknown.has_session());

    let mut right = Visitor::new(&app);
    let page = right.sign_in(&app.first.email, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/webhooks"));
    assert!(right.has_session());
    assert_eq!(right.get("/webhooks").await.status, StatusCode::OK);

    // The login form's own token: a post from elsewhere signs nobody in.
    let mut forged = Visitor::new(&app);
    let page = forged
        .post(
            "/login",
            &[
                ("email", &app.first.email),
                ("password", PASSWORD),
                ("csrf_token", "guess"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(!forged.has_session());
}

#[tokio::test]
async fn forms_without_the_sessions_csrf_token_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let receiver = receiver().await;
    let hook_url = receiver.url("/hooks");
    let webhook_id = app.create_webhook(&app.first, "Kept", &hook_url).await;
    let key = app.signature_key(&app.first).await;
    let mut visitor = Visitor::new(&app);
    visitor.sign_in(&app.first.email, PASSWORD).await;
    let csrf = visitor.get("/webhooks").await.csrf();

    let create = [
        ("url", hook_url.as_str()),
        ("name", "Forged"),
        ("type", "production"),
        ("events", "connector_synced"),
    ];
    let edit = [
        ("url", hook_url.as_str()),
        ("name", "Renamed"),
        ("type", "production"),
        ("events", "connector_synced"),
    ];
    let attempts: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/webhooks".into(), create.to_vec()),
        (format!("/webhooks/{webhook_id}"), edit.to_vec()),
        (
            format!("/webhooks/{webhook_id}/enabled"),
            vec![("is_enabled", "false")],
        ),
        (format!("/webhooks/{webhook_id}/delete"), vec![]),
        ("/webhooks/signature-key/regenerate".into(), vec![]),
        (
            "/webhooks/test-url".into(),
            vec![("url", hook_url.as_str())],
        ),
        ("/logout".into(), vec![]),
    ];
    for (path, fields) in &attempts {
        for token in [None, Some("wrong"), Some(&csrf[..csrf.len() - 1])] {
            let mut fields = fields.clone();
            if let Some(token) = token {
                fields.push(("csrf_token", token));
            }
            let page = visitor.post(path, &fields).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{path} with {token:?}");
        }
    }
    let (_, listed) = app.api(&app.first, "GET", "/api/v1/webhooks", None).await;
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["name"], "Kept");
    assert_eq!(items[0]["is_enabled"], true);
    assert_eq!(app.signature_key(&app.first).await, key);
    assert_eq!(receiver.count(), 0, "no test was sent");
    assert_eq!(
        visitor.get("/webhooks").await.status,
        StatusCode::OK,
        "still signed in"
    );

    // With the token, the same form works.
    let mut fields = create.to_vec();
    fields.push(("csrf_token", &csrf));
    let page = visitor.post("/webhooks", &fields).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let (_, listed) = app.api(&app.first, "GET", "/api/v1/webhooks", None).await;
    assert_eq!(listed["items"].as_array().expect("items").len(), 2);
}

#[tokio::test]
async fn test_url_without_javascript_answers_the_page_with_the_result_and_the_typed_values() {
    let app = spawn_app().await;
    let receiver = receiver().await;
    let hook_url = receiver.url("/hooks");
    let mut visitor = Visitor::new(&app);
    visitor.sign_in(&app.first.email, PASSWORD).await;
    let csrf = visitor.get("/webhooks").await.csrf();
    let page = visitor
        .post(
            "/webhooks/test-url",
            &[
                ("csrf_token", &csrf),
                ("url", &hook_url),
                ("name", "Typed name"),
                ("type", "development"),
                ("events", "connector_sync_error"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Response 200 OK in"), "{}", page.body);
    assert!(page.body.contains("value=\"Typed name\""));
    assert!(page.body.contains(&format!("value=\"{}\"", hook_url)));
    assert!(page.body.contains("value=\"connector_sync_error\" checked"));
    assert!(page.body.contains("value=\"development\" checked"));
    assert_eq!(receiver.count(), 1);

    // A URL that does not parse is the field's error, and nothing is sent.
    let page = visitor
        .post(
            "/webhooks/test-url",
            &[("csrf_token", &csrf), ("url", "ftp://example.com")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("id=\"url-error\""));
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn another_organizations_ids_answer_404_and_stay_untouched() {
    let app = spawn_app().await;
    let receiver = receiver().await;
    let hook_url = receiver.url("/hooks");
    let webhook_id = app
        .create_webhook(&app.first, "First's hook", &hook_url)
        .await;
    app.start_sync(&app.first).await;
    let log_id = wait_for(
        "the first org's log",
        std::time::Duration::from_secs(20),
        || async {
            app.logs(&app.first)
                .await
                .first()
                .map(|l| l["id"].as_str().expect("id").to_owned())
        },
    )
    .await;

    let mut second = Visitor::new(&app);
    second.sign_in(&app.second.email, PASSWORD).await;
    let page = second.get("/webhooks").await;
    assert!(!page.body.contains("First&#39;s hook") && !page.body.contains(&webhook_id));
    let csrf = page.csrf();
    for path in [
        format!("/webhooks/{webhook_id}"),
        format!("/webhooks/{webhook_id}/delete"),
        format!("/logs/{log_id}"),
        "/webhooks/not-an-id".to_owned(),
    ] {
        assert_eq!(
            second.get(&path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for (path, fields) in [
        (format!("/webhooks/{webhook_id}/delete"), vec![]),
        (
            format!("/webhooks/{webhook_id}/enabled"),
            vec![("is_enabled", "false")],
        ),
        (format!("/logs/{log_id}/resend"), vec![]),
    ] {
        let mut fields = fields;
        fields.push(("csrf_token", csrf.as_str()));
        assert_eq!(
            second.post(&path, &fields).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let (status, hook) = app
        .api(
            &app.first,
            "GET",
            &format!("/api/v1/webhooks/{webhook_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hook["is_enabled"], true);
    assert_eq!(app.logs(&app.first).await.len(), 1, "nothing was resent");
    let logs = second.get("/logs").await;
    assert!(!logs.body.contains(&log_id));
}

#[tokio::test]
async fn pages_are_not_cached_or_framed_and_assets_are_served() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let page = client
        .get(app.url("/login"))
        .send()
        .await
        .expect("login page");
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    for (path, kind) in [
        ("/static/dashboard.css", "text/css"),
        ("/static/dashboard.js", "text/javascript"),
    ] {
        let asset = client.get(app.url(path)).send().await.expect("asset");
        assert_eq!(asset.status(), 200);
        assert!(asset.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
    }
    let mut visitor = Visitor::new(&app);
    let signed = visitor.sign_in(&app.first.email, PASSWORD).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER);
    assert_eq!(
        visitor.get("/").await.location.as_deref(),
        Some("/webhooks")
    );
}

#[tokio::test]
async fn api_keys_are_made_shown_once_and_deleted_from_the_security_page() {
    let app = spawn_app().await;
    let mut visitor = Visitor::new(&app);
    visitor.sign_in(&app.first.email, PASSWORD).await;
    let page = visitor.get("/webhooks").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"api-keys\""));
    assert_eq!(page.body.matches("class=\"api-key-row\"").count(), 1);
    // The only key has no Delete button: it is the last one.
    assert!(!page.body.contains("action=\"/api-keys/"));
    let csrf = page.csrf();

    // Without the session's CSRF token nothing is made.
    let refused = visitor.post("/api-keys", &[("name", "Backend")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let (_, listed) = app.api(&app.first, "GET", "/api/v1/api-keys", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    let made = visitor
        .post("/api-keys", &[("csrf_token", &csrf), ("name", "Backend")])
        .await;
    assert_eq!(made.status, StatusCode::CREATED);
    let secret = made
        .body
        .split("id=\"new-api-key-value\" class=\"secret-value\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the new key on the page")
        .to_owned();
    assert!(secret.starts_with("wgl_"));
    let with_new = crate::helpers::Org {
        api_key: secret.clone(),
        email: app.first.email.clone(),
    };
    let (status, listed) = app.api(&with_new, "GET", "/api/v1/api-keys", None).await;
    assert_eq!(status, StatusCode::OK);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    // Shown once: the list page has its prefix, never the key.
    let page = visitor.get("/webhooks").await;
    assert_eq!(page.body.matches("class=\"api-key-row\"").count(), 2);
    assert_eq!(page.body.matches("action=\"/api-keys/").count(), 2);
    assert!(!page.body.contains(&secret));

    // Another organization's key is not found from here, and stays.
    let (_, theirs) = app.api(&app.second, "GET", "/api/v1/api-keys", None).await;
    let their_id = theirs["items"][0]["id"].as_str().unwrap();
    let gone = visitor
        .post(
            &format!("/api-keys/{their_id}/delete"),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let (status, _) = app.api(&app.second, "GET", "/api/v1/webhooks", None).await;
    assert_eq!(status, StatusCode::OK);

    let new_id = items[1]["id"].as_str().unwrap();
    let deleted = visitor
        .post(
            &format!("/api-keys/{new_id}/delete"),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    let (status, _) = app.api(&with_new, "GET", "/api/v1/webhooks", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The last one is kept, with a word why.
    let (_, listed) = app.api(&app.first, "GET", "/api/v1/api-keys", None).await;
    let last_id = listed["items"][0]["id"].as_str().unwrap();
    let kept = visitor
        .post(
            &format!("/api-keys/{last_id}/delete"),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(
        kept.location.as_deref(),
        Some("/webhooks?notice=last-api-key#api-keys")
    );
    let (status, _) = app.api(&app.first, "GET", "/api/v1/webhooks", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn five_failed_sign_ins_for_an_email_hold_it_even_with_the_right_password() {
    let app = spawn_app().await;
    for _ in 0..5 {
        let page = Visitor::new(&app)
            .sign_in(&app.first.email, "not the password")
            .await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("Incorrect email or password."));
    }
    // Counted whatever the case of the email.
    let mut visitor = Visitor::new(&app);
    let page = visitor
        .sign_in(&app.first.email.to_uppercase(), PASSWORD)
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        page.body.contains("Too many failed sign-ins"),
        "{}",
        page.body
    );
    assert!(!visitor.has_session());
    // Another email from the same client is not held by the first one's failures.
    let mut other = Visitor::new(&app);
    let page = other.sign_in(&app.second.email, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(other.has_session());
}

#[tokio::test]
async fn twenty_failed_sign_ins_from_one_client_hold_every_email_from_it() {
    let app = spawn_app().await;
    for n in 0..20 {
        let page = Visitor::new(&app)
            .sign_in(&format!("nobody{n}@example.com"), "guess")
            .await;
        assert_eq!(page.status, StatusCode::OK, "attempt {n}");
    }
    let mut visitor = Visitor::new(&app);
    let page = visitor.sign_in(&app.first.email, PASSWORD).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!visitor.has_session());
}

#[tokio::test]
async fn a_sign_in_forgets_the_emails_earlier_failures() {
    let app = spawn_app().await;
    for round in 0..2 {
        for _ in 0..4 {
            Visitor::new(&app).sign_in(&app.first.email, "typo").await;
        }
        let mut visitor = Visitor::new(&app);
        let page = visitor.sign_in(&app.first.email, PASSWORD).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "round {round}");
        assert!(visitor.has_session());
    }
}

#[tokio::test]
async fn a_password_change_ends_the_other_sessions_and_keeps_this_one() {
    let app = spawn_app().await;
    let (mut here, mut elsewhere) = (Visitor::new(&app), Visitor::new(&app));
    here.sign_in(&app.first.email, PASSWORD).await;
    elsewhere.sign_in(&app.first.email, PASSWORD).await;
    let form = here.get("/account/password").await;
    assert_eq!(form.status, StatusCode::OK);
    let csrf = form.csrf();
    let new = "a new long secret";

    // Refused, changing nothing: without the CSRF token, with a wrong current password,
    // with two new ones that differ, with one too short.
    let refused = here
        .post(
            "/account/password",
            &[("current", PASSWORD), ("new", new), ("confirm", new)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    for (current, new, confirm, says) in [
        ("wrong", new, new, "current password is not right"),
        (PASSWORD, new, "another one", "differ"),
        (PASSWORD, "short", "short", "at least 8"),
    ] {
        let page = here
            .post(
                "/account/password",
                &[
                    ("csrf_token", &csrf),
                    ("current", current),
                    ("new", new),
                    ("confirm", confirm),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.body.contains(says), "{}", page.body);
    }
    assert_eq!(elsewhere.get("/webhooks").await.status, StatusCode::OK);

    let changed = here
        .post(
            "/account/password",
            &[
                ("csrf_token", &csrf),
                ("current", PASSWORD),
                ("new", new),
                ("confirm", new),
            ],
        )
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER);
    assert_eq!(here.get("/webhooks").await.status, StatusCode::OK);
    let ended = elsewhere.get("/webhooks").await;
    assert_eq!(ended.status, StatusCode::SEE_OTHER);
    assert!(ended.location.unwrap().starts_with("/login"));
    // The old password no longer signs in; the new one does.
    let old = Visitor::new(&app).sign_in(&app.first.email, PASSWORD).await;
    assert!(old.body.contains("Incorrect email or password."));
    let mut again = Visitor::new(&app);
    assert_eq!(
        again.sign_in(&app.first.email, new).await.status,
        StatusCode::SEE_OTHER
    );
    assert!(again.has_session());
}

#[tokio::test]
async fn a_webhook_disabled_by_waggle_shows_why_until_enabled_again() {
    use std::time::Duration;
    let app = crate::helpers::spawn_app_with(|c| {
        c.auto_disable_after = Duration::from_secs(1);
        c.retry_backoff = waggle::config::Backoff(vec![Duration::from_millis(100); 2]);
    })
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/h", closed.local_addr().unwrap());
    drop(closed);
    let id = app.create_webhook(&app.first, "dead", &closed_url).await;
    let path = format!("/api/v1/webhooks/{id}");
    wait_for("the webhook disabled", Duration::from_secs(15), || async {
        app.start_sync(&app.first).await;
        let (_, w) = app.api(&app.first, "GET", &path, None).await;
        (w["is_enabled"] == false).then_some(())
    })
    .await;

    let mut visitor = Visitor::new(&app);
    visitor.sign_in(&app.first.email, PASSWORD).await;
    let page = visitor.get(&format!("/webhooks/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"auto-disabled\""), "{}", page.body);
    assert!(page.body.contains("every attempt failed for 1s"));

    let csrf = page.csrf();
    let toggled = visitor
        .post(
            &format!("/webhooks/{id}/enabled"),
            &[("csrf_token", &csrf), ("is_enabled", "true")],
        )
        .await;
    assert_eq!(toggled.status, StatusCode::SEE_OTHER);
    let page = visitor.get(&format!("/webhooks/{id}")).await;
    assert!(!page.body.contains("id=\"auto-disabled\""));
    let (_, w) = app.api(&app.first, "GET", &path, None).await;
    assert_eq!(w["is_enabled"], true);
    assert_eq!(w["disabled_reason"], serde_json::Value::Null);
}

#[tokio::test]
async fn failed_deliveries_are_recovered_from_the_webhooks_page() {
    let app = spawn_app().await;
    let failing = crate::support::Receiver::start(503).await;
    let webhook_id = app
        .create_webhook(&app.first, "Failing", &failing.url("/h"))
        .await;
    app.start_sync(&app.first).await;
    wait_for(
        "the failed delivery",
        std::time::Duration::from_secs(20),
        || async {
            let logs = app.logs(&app.first).await;
            logs.first()
                .filter(|l| l["response_code"] == 503)
                .map(|_| ())
        },
    )
    .await;
    let mut visitor = Visitor::new(&app);
    visitor.sign_in(&app.first.email, PASSWORD).await;
    let path = format!("/webhooks/{webhook_id}");
    let page = visitor.get(&path).await;
    assert!(page.body.contains("Recover failed deliveries"));
    // The last day, drawn on the server: 24 hourly bars, and the figures in words.
    assert!(page.body.contains("id=\"activity-chart\""));
    assert_eq!(page.body.matches("<rect class=\"failed\"").count(), 24);
    assert!(
        page.body
            .contains("<dd id=\"stats-day\">1 delivery, 0.0 % succeeded, answered in"),
        "{}",
        page.body
    );
    let csrf = page.csrf();
    let action = format!("{path}/recover");

    // A range that does not hold is the form's error, and nothing is sent.
    for (since, until, error) in [
        ("", "", "invalid datetime"),
        ("2020-01-01T00:00", "2020-03-01T00:00", "at most 31 days"),
        ("2030-01-01T00:00", "", "must be before"),
    ] {
        let page = visitor
            .post(
                &action,
                &[("csrf_token", &csrf), ("since", since), ("until", until)],
            )
            .await;
        assert_eq!(
            page.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{since}..{until}"
        );
        assert!(page.body.contains("id=\"recover-error\""), "{}", page.body);
        assert!(page.body.contains(error), "{error}: {}", page.body);
        assert!(
            page.body.contains(&format!("value=\"{since}\"")),
            "what was typed stays"
        );
    }
    assert_eq!(failing.count(), 1);

    // The last hour: the one failure is sent again, and the page says so.
    let since = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let page = visitor
        .post(
            &action,
            &[("csrf_token", &csrf), ("since", &since), ("until", "")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let location = page.location.expect("a redirect to the recovery");
    assert!(
        location.starts_with(&format!("{path}?recovery=")),
        "{location}"
    );
    wait_for(
        "the delivery sent again",
        std::time::Duration::from_secs(20),
        || async { (failing.count() == 2).then_some(()) },
    )
    .await;
    // The page reads the recovery as it is: done once its delivery is made.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let shown = loop {
        let page = visitor.get(&location).await;
        if page.body.contains("Recovered: 1 of 1 failed deliveries") {
            break page.body;
        }
        assert!(std::time::Instant::now() < deadline, "{}", page.body);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(shown.contains("id=\"recover-progress\""));
}
