//! A real headless Chromium driven over WebDriver: chromedriver on a free port, started
//! and stopped by the test, with a fresh profile directory each time.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a page or an element may take to show.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Whether the browser tests can run here; when they cannot, either fails (with
/// `WAGGLE_REQUIRE_BROWSER=1`) or says loudly that they were skipped.
pub fn available() -> bool {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return true;
    }
    if std::env::var("WAGGLE_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!(
            "WAGGLE_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing: run scripts/install-browser.sh"
        );
    }
    eprintln!();
    eprintln!("==================================================================================");
    eprintln!(
        "SKIPPED: browser tests need chromium and chromedriver (run scripts/install-browser.sh)"
    );
    eprintln!("==================================================================================");
    false
}

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Self {
        let port = free_port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("profile dir");
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let capabilities = match capabilities {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("an object"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let attempt = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
            match attempt {
                Ok(client) => break client,
                Err(e) => {
                    if Instant::now() > deadline {
                        kill_driver(&mut driver);
                        panic!("could not start a browser session: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Ends the browser session (Chromium exits) and stops chromedriver.
    pub async fn stop(mut self) {
        let _ = self.client.clone().close().await;
        kill_driver(&mut self.driver);
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("page loads");
    }

    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element '{css}': {e}"))
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    pub async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default()
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    pub async fn is_checked(&self, css: &str) -> bool {
        self.find(css).await.is_selected().await.expect("selected")
    }

    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    pub async fn body_text(&self) -> String {
        self.text("body").await
    }

    /// The page's text, or nothing while the page is being replaced.
    async fn body_text_now(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the page's text contains `needle`.
    pub async fn wait_for_text(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.body_text_now().await;
            if text.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for '{needle}' on {}; the page says:\n{text}",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the browser is at a path starting with `prefix`.
    pub async fn wait_for_path(&self, prefix: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let path = self.path().await;
            if path.starts_with(prefix) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {prefix}; at {path}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn sign_in(&self, base: &str, email: &str, password: &str) {
        self.goto(&format!("{base}/login")).await;
        self.fill("#email", email).await;
        self.fill("#password", password).await;
        self.click("form[action='/login'] button[type=submit]")
            .await;
        self.wait_for_path("/webhooks").await;
    }

    /// Saves a PNG of the window to docs/screenshots/NAME.png when WAGGLE_SCREENSHOTS=1.
    pub async fn screenshot(&self, name: &str, width: u32, height: u32) {
        if std::env::var("WAGGLE_SCREENSHOTS").as_deref() != Ok("1") {
            return;
        }
        self.client
            .set_window_size(width, height)
            .await
            .expect("window size");
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
        self.client
            .set_window_size(1280, 900)
            .await
            .expect("window size");
    }
}

impl Drop for Browser {
    /// A test that failed half-way still stops chromedriver.
    fn drop(&mut self) {
        kill_driver(&mut self.driver);
    }
}

/// Stops chromedriver, the one process this test started (it ends the Chromium of a
/// closed session itself).
fn kill_driver(driver: &mut Child) {
    if let Ok(Some(_)) = driver.try_wait() {
        return;
    }
    let _ = driver.kill();
    let _ = driver.wait();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port()
}
