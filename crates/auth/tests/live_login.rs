//! The login service behind a real ingress gateway Envoy running the
//! config `packlight_xds::ingress_gateway` generates for an IngressPolicy
//! with `login`: redirects and 401s without a session, the login page and
//! form through the gateway, cookie and bearer sessions reaching the
//! backend with `x-packlight-user`, exclusions, wrong passwords, expired
//! and forged tokens, removed users, logout.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use packlight_auth::{AuthOptions, SessionKey, UserStore, serve};
use packlight_xds::{XdsOptions, ingress_gateway};
use support::{Answer, echo_backend, free_addr, run_envoy, send};

const HOST: &str = "app.example.com";
const BROWSER: (&str, &str) = (
    "accept",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
);
const JSON: (&str, &str) = ("accept", "application/json");

/// The login service on an ephemeral port, in its own runtime; stopped
/// when dropped.
struct LoginService {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    rt: tokio::runtime::Runtime,
    done: Option<tokio::task::JoinHandle<Result<(), packlight_auth::AuthError>>>,
}

impl LoginService {
    fn start(opts: AuthOptions) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = rt.spawn(serve(listener, opts, async move {
            let _ = rx.await;
        }));
        LoginService {
            addr,
            stop: Some(tx),
            rt,
            done: Some(done),
        }
    }

    fn stop(&mut self) -> Result<(), packlight_auth::AuthError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.done.take() {
            Some(h) => self.rt.block_on(h).expect("join"),
            None => Ok(()),
        }
    }
}

impl Drop for LoginService {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn cookie_of(a: &Answer) -> String {
    let set = a.header("set-cookie").expect("set-cookie");
    set.split(';').next().expect("pair").to_string()
}

#[test]
fn login_through_a_real_gateway() {
    let data = tempfile::tempdir().expect("tempdir");
    let store = UserStore::open(data.path()).expect("store");
    store.add("alice", "correct horse").expect("add");
    store.add("bob", "battery staple").expect("add");
    let mut login = LoginService::start(AuthOptions {
        data_dir: data.path().to_path_buf(),
        session_ttl: Duration::from_secs(600),
        ..AuthOptions::default()
    });

    let backend = echo_backend();
    let yaml = format!(
        r#"apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {{name: app, namespace: demo}}
spec:
  port: 8000
  versions:
  - {{version: "1.0", endpoints: ["{backend}"]}}
---
apiVersion: packlight.dev/v1alpha1
kind: IngressPolicy
metadata: {{name: app, namespace: demo}}
spec:
  hosts: ["{HOST}"]
  routes:
  - {{pathPrefix: /app, service: app}}
  login: {{provider: builtin, loginUrl: /login, exclude: ["/app/public"]}}
---
apiVersion: packlight.dev/v1alpha1
kind: IngressPolicy
metadata: {{name: open, namespace: demo}}
spec:
  hosts: ["open.example.com"]
  routes:
  - {{pathPrefix: /, service: app}}
"#
    );
    let (model, _) = packlight_model::load(&[(None, &yaml)], "default");
    assert!(model.diagnostics.is_empty(), "{:?}", model.diagnostics);
    let opts = XdsOptions {
        ingress: free_addr(),
        login: Some(login.addr),
        ..XdsOptions::default()
    };
    let cfg = ingress_gateway(&model.mesh, &opts).expect("ingress");
    let envoy = run_envoy(&cfg, opts.ingress);
    let gw = opts.ingress;
    let get = |path: &str, headers: &[(&str, &str)]| send(gw, "GET", HOST, path, headers, "");

    // No session: a browser is sent to the login page, with its path.
    let a = get("/app/get?x=1", &[BROWSER]);
    assert_eq!(a.status, 302, "{a:?} (admin {})", envoy.admin());
    assert_eq!(
        a.header("location"),
        Some("/login?redirect=%2Fapp%2Fget%3Fx%3D1")
    );
    // An API client (JSON, or any bearer token) gets 401 JSON.
    for headers in [
        vec![JSON],
        vec![("authorization", "Bearer garbage")],
        vec![BROWSER, ("authorization", "Bearer ")],
    ] {
        let a = get("/app/get", &headers);
        assert_eq!(a.status, 401, "{headers:?}: {a:?}");
        assert_eq!(a.header("www-authenticate"), Some("Bearer"));
        assert!(
            a.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{a:?}"
        );
        let body: serde_json::Value = serde_json::from_str(a.body.trim()).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"error": "unauthenticated", "login": "/login"})
        );
    }

    // The login page through the gateway: a self-contained form.
    let a = get("/login?redirect=%2Fapp%2Fget", &[BROWSER]);
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        a.body.contains("<form method=\"post\" action=\"/login\">"),
        "{}",
        a.body
    );
    assert!(a.body.contains("name=\"redirect\" value=\"/app/get\""));
    assert!(!a.body.contains("src=") && !a.body.contains("<link"));

    // Wrong password: 401 and the form again, with an error.
    let form = |user: &str, pw: &str, redirect: &str| {
        let body: String =
            form_body(&[("username", user), ("password", pw), ("redirect", redirect)]);
        send(
            gw,
            "POST",
            HOST,
            "/login",
            &[
                BROWSER,
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            &body,
        )
    };
    let a = form("alice", "wrong", "/app/get");
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.body.contains("Wrong user name or password"));
    assert!(a.header("set-cookie").is_none());
    let a = form("nobody", "correct horse", "/app/get");
    assert_eq!(a.status, 401, "{a:?}");

    // Right password: a session cookie and back to where the user was.
    let a = form("alice", "correct horse", "/app/get?x=1");
    assert_eq!(a.status, 302, "{a:?}");
    assert_eq!(a.header("location"), Some("/app/get?x=1"));
    let set = a.header("set-cookie").expect("cookie");
    assert!(set.starts_with("packlight_session="), "{set}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = cookie_of(&a);
    // No open redirect.
    for evil in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let a = form("bob", "battery staple", evil);
        assert_eq!(a.status, 302, "{a:?}");
        assert_eq!(a.header("location"), Some("/"), "{evil}");
    }

    // With the cookie: the backend answers and sees who the user is,
    // never a user the client made up.
    let a = get(
        "/app/get",
        &[
            BROWSER,
            ("cookie", &cookie),
            ("x-packlight-user", "mallory"),
        ],
    );
    assert_eq!(a.status, 200, "{a:?}");
    let seen = a.body.to_ascii_lowercase();
    assert!(seen.contains("x-packlight-user: alice"), "{seen}");
    assert!(!seen.contains("mallory"), "{seen}");
    assert!(seen.contains("get /app/get http/1.1"), "{seen}");

    // A bearer token from the JSON login.
    let a = send(
        gw,
        "POST",
        HOST,
        "/login",
        &[JSON, ("content-type", "application/json")],
        r#"{"username":"bob","password":"battery staple"}"#,
    );
    assert_eq!(a.status, 200, "{a:?}");
    let body: serde_json::Value = serde_json::from_str(a.body.trim()).expect("json");
    let token = body["token"].as_str().expect("token").to_string();
    let bearer = format!("Bearer {token}");
    let a = get("/app/api", &[JSON, ("authorization", &bearer)]);
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        a.body
            .to_ascii_lowercase()
            .contains("x-packlight-user: bob")
    );
    // The same token works as the cookie value.
    let as_cookie = format!("packlight_session={token}");
    assert_eq!(get("/app/api", &[("cookie", &as_cookie)]).status, 200);
    // A JSON login with a wrong password is 401 JSON.
    let a = send(
        gw,
        "POST",
        HOST,
        "/login",
        &[JSON, ("content-type", "application/json")],
        r#"{"username":"bob","password":"nope"}"#,
    );
    assert_eq!(a.status, 401, "{a:?}");

    // Excluded prefix: no session needed, and no forged user passes.
    let a = get("/app/public/x", &[BROWSER, ("x-packlight-user", "mallory")]);
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        !a.body.to_ascii_lowercase().contains("x-packlight-user"),
        "{}",
        a.body
    );
    // A policy without login on the same gateway: open, header removed.
    let a = send(
        gw,
        "GET",
        "open.example.com",
        "/x",
        &[("x-packlight-user", "mallory")],
        "",
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        !a.body.to_ascii_lowercase().contains("x-packlight-user"),
        "{}",
        a.body
    );

    // Expired and forged sessions are no sessions.
    let key = SessionKey::open(data.path()).expect("key");
    let stamp = store
        .password_stamp("alice")
        .expect("stamp")
        .expect("alice");
    let fresh = key.issue("alice", &stamp, Duration::from_secs(600));
    let a = get("/app/get", &[("authorization", &format!("Bearer {fresh}"))]);
    assert_eq!(a.status, 200, "{a:?}");
    let expired = key.issue_until("alice", &stamp, UNIX_EPOCH + Duration::from_secs(1_000));
    let a = get(
        "/app/get",
        &[BROWSER, ("cookie", &format!("packlight_session={expired}"))],
    );
    assert_eq!(a.status, 302, "{a:?}");
    let a = get(
        "/app/get",
        &[("authorization", &format!("Bearer {expired}"))],
    );
    assert_eq!(a.status, 401, "{a:?}");
    let forged =
        SessionKey::from_bytes(&[0u8; 32]).issue("alice", &stamp, Duration::from_secs(600));
    let a = get(
        "/app/get",
        &[BROWSER, ("cookie", &format!("packlight_session={forged}"))],
    );
    assert_eq!(a.status, 302, "{a:?}");

    // A new password ends the sessions issued under the old one.
    store.add("bob", "new password").expect("new password");
    let a = get("/app/api", &[JSON, ("authorization", &bearer)]);
    assert_eq!(a.status, 401, "{a:?}");

    // A removed user's session stops working at once.
    assert!(store.remove("alice").expect("remove"));
    let a = get("/app/get", &[BROWSER, ("cookie", &cookie)]);
    assert_eq!(a.status, 302, "{a:?}");

    // Logout clears the cookie and goes back to the login page.
    let a = send(
        gw,
        "POST",
        HOST,
        "/login/logout",
        &[BROWSER, ("cookie", &as_cookie)],
        "",
    );
    assert_eq!(a.status, 302, "{a:?}");
    assert_eq!(a.header("location"), Some("/login"));
    let set = a.header("set-cookie").expect("cookie");
    assert!(
        set.starts_with("packlight_session=;") && set.contains("Max-Age=0"),
        "{set}"
    );

    drop(envoy);
    login.stop().expect("clean stop");
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let v: String = url_encode(v);
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Many checks at once while a login runs argon2: the runtime keeps
/// answering (checks never wait for password hashing).
#[test]
fn checks_are_answered_while_passwords_are_hashed() {
    let data = tempfile::tempdir().expect("tempdir");
    UserStore::open(data.path())
        .expect("store")
        .add("carol", "pw")
        .expect("add");
    let login = LoginService::start(AuthOptions {
        data_dir: data.path().to_path_buf(),
        ..AuthOptions::default()
    });
    let addr = login.addr;
    let logins: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                send(
                    addr,
                    "POST",
                    HOST,
                    "/login",
                    &[("content-type", "application/json")],
                    r#"{"username":"carol","password":"pw"}"#,
                )
                .status
            })
        })
        .collect();
    let mut checks = 0;
    for _ in 0..50 {
        let a = send(addr, "GET", HOST, "/app/x", &[JSON], "");
        assert_eq!(a.status, 401);
        checks += 1;
    }
    assert_eq!(checks, 50);
    for l in logins {
        assert_eq!(l.join().expect("thread"), 200);
    }
}

/// Options that cannot work are refused before anything is served.
#[test]
fn bad_options_are_refused() {
    let data = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let err = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let opts = AuthOptions {
            data_dir: data.path().to_path_buf(),
            login_url: "https://evil.example/login".to_string(),
            ..AuthOptions::default()
        };
        serve(listener, opts, async {}).await
    });
    assert!(
        matches!(err, Err(packlight_auth::AuthError::Options(_))),
        "{err:?}"
    );
}

/// Password guessing: after 10 failures for a name within a minute, the
/// service answers 429 with Retry-After, even to the right password;
/// other names are unaffected.
#[test]
fn guessing_is_limited_per_user_name() {
    let data = tempfile::tempdir().expect("tempdir");
    let store = UserStore::open(data.path()).expect("store");
    store.add("dave", "right").expect("add");
    store.add("erin", "right").expect("add");
    let login = LoginService::start(AuthOptions {
        data_dir: data.path().to_path_buf(),
        ..AuthOptions::default()
    });
    let try_login = |user: &str, pw: &str| {
        send(
            login.addr,
            "POST",
            HOST,
            "/login",
            &[("content-type", "application/json")],
            &format!(r#"{{"username":"{user}","password":"{pw}"}}"#),
        )
    };
    let statuses: Vec<u16> = (0..10).map(|_| try_login("dave", "guess").status).collect();
    assert_eq!(statuses, [401; 10]);
    let a = try_login("dave", "right");
    assert_eq!(a.status, 429, "{a:?}");
    assert!(a.header("retry-after").is_some(), "{a:?}");
    assert_eq!(try_login("erin", "right").status, 200);
}
