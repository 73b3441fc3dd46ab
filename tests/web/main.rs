//! The coordinators' web app in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, through fantoccini) against real nodes on 127.0.0.1 with real TLS between the
//! web app and the node's API, ports chosen by the OS, data in temporary directories.
//!
//! axe-core checks every page visited (WCAG 2.1 A and AA rules): no serious or critical
//! violation. Screenshots go to `target/web-screenshots/` (not committed).
//!
//! Chromium and chromedriver come from Debian (`apt-get install chromium chromium-driver`),
//! axe-core from npm into `target/web-axe/`; `.ci/run` installs all three. Where they are
//! missing the test says so loudly and passes, except in CI (`CI` set), where it fails.

#[path = "../../server/tests/common/ports.rs"]
mod ports;
#[path = "../federation/util.rs"]
#[allow(dead_code)]
mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::json;
use sfs_client::v1 as pb;
use sfs_node::api::tokens::{self, ApiRole};
use util::{Federation, DEADLINE};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// Skips loudly where the browser is missing, fails in CI.
fn missing(what: &str) {
    let message = format!(
        "SKIP: {what}; install with `apt-get install -y chromium chromium-driver` and \
         `npm install --prefix target/web-axe axe-core` (.ci/run does)"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message} (CI is set, so this fails)");
    }
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    );
    eprintln!("!!! {message}");
    eprintln!(
        "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
}

/// axe-core's browser script, installed from npm under `target/web-axe/` if needed.
fn axe_source() -> Option<String> {
    let dir = target_dir().join("web-axe");
    let file = dir.join("node_modules/axe-core/axe.min.js");
    if !file.exists() {
        let _ = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("axe-core@4")
            .stdout(Stdio::null())
            .status();
    }
    std::fs::read_to_string(file).ok()
}

/// A chromedriver process on a free port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
    _profiles: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(chromedriver: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Driver {
            child,
            url,
            _profiles: tempfile::tempdir().unwrap(),
        }
    }

    /// A new headless Chromium with a fresh profile, 1366×768 like an office laptop.
    async fn browser(&self, chromium: &Path, name: &str) -> Browser {
        let profile = self._profiles.path().join(name);
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    "--window-size=1366,768",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

/// What a page check needs: the axe script and where screenshots go.
struct Checks {
    axe: String,
    shots: PathBuf,
}

impl Checks {
    /// Runs axe-core on the page: no serious or critical WCAG 2.1 A/AA violation. Saves a
    /// screenshot named `name`.
    async fn page(&self, browser: &Browser, name: &str) {
        let png = browser.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
        browser.execute(&self.axe, vec![]).await.unwrap();
        let result = browser
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                   axe.run(document, { runOnly: { type: "tag",
                       values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] } })
                     .then(r => done(r.violations
                       .filter(v => v.impact === "serious" || v.impact === "critical")
                       .map(v => v.id + " (" + v.impact + "): " +
                            v.nodes.map(n => n.target.join(" ")).join(", "))))
                     .catch(e => done(["axe failed: " + e]));"#,
                vec![],
            )
            .await
            .unwrap();
        let violations: Vec<String> = serde_json::from_value(result).unwrap();
        assert!(
            violations.is_empty(),
            "{name}: accessibility violations: {violations:#?}"
        );
    }
}

async fn text_of(browser: &Browser, css: &str) -> String {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Polls until the element `css` shows `needle` (no reload: what the page does by itself).
async fn wait_for_text(browser: &Browser, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = text_of(browser, css).await;
        if text.contains(needle) {
            return text;
        }
        if Instant::now() > deadline {
            let main = text_of(browser, "main").await;
            let url = browser.current_url().await.map(|u| u.to_string());
            panic!("timed out waiting for {needle:?} in {css}; it shows {text:?}; at {url:?} the page says {main:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the page has an element matching `css`; on time-out, says what the page shows.
async fn wait_for_element(browser: &Browser, css: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if browser.find(Locator::Css(css)).await.is_ok() {
            return;
        }
        if Instant::now() > deadline {
            let main = text_of(browser, "main").await;
            let url = browser.current_url().await.map(|u| u.to_string());
            panic!("timed out waiting for {css}; at {url:?} the page says {main:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn path(browser: &Browser) -> String {
    browser.current_url().await.unwrap().path().to_string()
}

async fn fill(browser: &Browser, css: &str, value: &str) {
    let field = browser.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

/// Submits the form and waits until the browser shows the page that answered it (a new
/// document), so that what follows never reads, or clicks in, the page the form was on (which
/// may show the same text as the answer).
async fn submit(browser: &Browser, form_css: &str) {
    browser
        .execute("window.sfsBeforeSubmit = true; return null;", vec![])
        .await
        .unwrap();
    browser
        .find(Locator::Css(&format!("{form_css} button[type=submit]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let old = browser
            .execute("return window.sfsBeforeSubmit === true;", vec![])
            .await;
        if matches!(old, Ok(serde_json::Value::Bool(false))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no page answered the form {form_css}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts a form built in the page by script, as a forger would, with the given fields.
async fn forge_post(browser: &Browser, action: &str, fields: serde_json::Value) {
    browser
        .execute(
            r#"const [action, fields] = arguments;
               const form = document.createElement("form");
               form.method = "post"; form.action = action;
               for (const [name, value] of Object.entries(fields)) {
                 const input = document.createElement("input");
                 input.type = "hidden"; input.name = name; input.value = value;
                 form.appendChild(input);
               }
               document.body.appendChild(form); form.submit();"#,
            vec![json!(action), fields],
        )
        .await
        .unwrap();
}

/// The CSRF token of the signed-in page (the sign-out form carries it).
async fn csrf(browser: &Browser) -> String {
    browser
        .find(Locator::Css("form[action='/logout'] input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap()
}

/// The title of the page's first chart (not drawn, so WebDriver's text of it is empty).
async fn chart_title(browser: &Browser) -> String {
    let title = browser
        .execute(
            r#"const t = document.querySelector("svg.chart title");
               return t ? t.textContent : "";"#,
            vec![],
        )
        .await
        .unwrap();
    title.as_str().unwrap_or_default().to_string()
}

/// The page's first chart is drawn: a plot, a title and a description that name
/// it to screen readers, and a real size on the screen.
async fn assert_chart_drawn(browser: &Browser) {
    let drawn = browser
        .execute(
            r#"const svg = document.querySelector("svg.chart");
               if (!svg) return "no chart";
               const [t, d] = svg.getAttribute("aria-labelledby").split(" ");
               if (!document.getElementById(t) || !document.getElementById(d)) return "no name";
               if (svg.querySelectorAll("rect").length < 1) return "nothing drawn";
               svg.scrollIntoView();
               const box = svg.getBoundingClientRect();
               return box.width > 200 && box.height > 80 ? "ok" : "too small";"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(drawn, json!("ok"));
}

/// Signs in through a one-time link: the page offers a button, which uses the code.
async fn sign_in_with_link(browser: &Browser, link: &str) {
    browser.goto(link).await.unwrap();
    submit(browser, "form:has(input[name=code])").await;
    wait_for_text(browser, "h1", "Start").await;
}

/// Signs in with a token in the form.
async fn sign_in_with_token(browser: &Browser, base: &str, token: &str) {
    browser.goto(&format!("{base}/login")).await.unwrap();
    fill(browser, "#token", token).await;
    submit(browser, "form:has(#token)").await;
    wait_for_text(browser, "h1", "Start").await;
}

fn swedish_date(text: &str) -> bool {
    let months = [
        "jan.", "feb.", "mars", "apr.", "maj", "juni", "juli", "aug.", "sep.", "okt.", "nov.",
        "dec.",
    ];
    let words: Vec<&str> = text.split_whitespace().collect();
    words.windows(3).any(|w| {
        w[0].parse::<u8>().is_ok_and(|d| (1..=31).contains(&d))
            && months.contains(&w[1])
            && w[2].len() == 4
            && w[2].chars().all(|c| c.is_ascii_digit())
    })
}

/// Chromium, chromedriver and the page checks; none (said loudly) where they are missing.
fn browser_tools() -> Option<(PathBuf, PathBuf, Checks)> {
    let (Some(chromium), Some(chromedriver)) = (
        which("chromium").or_else(|| which("chromium-browser")),
        which("chromedriver"),
    ) else {
        missing("chromium or chromedriver is not installed");
        return None;
    };
    let Some(axe) = axe_source() else {
        missing("axe-core is not installed and npm could not install it");
        return None;
    };
    let shots = target_dir().join("web-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    Some((chromium, chromedriver, Checks { axe, shots }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinators_use_the_web_app_in_a_real_browser() {
    let Some((chromium, chromedriver, checks)) = browser_tools() else {
        return;
    };

    let fed = Federation::start_with(&["helsingborg", "malmo"], |config| {
        config.web.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (hbg, malmo) = (&fed.cities[0], &fed.cities[1]);
    let web = |node: &util::TestNode| node.running.as_ref().unwrap().web.clone().unwrap();
    let (hbg_web, malmo_web) = (web(hbg), web(malmo));
    let token = |node: &util::TestNode, role| {
        tokens::create_token(&node.config.data_dir, role, "web test").unwrap()
    };
    let hbg_editor = token(hbg, ApiRole::Editor);
    let malmo_reader = token(malmo, ApiRole::Reader);
    let mut hbg_api = fed.client(0).await;
    let organisation = hbg_api
        .create_organisation("Socialtjänsten Helsingborg", "municipality")
        .await
        .unwrap();

    let driver = Driver::start(&chromedriver).await;
    let malmo_browser = driver.browser(&chromium, "malmo").await;
    let hbg_browser = driver.browser(&chromium, "helsingborg").await;

    // Malmö's reader signs in with a one-time link and opens the national feed.
    let link = malmo_web.sign_in_link(&malmo_reader);
    sign_in_with_link(&malmo_browser, &link).await;
    checks.page(&malmo_browser, "01-malmo-start").await;
    // The link was used once; a second use is refused.
    malmo_browser.goto(&link).await.unwrap();
    submit(&malmo_browser, "form:has(input[name=code])").await;
    wait_for_text(&malmo_browser, "main", "redan använd").await;
    sign_in_with_link(&malmo_browser, &malmo_web.sign_in_link(&malmo_reader)).await;
    malmo_browser
        .goto(&format!("{}/lessons", malmo_web.url()))
        .await
        .unwrap();
    wait_for_text(&malmo_browser, "h1", "Lärdomar").await;
    assert_eq!(
        malmo_browser
            .execute("return document.documentElement.lang", vec![])
            .await
            .unwrap(),
        json!("sv"),
        "Swedish is the default"
    );
    // A reader is not offered write actions.
    assert!(
        malmo_browser
            .find_all(Locator::Css("a[href='/lessons/new']"))
            .await
            .unwrap()
            .is_empty(),
        "a reader is offered to write a lesson"
    );
    checks.page(&malmo_browser, "02-malmo-lessons-empty").await;

    // Helsingborg's editor signs in with a token and writes a lesson.
    sign_in_with_token(&hbg_browser, &hbg_web.url(), &hbg_editor).await;
    hbg_browser
        .goto(&format!("{}/lessons", hbg_web.url()))
        .await
        .unwrap();
    hbg_browser
        .find(Locator::Css("a[href='/lessons/new']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&hbg_browser, "h1", "Skriv en lärdom").await;
    checks.page(&hbg_browser, "03-helsingborg-new-lesson").await;
    let title = "Nattpersonalen ser mest";
    fill(&hbg_browser, "#title", title).await;
    fill(
        &hbg_browser,
        "#body",
        "Vi utbildade hela hotellets personal samtidigt; flest signaler kom från städpersonalen.",
    )
    .await;
    fill(&hbg_browser, "#tags", "hotell, utbildning").await;
    submit(&hbg_browser, "form:has(#title)").await;
    let feed = wait_for_text(&hbg_browser, "#feed", title).await;
    assert!(feed.contains("Helsingborg"), "author city shown: {feed}");
    assert!(
        swedish_date(&feed),
        "a Swedish date such as `2 nov. 2026`: {feed}"
    );
    checks.page(&hbg_browser, "04-helsingborg-lessons").await;

    // Malmö's open feed shows it without a reload (server-sent events).
    let feed = wait_for_text(&malmo_browser, "#feed", title).await;
    assert!(
        feed.contains("Helsingborg") && feed.contains("hotell"),
        "{feed}"
    );
    wait_for_text(&malmo_browser, "#live-status", "Nya lärdomar").await;
    checks.page(&malmo_browser, "05-malmo-live-update").await;

    // The privacy guard's refusal is shown at the field, in Swedish, naming the kind of data
    // and never the data; nothing is stored.
    let refusals = [
        (
            "#body",
            "Ring henne, personnummer 19811218-9876.",
            "#body-error",
            "ett personnummer",
            "9876",
        ),
        (
            "#title",
            "Ring 070-123 45 67",
            "#title-error",
            "ett telefonnummer",
            "45 67",
        ),
        (
            "#tags",
            "anna.svensson@example.se",
            "#tags-error",
            "en e-postadress",
            "svensson",
        ),
    ];
    for (field, value, error_css, kind, secret) in refusals {
        hbg_browser
            .goto(&format!("{}/lessons/new", hbg_web.url()))
            .await
            .unwrap();
        fill(&hbg_browser, "#title", "En rubrik").await;
        fill(&hbg_browser, "#body", "En text utan personuppgifter.").await;
        fill(&hbg_browser, field, value).await;
        submit(&hbg_browser, "form:has(#title)").await;
        let error = wait_for_text(&hbg_browser, error_css, kind).await;
        assert!(
            !error.contains(secret),
            "the refusal repeats the data: {error}"
        );
        let invalid = hbg_browser
            .find(Locator::Css(field))
            .await
            .unwrap()
            .attr("aria-invalid")
            .await
            .unwrap();
        assert_eq!(invalid.as_deref(), Some("true"), "{field} marked invalid");
        if kind == "ett personnummer" {
            checks
                .page(&hbg_browser, "06-helsingborg-refused-personnummer")
                .await;
        }
    }
    let stored = hbg_api.list_lessons("cities/helsingborg").await.unwrap();
    assert_eq!(stored.len(), 1, "no refused lesson was stored");

    // Edit (with the version read, so the API merges) and archive.
    let lesson = &stored[0];
    let id = lesson.name.rsplit('/').next().unwrap();
    hbg_browser
        .goto(&format!("{}/lessons/helsingborg/{id}/edit", hbg_web.url()))
        .await
        .unwrap();
    let etag = hbg_browser
        .find(Locator::Css("input[name=etag]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(
        etag, lesson.etag,
        "the form carries the version it was read at"
    );
    // Someone else changes the body meanwhile; the edit of the title keeps their change.
    let mut other = lesson.clone();
    other.body = format!("{} Tillägg från en kollega.", lesson.body);
    other.etag = String::new();
    hbg_api
        .update_lesson(other, vec!["body".into()])
        .await
        .unwrap();
    fill(
        &hbg_browser,
        "#title",
        "Nattpersonalen ser mest – hela skiftet",
    )
    .await;
    submit(&hbg_browser, "form:has(#title)").await;
    wait_for_text(&hbg_browser, "h1", "hela skiftet").await;
    let merged = hbg_api.get_lesson(&lesson.name).await.unwrap();
    assert!(
        merged.body.contains("Tillägg från en kollega"),
        "{merged:?}"
    );
    checks.page(&hbg_browser, "07-helsingborg-lesson").await;
    submit(&hbg_browser, "form[action$='/archive']").await;
    wait_for_text(&hbg_browser, "#feed", "0 lärdomar").await;
    assert!(hbg_api.get_lesson(&lesson.name).await.unwrap().archived);

    // A reader's forged form post (with a valid CSRF token) is refused by the API, and a post
    // without a CSRF token, or with a wrong one, is refused before anything runs.
    let csrf_token = csrf(&malmo_browser).await;
    forge_post(
        &malmo_browser,
        "/lessons",
        json!({ "csrf": csrf_token, "title": "Förfalskad", "body": "Text" }),
    )
    .await;
    wait_for_text(&malmo_browser, "main", "Din roll får inte göra detta").await;
    // The reader is offered no register edits, and a forged one is refused.
    malmo_browser
        .goto(&format!("{}/register", malmo_web.url()))
        .await
        .unwrap();
    wait_for_element(&malmo_browser, "#organisations").await;
    assert!(malmo_browser
        .find(Locator::Css("a[href^='/register/organisations/new']"))
        .await
        .is_err());
    forge_post(
        &malmo_browser,
        "/register/organisations",
        json!({ "csrf": csrf_token, "display_name": "Förfalskad", "sector": "other" }),
    )
    .await;
    wait_for_text(&malmo_browser, "main", "Din roll får inte göra detta").await;
    for fields in [
        json!({ "title": "Utan token", "body": "Text" }),
        json!({ "csrf": "fel", "title": "Fel token", "body": "Text" }),
    ] {
        malmo_browser
            .goto(&format!("{}/lessons", malmo_web.url()))
            .await
            .unwrap();
        forge_post(&malmo_browser, "/lessons", fields).await;
        wait_for_text(&malmo_browser, "main", "kontrolltoken saknas").await;
    }
    checks.page(&malmo_browser, "08-malmo-csrf-refused").await;
    let mut malmo_api = fed.client(1).await;
    assert!(
        malmo_api
            .list_lessons("cities/malmo")
            .await
            .unwrap()
            .is_empty(),
        "nothing forged was stored"
    );

    // Sign-out ends the session: the pages ask to sign in again.
    hbg_browser
        .goto(&format!("{}/lessons", hbg_web.url()))
        .await
        .unwrap();
    submit(&hbg_browser, "form[action='/logout']").await;
    wait_for_text(&hbg_browser, "h1", "Logga in").await;
    checks.page(&hbg_browser, "09-signed-out").await;
    hbg_browser
        .goto(&format!("{}/lessons", hbg_web.url()))
        .await
        .unwrap();
    assert_eq!(path(&hbg_browser).await, "/login");

    // Helsingborg's admin (a coordinator and more) adds a signal and finds it in the access log.
    sign_in_with_link(&hbg_browser, &hbg_web.sign_in_link(&hbg.admin_token)).await;
    hbg_browser
        .goto(&format!("{}/signals/new", hbg_web.url()))
        .await
        .unwrap();
    checks.page(&hbg_browser, "10-helsingborg-new-signal").await;
    hbg_browser
        .find(Locator::Css("#organisation"))
        .await
        .unwrap()
        .select_by_value(&organisation.name)
        .await
        .unwrap();
    fill(
        &hbg_browser,
        "#description",
        "Hotellet såg tecken på tvång.",
    )
    .await;
    submit(&hbg_browser, "form:has(#description)").await;
    // The new-signal form names the organisation too: wait for the signal's own page (it has
    // the follow-up form), so a form shown again with an error fails here with its text.
    wait_for_element(&hbg_browser, "form:has(#action)").await;
    wait_for_text(&hbg_browser, "main", "Socialtjänsten Helsingborg").await;
    let signal_path = path(&hbg_browser).await;
    assert!(signal_path.starts_with("/signals/"), "{signal_path}");
    checks.page(&hbg_browser, "11-helsingborg-signal").await;
    fill(&hbg_browser, "#action", "Kontakta hotellet").await;
    hbg_browser
        .find(Locator::Css("#status"))
        .await
        .unwrap()
        .select_by_value("referred")
        .await
        .unwrap();
    submit(&hbg_browser, "form:has(#action)").await;
    wait_for_text(&hbg_browser, "main", "Kontakta hotellet").await;
    wait_for_text(&hbg_browser, "h1", "Hänvisad").await;
    hbg_browser
        .goto(&format!("{}/access-log", hbg_web.url()))
        .await
        .unwrap();
    let resource = signal_path.trim_start_matches('/');
    let log = wait_for_text(&hbg_browser, "table", resource).await;
    assert!(
        log.contains("skapade") && log.contains("läste") && log.contains("ändrade"),
        "{log}"
    );
    assert!(swedish_date(&log), "local dates: {log}");
    checks.page(&hbg_browser, "12-helsingborg-access-log").await;

    // Statistics: the coordinator enters records, previews the quarter as tables, publishes it
    // after confirming, and the national figures at the hub change.
    let hub_web = fed.hub.running.as_ref().unwrap().web.clone().unwrap();
    let hub_reader = token(&fed.hub, ApiRole::Reader);
    let hub_browser = driver.browser(&chromium, "hub").await;
    sign_in_with_link(&hub_browser, &hub_web.sign_in_link(&hub_reader)).await;
    hbg_browser
        .goto(&format!("{}/statistics", hbg_web.url()))
        .await
        .unwrap();
    let quarter = hbg_browser
        .find(Locator::Css("#quarter"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let year = quarter[..4].to_string();
    let national = format!("{}/national?year={year}", hub_web.url());
    hub_browser.goto(&national).await.unwrap();
    wait_for_text(&hub_browser, "main", "Inga publicerade siffror").await;
    checks
        .page(&hbg_browser, "12b-helsingborg-statistics")
        .await;
    for i in 0..6 {
        for (select, value) in [
            ("#sex", "female"),
            ("#age_band", "25-34"),
            ("#citizenship", "non_eu"),
            ("#exploitation", "sexual"),
            ("#referral_source", "police"),
        ] {
            hbg_browser
                .find(Locator::Css(select))
                .await
                .unwrap()
                .select_by_value(value)
                .await
                .unwrap();
        }
        fill(&hbg_browser, "#person_ref", &format!("case-{i}")).await;
        submit(&hbg_browser, "form:has(#person_ref)").await;
        wait_for_text(&hbg_browser, "main", "Uppgiften är sparad").await;
    }
    fill(&hbg_browser, "#count", "3").await;
    submit(&hbg_browser, "form:has(#count)").await;
    wait_for_text(&hbg_browser, ".count", "6 stödinsatser").await;
    submit(&hbg_browser, "form[action='/statistics/preview']").await;
    let preview = wait_for_text(&hbg_browser, "main", "Form av exploatering efter kön").await;
    assert!(preview.contains("Dolda celler visas inte"), "{preview}");
    assert!(
        preview.contains("Kvinna") && preview.contains("Utbildningar"),
        "{preview}"
    );
    checks
        .page(&hbg_browser, "12c-helsingborg-statistics-preview")
        .await;
    hbg_browser
        .find(Locator::Css("#confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    submit(&hbg_browser, "form[action='/statistics/publish']").await;
    wait_for_text(&hbg_browser, "main", "är publicerat").await;
    // The city's own published figures as a chart drawn on the server (an SVG with a title
    // and a description), the table beside it.
    let title = chart_title(&hbg_browser).await;
    assert!(title.contains("per publicerat kvartal"), "{title:?}");
    assert_chart_drawn(&hbg_browser).await;
    let published = text_of(&hbg_browser, "section[aria-labelledby=published-title]").await;
    assert!(
        published.contains(&quarter) && published.contains("Så läser du diagrammen"),
        "{published}"
    );
    checks
        .page(&hbg_browser, "12c2-helsingborg-statistics-chart")
        .await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        hub_browser.goto(&national).await.unwrap();
        let text = text_of(&hub_browser, "main").await;
        if text.contains("Form av exploatering efter kön") {
            assert!(text.contains("Kvinna"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hub's figures did not change: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let title = chart_title(&hub_browser).await;
    assert!(title.contains("per kvartal"), "{title:?}");
    assert_chart_drawn(&hub_browser).await;
    // One city's hidden cells leave lower bounds of 0: arrows marked "okänt, men litet", which
    // the legend explains, never bars.
    let marked = hub_browser
        .execute(
            r#"return document.querySelector("svg.chart").textContent.includes("okänt, men litet")
                   && document.querySelector(".chart-legend").textContent.includes("okänt, men litet");"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        marked,
        json!(true),
        "a lower bound of 0 is not marked as unknown"
    );
    checks
        .page(&hub_browser, "12d-hub-national-statistics")
        .await;
    // The national overview names the member cities and how far each has come.
    let mut hub_api = fed.hub_client().await;
    for (id, name) in [("helsingborg", "Helsingborg"), ("malmo", "Malmö")] {
        hub_api
            .directory
            .create_city(pb::CreateCityRequest {
                city: Some(pb::City {
                    name: format!("cities/{id}"),
                    display_name: name.into(),
                    county: "Skåne län".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    hub_browser
        .goto(&format!("{}/overview", hub_web.url()))
        .await
        .unwrap();
    let overview = wait_for_text(&hub_browser, "main", "Malmö").await;
    assert!(
        overview.contains("Skåne län") && overview.contains("Helsingborg"),
        "{overview}"
    );
    checks.page(&hub_browser, "12e-hub-overview").await;
    hub_browser.close().await.unwrap();

    // The network register: the routine reads as steps with names, not ids.
    hbg_api
        .register
        .update_routine(pb::UpdateRoutineRequest {
            routine: Some(pb::Routine {
                name: "routine".into(),
                steps: vec![pb::RoutineStep {
                    description: "Den som får veta något ringer socialjouren".into(),
                    organisation: organisation.name.clone(),
                    how_to_reach: "Socialjourens nummer, dygnet runt".into(),
                }],
            }),
        })
        .await
        .unwrap();
    hbg_browser
        .goto(&format!("{}/register", hbg_web.url()))
        .await
        .unwrap();
    let register = wait_for_text(&hbg_browser, "main", "ringer socialjouren").await;
    assert!(
        register.contains("Socialtjänsten Helsingborg") && !register.contains("organisations/"),
        "{register}"
    );
    checks.page(&hbg_browser, "12g-helsingborg-register").await;

    // Editing the register: a refused field is shown at the field in Swedish; an organisation,
    // a contact and a meeting with a follow-up are added and read with names.
    let base = hbg_web.url();
    hbg_browser
        .goto(&format!("{base}/register/organisations/new"))
        .await
        .unwrap();
    submit(&hbg_browser, "form[action='/register/organisations']").await;
    wait_for_text(&hbg_browser, "#display_name-error", "får inte vara tomt").await;
    checks
        .page(&hbg_browser, "12h-helsingborg-organisation-refused")
        .await;
    fill(&hbg_browser, "#display_name", "Polisen Nordväst").await;
    hbg_browser
        .find(Locator::Css("#sector"))
        .await
        .unwrap()
        .select_by_value("police")
        .await
        .unwrap();
    submit(&hbg_browser, "form[action='/register/organisations']").await;
    wait_for_text(&hbg_browser, "#organisations", "Polisen Nordväst").await;
    hbg_browser
        .goto(&format!("{base}/register/contacts/new"))
        .await
        .unwrap();
    fill(&hbg_browser, "#full_name", "Kim Berg").await;
    fill(&hbg_browser, "#email", "inte en adress").await;
    submit(&hbg_browser, "form[action='/register/contacts']").await;
    wait_for_text(&hbg_browser, "#email-error", "ingen e-postadress").await;
    checks
        .page(&hbg_browser, "12i-helsingborg-contact-refused")
        .await;
    fill(&hbg_browser, "#email", "kim.berg@example.org").await;
    submit(&hbg_browser, "form[action='/register/contacts']").await;
    wait_for_text(&hbg_browser, "#contacts", "Kim Berg").await;
    hbg_browser
        .goto(&format!("{base}/register/meetings/new"))
        .await
        .unwrap();
    hbg_browser
        .find(Locator::Css(&format!(
            "input[name=organisations][value='{}']",
            organisation.name
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    fill(&hbg_browser, "#agenda", "Rutinen vid misstanke").await;
    fill(
        &hbg_browser,
        "#decisions",
        "Polisen bjuds in\nVi ses i mars",
    )
    .await;
    fill(&hbg_browser, "#fu_action_0", "Skicka inbjudan till polisen").await;
    hbg_browser
        .find(Locator::Css("#fu_owner_0"))
        .await
        .unwrap()
        .select_by_label("Kim Berg")
        .await
        .unwrap();
    checks
        .page(&hbg_browser, "12j-helsingborg-new-meeting")
        .await;
    submit(&hbg_browser, "form[action='/register/meetings']").await;
    let meetings = wait_for_text(&hbg_browser, "#meetings", "Rutinen vid misstanke").await;
    assert!(
        meetings.contains("Skicka inbjudan till polisen · Kim Berg")
            && meetings.contains("Vi ses i mars")
            && meetings.contains("Socialtjänsten Helsingborg")
            && !meetings.contains("contacts/"),
        "{meetings}"
    );

    // The handbook: the chapters and steps the city runs, progress set per step, and what
    // changed since a release.
    let chapter = hub_api
        .method
        .create_chapter(pb::CreateChapterRequest {
            chapter: Some(pb::Chapter {
                title: "Bygg det lokala nätverket".into(),
                introduction: "Metoden börjar med dem som redan möter problemet.".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let step = |title: &str| pb::CreateStepRequest {
        step: Some(pb::Step {
            chapter: chapter.name.clone(),
            title: title.into(),
            description: "Ta reda på vem som möter personer i riskzonen.".into(),
            ..Default::default()
        }),
    };
    let first = hub_api
        .method
        .create_step(step("Kartlägg aktörerna"))
        .await
        .unwrap()
        .into_inner();
    hub_api
        .method
        .create_release(pb::CreateReleaseRequest {
            release: Some(pb::Release {
                version_label: "2026.1".into(),
                notes: "Första versionen.".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    hub_api
        .method
        .create_step(step("Bilda en kärngrupp"))
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        hbg_browser
            .goto(&format!("{}/handbook?since=2026.1", hbg_web.url()))
            .await
            .unwrap();
        let text = text_of(&hbg_browser, "main").await;
        if text.contains("Bilda en kärngrupp") {
            assert!(text.contains("Ändrat sedan version 2026.1"), "{text}");
            assert!(text.contains("Nytt steg: Bilda en kärngrupp"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the handbook did not arrive: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let anchor = first.name.replace('/', "-");
    hbg_browser
        .find(Locator::Css(&format!("#state-{anchor}")))
        .await
        .unwrap()
        .select_by_value("done")
        .await
        .unwrap();
    submit(
        &hbg_browser,
        &format!("#{anchor} form[action='/handbook/progress']"),
    )
    .await;
    wait_for_text(&hbg_browser, &format!("#{anchor} h3"), "Klart").await;
    // The city's own note on the step: written here, kept in the city, shown on the page and
    // printed with the handbook.
    let note = "Här börjar vi med campingplatserna längs kusten.";
    fill(&hbg_browser, &format!("#notetext-{anchor}"), note).await;
    submit(&hbg_browser, &format!("#{anchor} form.note-form")).await;
    wait_for_text(&hbg_browser, &format!("#{anchor} .note-text"), note).await;
    checks.page(&hbg_browser, "12f-helsingborg-handbook").await;
    // The print view: the print stylesheet applied to the screen shows the note and no form.
    let printed = hbg_browser
        .execute(
            r#"const [anchor] = arguments;
               document.querySelector("link[media=print]").media = "all";
               const shown = el => el && getComputedStyle(el).display !== "none"
                   && el.getClientRects().length > 0;
               const step = document.getElementById(anchor);
               return {
                 note: shown(step.querySelector(".note-text"))
                     ? step.querySelector(".note-text").innerText : "",
                 forms: [...document.querySelectorAll("main form")].filter(shown).length,
               };"#,
            vec![json!(anchor)],
        )
        .await
        .unwrap();
    assert_eq!(printed["note"], json!(note), "{printed}");
    assert_eq!(printed["forms"], json!(0), "{printed}");
    checks
        .page(&hbg_browser, "12g-helsingborg-handbook-print")
        .await;
    hbg_browser
        .goto(&format!("{}/handbook", hbg_web.url()))
        .await
        .unwrap();
    // Malmö does not have Helsingborg's note, and its reader is offered no note to write.
    let deadline = Instant::now() + DEADLINE;
    let malmo_handbook = loop {
        malmo_browser
            .goto(&format!("{}/handbook", malmo_web.url()))
            .await
            .unwrap();
        let text = text_of(&malmo_browser, "main").await;
        if text.contains("Kartlägg aktörerna") {
            break text;
        }
        assert!(Instant::now() < deadline, "Malmö has no handbook: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!malmo_handbook.contains(note), "{malmo_handbook}");
    assert!(
        malmo_browser
            .find_all(Locator::Css("form.note-form"))
            .await
            .unwrap()
            .is_empty(),
        "a reader is offered to write a note"
    );

    // A city's admin cannot reach the hub's authoring page.
    hbg_browser
        .goto(&format!("{}/handbook/edit", hbg_web.url()))
        .await
        .unwrap();
    wait_for_text(&hbg_browser, "main", "Din roll får inte göra detta").await;
    hbg_browser
        .goto(&format!("{}/handbook", hbg_web.url()))
        .await
        .unwrap();

    // The national coordinator edits a step at the hub's authoring page, sees it in the draft,
    // and prepares a release: the page shows the command that signs exactly this draft.
    let hub_coordinator = token(&fed.hub, ApiRole::Coordinator);
    let author = driver.browser(&chromium, "hub-author").await;
    sign_in_with_link(&author, &hub_web.sign_in_link(&hub_coordinator)).await;
    author
        .goto(&format!("{}/handbook", hub_web.url()))
        .await
        .unwrap();
    author
        .find(Locator::Css("a[href='/handbook/edit']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&author, "h1", "Redigera handboken").await;
    let step_anchor = format!("s-{}", first.name.rsplit('/').next().unwrap());
    author
        .find(Locator::Css(&format!("#{step_anchor} > details > summary")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let description = "Börja med dem som redan ringer polisen om hotellen.";
    fill(&author, &format!("#{step_anchor}-description"), description).await;
    submit(&author, &format!("#{step_anchor} form.edit-step")).await;
    wait_for_text(
        &author,
        &format!("#{step_anchor} .step-description"),
        description,
    )
    .await;
    let draft = hub_api.handbook_latest().await.unwrap();
    let edited = draft
        .chapters
        .iter()
        .flat_map(|c| &c.steps)
        .find(|s| s.name == first.name)
        .unwrap();
    assert_eq!(edited.description, description);
    fill(&author, "#label", "2026.2").await;
    fill(&author, "#notes", "Tydligare första steg").await;
    submit(&author, "form.prepare-release").await;
    let command = wait_for_text(&author, "#release-command", "sfs handbook release").await;
    assert_eq!(
        command,
        format!(
            "sfs handbook release --label 2026.2 --notes 'Tydligare första steg' --number 1 \
             --version {} --valid-days 365 --key release.key",
            draft.version
        )
    );
    checks.page(&author, "12h-hub-handbook-authoring").await;
    author.close().await.unwrap();

    // English on request, remembered for the next page.
    hbg_browser
        .find(Locator::Css("a[hreflang=en]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&hbg_browser, "h1", "The handbook").await;
    hbg_browser
        .goto(&format!("{}/lessons", hbg_web.url()))
        .await
        .unwrap();
    wait_for_text(&hbg_browser, "h1", "Lessons").await;
    checks
        .page(&hbg_browser, "13-helsingborg-lessons-english")
        .await;

    // A phone's width: nothing wider than the screen.
    malmo_browser.set_window_size(375, 812).await.unwrap();
    malmo_browser
        .goto(&format!("{}/lessons?tag=hotell", malmo_web.url()))
        .await
        .unwrap();
    let fits = malmo_browser
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, json!(true), "the page scrolls sideways at 375 px");
    checks.page(&malmo_browser, "14-malmo-phone").await;

    malmo_browser.close().await.unwrap();
    hbg_browser.close().await.unwrap();
    drop(driver);
    let mut fed = fed;
    fed.stop_all().await;
}

/// Whether the page has an element matching `css`.
async fn has(browser: &Browser, css: &str) -> bool {
    !browser
        .find_all(Locator::Css(css))
        .await
        .unwrap()
        .is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_county_coordinator_uses_the_web_app_at_the_county_hub() {
    let Some((chromium, chromedriver, checks)) = browser_tools() else {
        return;
    };
    // The national hub with Umeå linked directly; the county hub of Skåne serving Malmö
    // (running, linked to it) and Lund (configured, not running).
    let mut fed = Federation::start(&["umea"]).await;
    let mut county = util::prepare(
        fed.dir.path(),
        sfs_sync::NodeId::county("skane").unwrap(),
        Some(fed.hub_url()),
    );
    county.config.county.cities = vec!["malmo".into(), "lund".into()];
    county.config.web.listen = Some("127.0.0.1:0".parse().unwrap());
    let running = sfs_node::node::start(county.config.clone(), Default::default())
        .await
        .unwrap();
    let county_url = format!("https://{}", running.federation_addr.unwrap());
    let county_web = running.web.clone().unwrap();
    county.running = Some(running);
    fed.wait_node_linked(&county, "hub").await;
    let mut malmo = util::prepare(
        fed.dir.path(),
        sfs_sync::NodeId::city("malmo").unwrap(),
        Some(county_url),
    );
    malmo.config.federation.county_id = Some("skane".into());
    fed.cities.push(malmo);
    fed.start_city(1).await;
    fed.wait_node_linked(&fed.cities[1], "county").await;

    // The national directory names the cities and their counties; a handbook step and a
    // release; Malmö has done the step.
    let mut hub = fed.hub_client().await;
    for (id, name, county) in [
        ("malmo", "Malmö", "Skåne län"),
        ("lund", "Lund", "Skåne län"),
        ("umea", "Umeå", "Västerbottens län"),
    ] {
        hub.directory
            .create_city(pb::CreateCityRequest {
                city: Some(pb::City {
                    name: format!("cities/{id}"),
                    display_name: name.into(),
                    county: county.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    let step = fed.hub_step(1, "Kartlägg hotellen").await;
    hub.method
        .create_release(pb::CreateReleaseRequest {
            release: Some(pb::Release {
                version_label: "2026.1".into(),
                notes: "Första versionen.".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let (mut umea, mut malmo) = (fed.client(0).await, fed.client(1).await);
    malmo
        .progress
        .set_step_progress(pb::SetStepProgressRequest {
            progress: Some(pb::StepProgress {
                step,
                state: "done".into(),
                date: "2026-11-01".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    // A lesson from each side of the county line.
    let (inside, outside) = ("Nattskiften i Skåne", "Uppsökande i Norrland");
    malmo
        .create_lesson(inside, "Skrivet i Malmö.", vec!["hotell".into()])
        .await
        .unwrap();
    umea.create_lesson(outside, "Skrivet i Umeå.", vec!["hotell".into()])
        .await
        .unwrap();
    // Malmö publishes a quarter: 13 people, some cells hidden (so the county's sums are lower
    // bounds there).
    for (i, (sex, exploitation, source)) in std::iter::repeat_n(("female", "sexual", "police"), 8)
        .chain(std::iter::repeat_n(
            ("male", "forced_labour", "social_services"),
            4,
        ))
        .chain([("female", "begging", "civil_society")])
        .enumerate()
    {
        malmo
            .stats
            .create_support_record(pb::CreateSupportRecordRequest {
                record: Some(pb::SupportRecord {
                    quarter: "2026-Q1".into(),
                    sex: sex.into(),
                    age_band: "25-34".into(),
                    citizenship: "non_eu".into(),
                    exploitation: exploitation.into(),
                    referral_source: source.into(),
                    person_ref: format!("malmo-{i}"),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    malmo
        .stats
        .preview_release(pb::PreviewReleaseRequest {
            quarter: "2026-Q1".into(),
        })
        .await
        .unwrap();
    malmo
        .stats
        .publish_release(pb::PublishReleaseRequest {
            quarter: "2026-Q1".into(),
        })
        .await
        .unwrap();
    // The county hub has both lessons (every node holds every city's), Malmö's progress and
    // release, and its figures.
    let county_api = fed.client_of(&county).await;
    util::eventually("the county hub has both lessons and its figures", || {
        let mut client = county_api.clone();
        async move {
            let lessons = client.list_lessons("cities/-").await.ok()?;
            let figures = client
                .stats
                .get_national_stats(pb::GetNationalStatsRequest { year: 2026 })
                .await
                .ok()?
                .into_inner();
            let adoption = client
                .progress
                .get_adoption(pb::GetAdoptionRequest {})
                .await
                .ok()?
                .into_inner();
            let cities = client
                .directory
                .list_cities(pb::ListRequest::default())
                .await
                .ok()?
                .into_inner()
                .cities;
            (lessons.len() == 2
                && figures.releases.len() == 1
                && adoption.steps.iter().any(|s| {
                    s.cities
                        .iter()
                        .any(|c| c.city == "malmo" && c.state == "done")
                })
                && cities
                    .iter()
                    .any(|c| c.name == "cities/malmo" && c.handbook_release == "2026.1"))
            .then_some(())
        }
    })
    .await;

    let driver = Driver::start(&chromedriver).await;
    let browser = driver.browser(&chromium, "skane").await;
    // The county coordinator signs in with a one-time link, as at any node.
    sign_in_with_link(&browser, &county_web.sign_in_link(&county.admin_token)).await;
    let brand = text_of(&browser, ".brand .node").await;
    assert!(brand.contains("Skåne län"), "the county is named: {brand}");
    // Only what makes sense at a county hub: no register, signals or city statistics.
    for city_only in ["/register", "/signals", "/access-log", "/statistics"] {
        assert!(
            !has(&browser, &format!("nav a[href='{city_only}']")).await,
            "the county hub's menu offers {city_only}"
        );
    }
    let start = text_of(&browser, "main").await;
    assert!(
        start.contains(inside) && !start.contains(outside),
        "the start page's new lessons are the county's: {start}"
    );
    assert!(start.contains("2 städer i länet"), "{start}");
    checks.page(&browser, "c01-county-start").await;

    // The county's cities: Malmö linked, with its release and progress; Lund not linked; no
    // city of another county.
    browser
        .find(Locator::Css("nav a[href='/overview']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&browser, "h1", "Städerna i Skåne län").await;
    let mut rows = Vec::new();
    for row in browser
        .find_all(Locator::Css("#cities tbody tr"))
        .await
        .unwrap()
    {
        rows.push(row.text().await.unwrap().replace('\n', " "));
    }
    let cities = rows.join("\n");
    let row = |name: &str| {
        rows.iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name} in {cities}"))
            .to_string()
    };
    let malmo_row = row("Malmö");
    assert!(
        malmo_row.contains("Ja") && malmo_row.contains("2026.1") && malmo_row.contains("1 / 1"),
        "{malmo_row}"
    );
    assert!(row("Lund").contains("Nej"), "{cities}");
    assert!(
        !cities.contains("Umeå"),
        "only the county's cities: {cities}"
    );
    let title = browser.title().await.unwrap();
    assert!(
        title.contains("Skåne län"),
        "the tab names the county: {title}"
    );
    // The remove buttons are drawn as links, visible on the white page.
    let color = browser
        .execute(
            r#"const b = document.querySelector("form.remove-city button");
               return b ? getComputedStyle(b).color : "none";"#,
            vec![],
        )
        .await
        .unwrap();
    assert_ne!(color, json!("rgb(255, 255, 255)"), "white on white");
    assert_ne!(color, json!("none"), "no remove button");
    checks.page(&browser, "c02-county-cities").await;

    // The county's lessons: Malmö's, not Umeå's.
    browser
        .find(Locator::Css("nav a[href='/lessons']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&browser, "h1", "Lärdomar från Skåne län").await;
    let feed = wait_for_text(&browser, "#feed", inside).await;
    assert!(!feed.contains(outside), "a lesson from outside: {feed}");
    assert!(
        !has(&browser, "a[href='/lessons/new']").await,
        "a county hub writes no lessons"
    );
    checks.page(&browser, "c03-county-lessons").await;

    // The handbook is read as at any node; nothing of a city's own (progress, notes) is offered.
    browser
        .goto(&format!("{}/handbook", county_web.url()))
        .await
        .unwrap();
    wait_for_element(&browser, "h1").await;
    let handbook = text_of(&browser, "main").await;
    assert!(
        handbook.contains("Länshubben har version 2026.1") && handbook.contains("Kartlägg"),
        "{handbook}"
    );
    assert!(
        !handbook.contains("Inte påbörjat"),
        "a county hub has no progress of its own: {handbook}"
    );
    assert!(!has(&browser, "form[action='/handbook/progress']").await);
    checks.page(&browser, "c03b-county-handbook").await;

    // The county's figures, with the same marks as the national ones.
    browser
        .goto(&format!("{}/national?year=2026", county_web.url()))
        .await
        .unwrap();
    wait_for_text(&browser, "h1", "Statistik för Skåne län").await;
    let figures = wait_for_text(&browser, "main", "Period 2026-Q1").await;
    assert!(figures.contains("≥"), "lower bounds marked: {figures}");
    assert!(
        chart_title(&browser).await.contains("Skåne län"),
        "the chart names the county"
    );
    checks.page(&browser, "c04-county-statistics").await;
    assert_chart_drawn(&browser).await;
    checks.page(&browser, "c05-county-statistics-chart").await;

    // Onboarding a city through the form: it is listed at once (by id until the national
    // directory names it).
    browser
        .goto(&format!("{}/overview", county_web.url()))
        .await
        .unwrap();
    fill(&browser, "#city", "Ystad stad").await;
    submit(&browser, "#onboard-form").await;
    let error = wait_for_text(&browser, "#city-error", "a–z").await;
    assert!(error.contains("certifikat"), "{error}");
    checks.page(&browser, "c06-county-onboard-refused").await;
    fill(&browser, "#city", "ystad").await;
    submit(&browser, "#onboard-form").await;
    wait_for_text(&browser, "main", "Ystad är nu en av länets städer").await;
    wait_for_text(&browser, "#cities", "Ystad").await;
    checks.page(&browser, "c07-county-onboarded").await;
    // A city of the county hub's configuration is not removed; the refusal says why.
    submit(
        &browser,
        "tr:has(input[name=city][value=malmo]) form.remove-city",
    )
    .await;
    let refusal = wait_for_text(&browser, "#remove-error", "county.cities").await;
    assert!(refusal.contains("Malmö"), "{refusal}");
    checks.page(&browser, "c08-county-remove-refused").await;
    // Ystad, onboarded here, is removed.
    submit(
        &browser,
        "tr:has(input[name=city][value=ystad]) form.remove-city",
    )
    .await;
    wait_for_text(&browser, "main", "Ystad är inte längre").await;
    assert!(!text_of(&browser, "#cities").await.contains("Ystad"));
    // In English too.
    browser
        .find(Locator::Css("a[hreflang=en]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&browser, "h1", "The cities of Skåne län").await;
    wait_for_text(&browser, "nav", "County statistics").await;
    checks.page(&browser, "c09-county-cities-english").await;

    browser.close().await.unwrap();
    drop(driver);
    county.running.take().unwrap().stop().await;
    fed.stop_all().await;
}

/// One HTTP/1.1 request to the web app; the status line, the headers and the body.
async fn http(addr: std::net::SocketAddr, request: String) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).to_string();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.to_string(), body.to_string())
}

fn set_cookie<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no cookie {name} in {head}"))
}

/// The server time of the lessons page on a city with many lessons (BENCHMARKS.md): run with
/// `cargo test --release -p sfs-tests --test web -- --ignored --nocapture`; the number of
/// lessons is `SFS_WEB_BENCH_LESSONS` (default 16000).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn lessons_page_render_time_with_many_lessons() {
    let count: usize = std::env::var("SFS_WEB_BENCH_LESSONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16_000);
    let fed = Federation::start_with(&["helsingborg"], |config| {
        config.web.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let client = fed.client(0).await;
    let started = Instant::now();
    let workers = 8;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..count).step_by(workers) {
                client
                    .create_lesson(
                        &format!("Lärdom nummer {i} om hotellutbildning"),
                        "Vi utbildade hela skiftet samtidigt och fick fler signaler efteråt.",
                        vec![format!("tagg{}", i % 40)],
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!("created {count} lessons in {:?}", started.elapsed());
    // 1,000 register entries: 100 organisations and 900 contacts (after the lessons, so that
    // the privacy guard of every lesson did not have to know 900 names).
    let started = Instant::now();
    let mut admin = client.clone();
    let mut organisations = Vec::new();
    for i in 0..100 {
        let sector = ["municipality", "police", "region", "civil_society"][i % 4];
        organisations.push(
            admin
                .create_organisation(&format!("Organisation {i}"), sector)
                .await
                .unwrap()
                .name,
        );
    }
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (mut client, organisations) = (client.clone(), organisations.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..900).step_by(workers) {
                client
                    .create_contact(sfs_proto::v1::Contact {
                        full_name: format!("Kontakt {i} Nätverksdotter"),
                        role: "Samordnare".into(),
                        organisation: organisations[i % organisations.len()].clone(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!("created 1000 register entries in {:?}", started.elapsed());
    let web = fed.cities[0].running.as_ref().unwrap().web.clone().unwrap();
    let addr = web.addr();
    let port = addr.port();
    let link = web.sign_in_link(&fed.cities[0].admin_token);
    let code = link.split("code=").nth(1).unwrap();
    let (head, body) = http(
        addr,
        format!("GET /login?code={code} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let pre = set_cookie(&head, &format!("sfs_pre_{port}")).to_string();
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let form = format!("csrf={csrf}&code={code}");
    let (head, _) = http(
        addr,
        format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nCookie: sfs_pre_{port}={pre}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    )
    .await;
    let session = set_cookie(&head, &format!("sfs_session_{port}")).to_string();
    let get = |path: String| {
        let session = session.clone();
        async move {
            http(
                addr,
                format!(
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nCookie: sfs_session_{port}={session}\r\n\r\n"
                ),
            )
            .await
        }
    };
    // The register's second page of contacts, by the link its first page gives.
    let (_, first) = get("/register".into()).await;
    let second = first
        .split("rel=\"next\"")
        .next()
        .and_then(|before| before.rsplit("href=\"").next())
        .and_then(|rest| rest.split('"').next())
        .expect("the register links its next page of contacts")
        .replace("&amp;", "&");
    let second = second.split('#').next().unwrap().to_string();
    let (_, body) = get(second.clone()).await;
    assert!(
        body.contains("Kontakt") && body.contains("Första sidan"),
        "the second page lists contacts and links back"
    );
    for (what, path) in [
        ("feed, first page", "/lessons"),
        ("search", "/lessons?q=nummer+1234"),
        ("tag", "/lessons?tag=tagg7"),
        ("start page", "/"),
        ("register", "/register"),
        ("register, page 2", second.as_str()),
        ("handbook", "/handbook"),
    ] {
        let mut times = Vec::new();
        for _ in 0..21 {
            let start = Instant::now();
            let (head, body) = http(
                addr,
                format!(
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nCookie: sfs_session_{port}={session}\r\n\r\n"
                ),
            )
            .await;
            times.push(start.elapsed());
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(body.contains("</html>"));
        }
        times.sort();
        eprintln!(
            "{what:<18} {path:<28} median {:>7.1} ms  max {:>7.1} ms  ({count} lessons)",
            times[10].as_secs_f64() * 1000.0,
            times[20].as_secs_f64() * 1000.0
        );
    }
    // The same calls the feed makes, straight to the API, to tell the API's time from the app's.
    let mut api = client.clone();
    let mut times = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        api.list_lessons_page("cities/-", 20, "").await.unwrap();
        api.handbook().await.unwrap();
        api.directory
            .list_cities(pb::ListRequest {
                page_size: 500,
                page_token: String::new(),
            })
            .await
            .unwrap();
        times.push(start.elapsed());
    }
    times.sort();
    eprintln!(
        "{:<18} {:<28} median {:>7.1} ms  max {:>7.1} ms  ({count} lessons)",
        "API calls alone",
        "ListLessons+GetHandbook+ListCities",
        times[10].as_secs_f64() * 1000.0,
        times[20].as_secs_f64() * 1000.0
    );
    let mut fed = fed;
    fed.stop_all().await;
}
