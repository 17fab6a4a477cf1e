//! End-to-end: the console of `bizon-host serve` (`/ui`), from outside
//! (plain HTTP, as an attacker's script would send it) and in headless
//! Chromium driven over WebDriver (as a person uses it). Two tenants run
//! real plugins; the browser logs in with a token, watches a pipeline's
//! records/s move, stops it with the button and logs out; a session sees
//! only what its token may, acts only with its CSRF token, and markup a
//! tenant controls shows as text. The browser test saves the screenshots
//! docs/serve.md shows (docs/img/console-*.png are copies of them).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::browser::Browser;
use crate::support::serve::{body as yaml, Serve, ADMIN};
use crate::support::wasm;

/// An endless dummy source into the hostile plugin's `ok` mode (writes
/// nothing, so no grant fills); the tenant's CPU share paces it.
const ENDLESS: &str = "name: e2e\nsource:\n  name: dummy\n  total_records: 1000000000\ndestination:\n  name: wasm\n  \
                       config:\n    plugin: steady\n    buffer_size: 0\n    buffer_flush_timeout: 0\n    \
                       plugin_config: {mode: ok}\n";
/// A pipeline whose plugin refuses its configuration, quoting the markup back.
const XSS: &str = "<script>alert('xss')</script>";

struct Setup {
    serve: Serve,
    acme: String,
    bravo: String,
}

/// Two tenants, each running an endless pipeline; acme's `broken` failed
/// to start with an error that quotes a `<script>`.
fn two_tenants(dir: &Path) -> Setup {
    let serve = Serve::start(&dir.join("data"), "");
    let acme = serve.tenant("acme", json!({"cpu_cores": 0.25}));
    let bravo = serve.tenant("bravo", json!({"cpu_cores": 0.25}));
    let hostile = std::fs::read(wasm("hostile")).unwrap();
    for (token, pipeline) in [(&acme, "orders"), (&bravo, "payments")] {
        serve.ok("PUT", "/v1/plugins/steady", token, Some(hostile.clone()));
        serve.ok("PUT", &format!("/v1/pipelines/{pipeline}"), token, yaml(ENDLESS));
        serve.ok("POST", &format!("/v1/pipelines/{pipeline}/start"), token, None);
    }
    let broken = ENDLESS.replace("{mode: ok}", &format!("{{mode: \"{XSS}\"}}"));
    serve.ok("PUT", "/v1/pipelines/broken", &acme, yaml(&broken));
    let (status, err) = serve.call("POST", "/v1/pipelines/broken/start", &acme, None);
    assert_eq!(status, 422, "{err}");
    let failed = serve.ok("GET", "/v1/pipelines/broken", &acme, None);
    assert!(failed["last_error"].as_str().unwrap().contains(XSS), "{failed}");
    Setup { serve, acme, bravo }
}

fn state(serve: &Serve, token: &str, pipeline: &str) -> String {
    let status = serve.ok("GET", &format!("/v1/pipelines/{pipeline}"), token, None);
    status["state"].as_str().unwrap().to_string()
}

#[test]
fn a_session_holds_no_token_sees_what_its_token_may_and_acts_only_with_its_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        serve,
        acme: a,
        bravo: b,
    } = two_tenants(dir.path());
    let console = serve.console([127, 0, 0, 1]);

    // No session: the login form. A wrong token: slow, and no cookie.
    assert_eq!(console.get(None, "/ui").location.as_deref(), Some("/ui/login"));
    let form = console.get(None, "/ui/login");
    assert!(form.body.contains("name=token type=password"), "{}", form.body);
    let asked = Instant::now();
    let (wrong, cookie) = console.login("bzt_guess");
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(cookie.is_none() && wrong.set_cookie.is_none());
    assert!(asked.elapsed() >= Duration::from_secs(1), "{:?}", asked.elapsed());

    // The admin token: a cookie of a random id, HttpOnly, SameSite=Strict, with an expiry.
    let (ok, cookie) = console.login(ADMIN);
    assert_eq!((ok.status, ok.location.as_deref()), (303, Some("/ui")));
    let set = ok.set_cookie.unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age=28800", "Path=/ui"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let admin = cookie.unwrap();
    let id = admin.strip_prefix("bizon_session=").unwrap();
    assert!(id.len() == 64 && !ADMIN.contains(id) && !id.contains(ADMIN), "{set}");

    // The operator sees both tenants' pipelines and the host's chart.
    let page = console.page(&admin, "/ui");
    for name in [
        "acme",
        "bravo",
        ">orders<",
        ">payments<",
        ">broken<",
        "<svg",
        "plugin memory budget",
    ] {
        assert!(page.contains(name), "{name}: {page}");
    }
    for token in [ADMIN, &a, &b] {
        assert!(!page.contains(token), "a token in the page");
    }
    let live = console.page(&admin, "/ui?live=1");
    assert!(live.contains(">orders<") && !live.contains("<html"), "{live}");

    // A tenant sees its own only; another tenant's names are nobody's.
    let (_, cookie) = console.login(&a);
    let acme = cookie.unwrap();
    assert_eq!(
        console.get(Some(&acme), "/ui").location.as_deref(),
        Some("/ui/tenants/acme")
    );
    let own = console.page(&acme, "/ui/tenants/acme");
    assert!(own.contains(">orders<") && own.contains(">broken<"), "{own}");
    assert!(!own.contains("payments") && !own.contains("bravo"), "{own}");
    for (theirs, nobodys) in [
        ("/ui/tenants/bravo", "/ui/tenants/nobody"),
        (
            "/ui/tenants/bravo/pipelines/payments",
            "/ui/tenants/nobody/pipelines/payments",
        ),
        (
            "/ui/tenants/acme/pipelines/payments",
            "/ui/tenants/acme/pipelines/nobody",
        ),
    ] {
        let (theirs, nobody) = (console.get(Some(&acme), theirs), console.get(Some(&acme), nobodys));
        assert_eq!((theirs.status, nobody.status), (404, 404), "{}", theirs.body);
        let name = |body: &str| {
            body.replace("bravo", "X")
                .replace("payments", "X")
                .replace("nobody", "X")
        };
        assert_eq!(name(&theirs.body), name(&nobody.body));
    }
    // What the tenant controls is text: its failing pipeline's error.
    let broken = console.page(&acme, "/ui/tenants/acme/pipelines/broken");
    assert!(
        broken.contains("&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;"),
        "{broken}"
    );
    assert_eq!(
        broken.matches("<script>").count(),
        1,
        "the console's own script only: {broken}"
    );

    // The cookie alone cannot stop a pipeline: the form needs the session's CSRF token.
    let stop = "/ui/tenants/acme/pipelines/orders/stop";
    let admins_csrf = console.csrf(&admin, "/ui");
    for fields in [vec![], vec![("csrf", "0".repeat(64))], vec![("csrf", admins_csrf)]] {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let refused = console.post(Some(&acme), stop, &fields);
        assert_eq!(refused.status, 403, "{fields:?}: {}", refused.body);
    }
    assert_eq!(state(&serve, &a, "orders"), "running");
    // The operator does not act as a tenant, as in the API.
    let admins_csrf = console.csrf(&admin, "/ui");
    assert_eq!(console.post(Some(&admin), stop, &[("csrf", &admins_csrf)]).status, 403);
    assert_eq!(state(&serve, &a, "orders"), "running");
    // With the token, the button stops it.
    let csrf = console.csrf(&acme, "/ui/tenants/acme/pipelines/orders");
    let stopped = console.post(Some(&acme), stop, &[("csrf", &csrf)]);
    assert_eq!(
        (stopped.status, stopped.location.as_deref()),
        (303, Some("/ui/tenants/acme/pipelines/orders"))
    );
    assert_eq!(state(&serve, &a, "orders"), "stopped");

    // The operator edits a tenant's limits; an empty field is the default again.
    let limits = "/ui/tenants/bravo/limits";
    let saved = console.post(
        Some(&admin),
        limits,
        &[
            ("csrf", &console.csrf(&admin, "/ui/tenants/bravo")),
            ("memory_mb", "300"),
            ("cpu_cores", ""),
        ],
    );
    assert_eq!(saved.status, 303, "{}", saved.body);
    let bravo = serve.ok("GET", "/v1/tenants/bravo", ADMIN, None);
    assert_eq!(
        (
            bravo["limits"]["memory_mb"].clone(),
            bravo["limits"]["cpu_cores"].clone()
        ),
        (json!(300), json!(1.0))
    );
    assert_eq!(
        console
            .post(Some(&acme), "/ui/tenants/acme/limits", &[("csrf", &csrf)])
            .status,
        403
    );

    // Logging out ends the session on the server, whatever the browser keeps.
    let out = console.post(Some(&acme), "/ui/logout", &[("csrf", &csrf)]);
    assert_eq!(out.location.as_deref(), Some("/ui/login"));
    assert!(out.set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(
        console.get(Some(&acme), "/ui/tenants/acme").location.as_deref(),
        Some("/ui/login")
    );

    // Eight guesses at once from one address: five are answered (slowly),
    // three refused; then even the right token is refused there, without
    // being looked at, and still accepted from another address.
    let guesser = serve.console([127, 0, 0, 2]);
    let mut codes: Vec<u16> = std::thread::scope(|s| {
        let guesser = &guesser;
        let guesses: Vec<_> = (0..8)
            .map(|i| s.spawn(move || guesser.login(&format!("bzt_{i}")).0.status))
            .collect();
        guesses.into_iter().map(|g| g.join().unwrap()).collect()
    });
    codes.sort();
    assert_eq!(codes, [401, 401, 401, 401, 401, 429, 429, 429]);
    let (refused, cookie) = guesser.login(ADMIN);
    assert_eq!(refused.status, 429);
    assert!(cookie.is_none());
    assert_eq!(console.login(ADMIN).0.status, 303);

    // No token ever reached the log.
    let log = serve.log();
    assert!(log.contains("console login with a wrong token"), "{log}");
    for token in [ADMIN, &a, &b] {
        assert!(!log.contains(token), "a token in the log:\n{log}");
    }
}

/// Where the browser test leaves its screenshots.
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn records_per_s(text: &str) -> f64 {
    text.trim().parse().unwrap_or(0.0)
}

#[test]
fn in_headless_chromium_a_tenant_watches_its_pipeline_stops_it_and_logs_out() {
    let dir = tempfile::tempdir().unwrap();
    let Setup { serve, acme: a, .. } = two_tenants(dir.path());
    let browser = Browser::start(dir.path(), 1200, 860);
    let shots = screenshots();
    let at = |path: &str| format!("{}{path}", serve.url);
    let ends_with = |path: &str| {
        let path = path.to_string();
        move |url: &str| url.ends_with(&path)
    };
    let wait_url = |what: &str, done: &dyn Fn(&str) -> bool| {
        crate::support::poll(
            || format!("{what}: at {}", browser.url()),
            || done(&browser.url()).then_some(()),
        )
    };

    // The console asks for a token; the token goes in the form, not the URL.
    browser.goto(&at("/ui"));
    wait_url("the login form", &ends_with("/ui/login"));
    browser.screenshot(&shots.join("console-login.png"));
    browser.type_into("#token", &a);
    browser.click("form[action='/ui/login'] button");
    wait_url("acme's page", &ends_with("/ui/tenants/acme"));
    assert!(!browser.url().contains(&a));
    assert_eq!(browser.script("return document.cookie"), json!(""), "HttpOnly");
    let cookies = browser.cookies();
    let session = cookies.iter().find(|c| c["name"] == "bizon_session").unwrap();
    assert_eq!(
        (session["httpOnly"].clone(), session["sameSite"].clone()),
        (json!(true), json!("Strict"))
    );
    assert!(
        session["expiry"].as_u64().is_some() && session["value"] != json!(a),
        "{session}"
    );
    let page = browser.source();
    assert!(page.contains(">orders<") && !page.contains("payments"), "{page}");

    // The pipeline's page refreshes itself: records/s moves without a reload.
    browser.goto(&at("/ui/tenants/acme/pipelines/orders"));
    let first = browser.wait_text("#rate", "records/s above 0", |t| records_per_s(t) > 0.0);
    browser.wait_text("#rate", "records/s to change", |t| t != first && records_per_s(t) > 0.0);
    browser.wait_text("#live figure", "the chart to draw a line", |_| {
        browser.count("#live svg polyline") > 0
    });
    assert!(browser.url().ends_with("/ui/tenants/acme/pipelines/orders"));
    browser.screenshot(&shots.join("console-pipeline.png"));

    // Its Stop button stops it.
    browser.click("form[action$='/stop'] button");
    browser.wait_text("#state", "the pipeline to stop", |t| t == "stopped");
    assert_eq!(state(&serve, &a, "orders"), "stopped");
    browser.wait_text("#rate", "records/s to fall to 0", |t| records_per_s(t) == 0.0);

    // A failing pipeline's `<script>` is text, and nothing ran it (an
    // alert would fail every WebDriver command from here on).
    browser.goto(&at("/ui/tenants/acme/pipelines/broken"));
    assert!(browser.text("#last-error").contains(XSS), "{}", browser.source());
    assert_eq!(browser.script("return document.scripts.length"), json!(1));

    // Another tenant's page is nobody's.
    browser.goto(&at("/ui/tenants/bravo"));
    assert!(browser.text("h1").starts_with("404"), "{}", browser.source());
    assert_eq!(browser.text(".msg"), "no tenant named `bravo`");

    browser.goto(&at("/ui/tenants/acme"));
    browser.wait_text("#live", "acme's chart", |_| browser.count("#live svg polyline") > 0);
    browser.screenshot(&shots.join("console-tenant.png"));

    // Logging out: back to the form, and the session is gone.
    browser.click("header form button");
    wait_url("the login form after logging out", &ends_with("/ui/login"));
    browser.goto(&at("/ui/tenants/acme"));
    wait_url("the login form for the ended session", &ends_with("/ui/login"));

    // The operator's view: every tenant, the host's chart.
    browser.type_into("#token", ADMIN);
    browser.click("form[action='/ui/login'] button");
    wait_url("the operator's page", &ends_with("/ui"));
    browser.wait_text("#live", "the host's chart", |_| {
        browser.count("#live svg polyline") >= 1
    });
    let page = browser.source();
    assert!(page.contains(">payments<") && page.contains(">orders<"), "{page}");
    browser.screenshot(&shots.join("console-operator.png"));
    for name in ["login", "pipeline", "tenant", "operator"] {
        let png = std::fs::read(shots.join(format!("console-{name}.png"))).unwrap();
        assert!(png.len() > 5_000, "console-{name}.png: {} bytes", png.len());
    }
    eprintln!("screenshots: {}", shots.display());
}

#[test]
fn the_operators_pages_stay_fast_with_1000_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), "native_destinations: [logger]\n");
    let pipeline = "name: p\nsource:\n  name: dummy\n  total_records: 10\ndestination:\n  name: logger\n";
    std::thread::scope(|s| {
        for part in 0..4 {
            let serve = &serve;
            s.spawn(move || {
                for i in (part..1000).step_by(4) {
                    let token = serve.tenant(&format!("t{i:04}"), json!({}));
                    serve.ok("PUT", "/v1/pipelines/p", &token, yaml(pipeline));
                }
            });
        }
    });
    let console = serve.console([127, 0, 0, 1]);
    let admin = console.login(ADMIN).1.unwrap();
    let mut report = Vec::new();
    for path in [
        "/ui",
        "/ui?live=1",
        "/ui?page=40",
        "/ui?q=t0999",
        "/ui?state=never_started&page=20",
        "/ui/tenants/t0500",
        "/ui/tenants/t0500/pipelines/p",
    ] {
        let mut took: Vec<Duration> = (0..5)
            .map(|_| {
                let asked = Instant::now();
                let page = console.page(&admin, path);
                assert!(
                    page.contains("t0") && page.len() < 200_000,
                    "{path}: {} bytes",
                    page.len()
                );
                asked.elapsed()
            })
            .collect();
        took.sort();
        report.push(format!("{path}: {:?} (median of 5)", took[2]));
        assert!(took[2] < Duration::from_secs(1), "{path}: {took:?}");
    }
    let first = console.page(&admin, "/ui");
    assert!(first.contains("1000 · page 1 of 40") && first.contains(">t0024<") && !first.contains(">t0025<"));
    let found = console.page(&admin, "/ui?q=t0999");
    assert!(
        found.contains("1 · page 1 of 1") && found.contains(">t0999<"),
        "{found}"
    );
    eprintln!("1,000 tenants:\n{}", report.join("\n"));
}
