//! The dashboard end to end: plain HTTP checks of its rules (sign-in, CSRF, scoping), and
//! a real headless Chromium (over WebDriver) going through the provider page's steps.
//!
//! Run with `cargo test --test browser`; the browser half needs Debian's chromium and
//! chromium-driver (`scripts/install-browser.sh`). Without them it is skipped with a loud
//! message, or fails when `WAGGLE_REQUIRE_BROWSER=1`. `WAGGLE_SCREENSHOTS=1` also saves
//! docs/screenshots/webhooks.png and docs/screenshots/log-detail.png.

mod driver;
mod helpers;
mod http;
#[path = "../support/mod.rs"]
mod support;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

use axum::http::StatusCode;
use driver::Browser;
use helpers::{receiver, spawn_app, wait_for, TestApp, PASSWORD};

/// One browser at a time: the machine is small and each Chromium is heavy.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Signs `email` in in a fresh browser and runs `steps`; the browser is closed whether
/// they pass or not.
async fn signed_in(app: &TestApp, email: &str, steps: impl AsyncFnOnce(&Browser)) {
    let browser = Browser::start().await;
    let outcome = AssertUnwindSafe(async {
        browser.sign_in(&app.address, email, PASSWORD).await;
        steps(&browser).await;
    })
    .catch_unwind()
    .await;
    browser.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn a_webhook_is_created_tested_edited_and_deleted_in_the_browser() {
    if !driver::available() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let app = spawn_app().await;
    let receiver = receiver().await;
    let hook_url = receiver.url("/hooks");
    signed_in(&app, &app.first.email, async |browser| {
        // Sidebar: Configure → Webhooks, and Logs.
        assert_eq!(browser.text(".nav-group").await.to_lowercase(), "configure");
        assert_eq!(browser.text("nav a[aria-current=page]").await, "Webhooks");
        assert!(browser.body_text().await.contains("No webhooks yet"));

        // An invalid webhook: each field's error beside it, and what was typed stays.
        browser.fill("#url", "not a url").await;
        browser.fill("#name", "Employee data").await;
        browser.click("label[for='type-development']").await;
        browser.click("label[for='event-connector_synced']").await;
        browser.click("#submit-webhook").await;
        let error = browser.text("#url-error").await;
        assert!(!error.is_empty(), "the URL field shows its error");
        assert_eq!(browser.value("#url").await, "not a url");
        assert_eq!(browser.value("#name").await, "Employee data");
        assert!(browser.is_checked("#type-development").await);
        assert!(browser.is_checked("#event-connector_synced").await);
        assert!(!browser.is_checked("#event-connector_sync_started").await);
        assert!(
            browser.find_all("#name-error").await.is_empty(),
            "the name was fine"
        );
        assert!(
            browser.find_all(".webhook-row").await.is_empty(),
            "nothing was created"
        );

        // Test URL against a live receiver: the 200 shows inline, without leaving the form.
        browser.fill("#url", &hook_url).await;
        browser.click("#test-url").await;
        wait_for("the test result", driver::PATIENCE, || async {
            let text = browser.text("#test-url-result").await;
            text.contains("Response 200").then_some(())
        })
        .await;
        assert!(browser.text("#test-url-result").await.contains(" ms"));
        assert_eq!(browser.path().await, "/webhooks", "no page load");
        assert_eq!(browser.value("#name").await, "Employee data");
        let test = &receiver.requests()[0];
        assert!(test.headers.contains_key("x-bindbee-webhook-signature"));
        assert_eq!(receiver.count(), 1);

        // Create it.
        browser.click("label[for='type-production']").await;
        browser
            .click("label[for='event-connector_sync_started']")
            .await;
        browser.click("#submit-webhook").await;
        browser.wait_for_text("Webhook created.").await;
        let rows = browser.find_all(".webhook-row").await;
        assert_eq!(rows.len(), 1);
        let row = rows[0].text().await.expect("row text");
        for expected in [
            "Employee data",
            hook_url.as_str(),
            "Production",
            "Sync start",
            "Sync completed",
            "Enabled",
            "Never",
        ] {
            assert!(row.contains(expected), "the row shows '{expected}': {row}");
        }
        let (_, listed) = app.api(&app.first, "GET", "/api/v1/webhooks", None).await;
        let hook = &listed["items"][0];
        assert_eq!(hook["type"], "production");
        assert_eq!(
            hook["events"],
            serde_json::json!(["connector_sync_started", "connector_synced"])
        );
        let id = hook["webhook_id"].as_str().expect("id").to_owned();
        browser.screenshot("webhooks", 1280, 2000).await;

        // Its own page: edit, disable, delete with a confirmation.
        browser.click(".webhook-row .row-link").await;
        browser.wait_for_path(&format!("/webhooks/{id}")).await;
        browser.fill("#name", "Employee changes").await;
        browser
            .click("label[for='event-employee_data_changed']")
            .await;
        // Its retries: the provider's rule until changed; then waits of its own, and 503s
        // retried too.
        browser.click(".retries summary").await;
        assert!(browser.is_checked("#retry-policy-standard").await);
        browser.click("label[for='retry-policy-delays']").await;
        browser.fill("#retry-delays", "5s, 5m").await;
        browser.click("label[for='retry-on-503']").await;
        browser.click("label[for='ordered']").await;
        browser.click("#submit-webhook").await;
        browser.wait_for_text("Changes saved.").await;
        assert_eq!(browser.text("h1").await, "Employee changes");
        browser.click("#toggle-enabled").await;
        browser.wait_for_text("Webhook disabled").await;
        let (_, read) = app
            .api(&app.first, "GET", &format!("/api/v1/webhooks/{id}"), None)
            .await;
        assert_eq!(read["is_enabled"], false);
        assert_eq!(read["name"], "Employee changes");
        assert_eq!(
            read["retry_policy"],
            serde_json::json!({"delays": ["5s", "5m"]})
        );
        assert_eq!(read["retry_on_status"], serde_json::json!([503]));
        assert_eq!(read["ordered"], true);
        assert_eq!(
            read["events"],
            serde_json::json!([
                "connector_sync_started",
                "connector_synced",
                "employee_data_changed"
            ])
        );
        browser.click("#delete-webhook").await;
        browser.wait_for_text("Delete the webhook").await;
        browser.click("#confirm").await;
        browser.wait_for_text("Webhook deleted.").await;
        assert!(browser.find_all(".webhook-row").await.is_empty());
        let (status, _) = app
            .api(&app.first, "GET", &format!("/api/v1/webhooks/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn a_delivery_shows_in_the_logs_with_its_request_and_response() {
    if !driver::available() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let app = spawn_app().await;
    let receiver = receiver().await;
    let hook_url = receiver.url("/hooks");
    let webhook_id = app.create_webhook(&app.first, "Syncs", &hook_url).await;
    signed_in(&app, &app.first.email, async |browser| {
        let sync = app.start_sync(&app.first).await;
        let sync_id = sync["id"].as_str().expect("sync id").to_owned();
        wait_for("the delivery", Duration::from_secs(20), || async {
            (receiver.count() == 1).then_some(())
        })
        .await;
        let log_id = wait_for("the log to settle", Duration::from_secs(20), || async {
            let logs = app.logs(&app.first).await;
            logs.first()
                .filter(|l| l["response_code"] == 200)
                .map(|l| l["id"].as_str().expect("id").to_owned())
        })
        .await;

        // The Logs page lists it, newest first, and filters keep or drop it.
        browser.click("nav a[href='/logs']").await;
        browser.wait_for_path("/logs").await;
        let rows = browser.find_all(".log-row").await;
        assert_eq!(rows.len(), 1);
        let row = rows[0].text().await.expect("row text");
        for expected in ["Sync start", "Syncs", "breathehr", "John Doe", "200"] {
            assert!(row.contains(expected), "the row shows '{expected}': {row}");
        }
        browser.click("label[for='filter-errors']").await;
        browser.click(".filter-actions button").await;
        browser.wait_for_text("No deliveries match.").await;
        browser.fill("#filter-code", "200").await;
        browser.click("label[for='filter-errors']").await;
        browser.click(".filter-actions button").await;
        wait_for("the code filter", driver::PATIENCE, || async {
            let path = browser.path().await;
            let rows = browser.find_all(".log-row").await.len();
            (path.contains("response_code=200") && !path.contains("errors_only") && rows == 1)
                .then_some(())
        })
        .await;
        browser.fill("#filter-code", "abc").await;
        browser.click(".filter-actions button").await;
        browser.wait_for_text("is not an HTTP status code").await;

        // The webhook's own page shows its logs too.
        browser
            .goto(&app.url(&format!("/webhooks/{webhook_id}")))
            .await;
        assert_eq!(browser.find_all("#logs .log-row").await.len(), 1);
        // Recover failed, over the last day the form offers: nothing failed.
        browser.click("#recover-failed").await;
        browser
            .wait_for_text("No failed deliveries to recover")
            .await;
        assert_eq!(receiver.count(), 1, "nothing sent again");

        // The delivery: request headers and body, response status, headers and body.
        browser.click("#logs .log-row .row-link").await;
        browser.wait_for_path(&format!("/logs/{log_id}")).await;
        assert_eq!(browser.text("#log-status").await, "200");
        let body = browser.text("#request-body").await;
        assert!(body.contains(&sync_id), "the body has the sync: {body}");
        assert!(body.contains("connector_sync_started"));
        let attempt = browser.text("#attempt-1").await;
        for expected in [
            "webhook-id",
            &log_id,
            "x-bindbee-webhook-signature",
            "200 OK",
            "content-type",
            "received",
        ] {
            assert!(
                attempt.to_lowercase().contains(&expected.to_lowercase()),
                "attempt shows '{expected}': {attempt}"
            );
        }
        browser.screenshot("log-detail", 1280, 1500).await;

        // Resend: a new delivery of the same body.
        browser.click("#resend").await;
        browser.wait_for_text("Resent").await;
        wait_for("the resent delivery", Duration::from_secs(20), || async {
            (receiver.count() == 2).then_some(())
        })
        .await;
        let received = receiver.requests();
        assert_eq!(received[0].body, received[1].body);
        assert_ne!(browser.path().await, format!("/logs/{log_id}"));
    })
    .await;
}

#[tokio::test]
async fn the_signature_key_is_revealed_and_regenerated_after_a_confirmation() {
    if !driver::available() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let app = spawn_app().await;
    signed_in(&app, &app.first.email, async |browser| {
        let before = app.signature_key(&app.first).await;

        // Hidden until revealed.
        assert!(!browser
            .find("#signature-key")
            .await
            .is_displayed()
            .await
            .expect("displayed"));
        browser.click("#security summary").await;
        assert!(browser
            .find("#signature-key")
            .await
            .is_displayed()
            .await
            .expect("displayed"));
        assert_eq!(browser.text("#signature-key").await, before);
        assert!(browser
            .find("button[data-copy]")
            .await
            .is_displayed()
            .await
            .expect("displayed"));

        // The same key in the Standard Webhooks form.
        assert_eq!(
            browser.text("#standard-secret").await,
            waggle_verify::standard_secret(&before)
        );

        browser.click("#regenerate-key").await;
        browser
            .wait_for_text("Without a grace period, old signatures stop verifying at once")
            .await;
        browser.click("#confirm").await;
        browser.wait_for_text("Signature key regenerated.").await;
        let shown = browser.text("#signature-key").await;
        let after = app.signature_key(&app.first).await;
        assert_ne!(shown, before);
        assert_eq!(shown, after);
        assert!(browser.find_all("#retiring-key").await.is_empty());

        // With a grace, the page says until when the replaced key still signs.
        browser.click("#regenerate-key").await;
        browser.wait_for_text("Old key keeps signing").await;
        browser.click("#grace-period option[value='24h']").await;
        browser.click("#confirm").await;
        browser.wait_for_text("The previous key still signs").await;
        let after = app.signature_key(&app.first).await;
        assert_eq!(browser.text("#signature-key").await, after);

        // Cancel on the confirmation changes nothing.
        browser.click("#regenerate-key").await;
        browser.wait_for_text("Old key keeps signing").await;
        browser.click(".confirm-card a.button").await;
        browser.wait_for_path("/webhooks").await;
        assert_eq!(app.signature_key(&app.first).await, after);
    })
    .await;
}

#[tokio::test]
async fn another_organization_sees_none_of_the_first_ones_webhooks_or_logs() {
    if !driver::available() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let app = spawn_app().await;
    let receiver = receiver().await;
    let hook_url = receiver.url("/hooks");
    let webhook_id = app
        .create_webhook(&app.first, "First's hook", &hook_url)
        .await;
    app.start_sync(&app.first).await;
    let log_id = wait_for("the first org's log", Duration::from_secs(20), || async {
        app.logs(&app.first)
            .await
            .first()
            .map(|l| l["id"].as_str().expect("id").to_owned())
    })
    .await;

    signed_in(&app, &app.second.email, async |browser| {
        assert!(browser.text(".org-name").await.contains("Second Org"));
        assert!(browser.find_all(".webhook-row").await.is_empty());
        assert!(!browser.body_text().await.contains("First's hook"));
        browser.goto(&app.url("/logs")).await;
        assert!(browser.find_all(".log-row").await.is_empty());
        assert!(browser
            .find_all(&format!("#filter-webhook option[value='{webhook_id}']"))
            .await
            .is_empty());
        browser
            .goto(&app.url(&format!("/webhooks/{webhook_id}")))
            .await;
        assert_eq!(browser.text("h1").await, "Not found");
        browser.goto(&app.url(&format!("/logs/{log_id}"))).await;
        assert_eq!(browser.text("h1").await, "Not found");
        browser
            .goto(&app.url(&format!("/logs?webhook_id={webhook_id}")))
            .await;
        assert!(browser.find_all(".log-row").await.is_empty());

        // Logging out ends the session.
        browser.click(".account button").await;
        browser.wait_for_path("/login").await;
        browser.goto(&app.url("/webhooks")).await;
        browser.wait_for_path("/login").await;
    })
    .await;
}
