//! The normative routing algorithm, as a table of cases checked against
//! the IR: path, headers, query (and host at the ingress) -> version.

use packlight_model::ir::{ServiceKey, WeightedVersion};
use packlight_model::routing::{Decision, RequestSample, Vantage};
use packlight_model::{Version, load};

const ROUTE: &str = r#"
apiVersion: packlight.dev/v1alpha1
kind: Route
metadata: {name: httpbin, namespace: demo}
spec:
  service: httpbin
  rules:
  - {version: "1.0", weight: 80}
  - {version: "1.1", weight: 20}
  - {version: "2.0", weight: 100}
  - {version: "10.0", weight: 100}
  - version: "2.0"
    matches:
    - headers: {gray: {exact: "1"}}
    - queryParams: {debug: {exact: "true"}}
  - version: "1.1"
    matches:
    - headers: {x-user: {regex: "tester-[0-9]+"}, x-team: {prefix: "qa"}}
"#;

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn table(text: &str) -> packlight_model::ir::RouteTable {
    let (model, _) = load(&[(Some("route.yaml"), text)], "demo");
    assert!(!model.has_errors(), "{:?}", model.diagnostics);
    model.mesh.services[&ServiceKey::new("demo", "httpbin")]
        .route
        .clone()
        .unwrap()
}

fn weights(pairs: &[(&str, u32)]) -> Vec<WeightedVersion> {
    pairs
        .iter()
        .map(|(s, w)| WeightedVersion {
            version: v(s),
            weight: *w,
        })
        .collect()
}

#[test]
fn the_table() {
    let t = table(ROUTE);
    let major1 = Decision::Weighted {
        major: 1,
        weights: weights(&[("1.0", 80), ("1.1", 20)]),
    };
    let major2 = Decision::Weighted {
        major: 2,
        weights: weights(&[("2.0", 100)]),
    };
    let major10 = Decision::Weighted {
        major: 10,
        weights: weights(&[("10.0", 100)]),
    };
    let pinned = |s: &str, rule| Decision::Pinned {
        version: v(s),
        rule,
    };
    let cases: Vec<(RequestSample, Decision)> = vec![
        // Unprefixed paths go to the default major (the lowest: 1).
        (RequestSample::get("/"), major1.clone()),
        (RequestSample::get("/status/200"), major1.clone()),
        (RequestSample::get("/v1"), major1.clone()),
        (RequestSample::get("/v1/get"), major1.clone()),
        (RequestSample::get("/v2"), major2.clone()),
        (RequestSample::get("/v2/anything?x=1"), major2.clone()),
        // Segment-aware: /v10 is major 10, /v1x and /v20 are no major.
        (RequestSample::get("/v10/x"), major10.clone()),
        (RequestSample::get("/v10"), major10),
        (RequestSample::get("/v1x"), major1.clone()),
        (RequestSample::get("/v20/x"), major1.clone()),
        (RequestSample::get("/api/v2"), major1.clone()),
        // Match rules first, whole service: they cross majors.
        (
            RequestSample::get("/v1/get").header("gray", "1"),
            pinned("2.0", 0),
        ),
        (
            RequestSample::get("/v10/x").header("Gray", "1"),
            pinned("2.0", 0),
        ),
        (RequestSample::get("/v1/get?debug=true"), pinned("2.0", 0)),
        (
            RequestSample::get("/v2/get")
                .header("x-user", "tester-7")
                .header("x-team", "qa-east"),
            pinned("1.1", 1),
        ),
        // Conditions AND inside one item; regex is a full match.
        (
            RequestSample::get("/").header("x-user", "tester-7"),
            major1.clone(),
        ),
        (
            RequestSample::get("/")
                .header("x-user", "tester-7x")
                .header("x-team", "qa"),
            major1.clone(),
        ),
        (RequestSample::get("/").header("gray", "2"), major1.clone()),
        (RequestSample::get("/?debug=yes"), major1.clone()),
        (
            RequestSample::get("/?debug=true&debug=false"),
            pinned("2.0", 0),
        ),
        // Host majors do not exist here: Host is ignored in the mesh.
        (RequestSample::get("/").host("v2.example.com"), major1),
    ];
    for (req, want) in cases {
        assert_eq!(t.decide(&req, Vantage::Mesh), want, "{req:?}");
    }
}

#[test]
fn default_major_and_custom_addresses() {
    let t = table(
        r#"
apiVersion: packlight.dev/v1alpha1
kind: Route
metadata: {name: httpbin, namespace: demo}
spec:
  service: httpbin
  defaultMajor: "2"
  majors:
    "1": {pathPrefix: /legacy}
    "3": {host: v3.example.com}
  rules:
  - {version: "1.0"}
  - {version: "2.0", weight: 50}
  - {version: "2.1", weight: 50}
  - {version: "3.0", weight: 100}
"#,
    );
    let major = |m: u32| match t.decide(
        &RequestSample::get(match m {
            1 => "/legacy/x",
            _ => "/",
        }),
        Vantage::Mesh,
    ) {
        Decision::Weighted { major, .. } => major,
        d => panic!("{d:?}"),
    };
    assert_eq!(major(1), 1);
    assert_eq!(major(2), 2);
    // /v1 is no longer major 1's address: it goes to the default major.
    let d = t.decide(&RequestSample::get("/v1/x"), Vantage::Mesh);
    assert!(matches!(d, Decision::Weighted { major: 2, .. }), "{d:?}");
    // /legacyx is not under /legacy.
    let d = t.decide(&RequestSample::get("/legacyx"), Vantage::Mesh);
    assert!(matches!(d, Decision::Weighted { major: 2, .. }), "{d:?}");
    // Host majors apply at the ingress only, with or without a port.
    let ing = Vantage::Ingress { prefix: "/httpbin" };
    for host in ["v3.example.com", "V3.example.com:8080"] {
        let d = t.decide(&RequestSample::get("/httpbin/x").host(host), ing);
        assert_eq!(d.single(), Some(&v("3.0")), "{host}");
    }
    let d = t.decide(
        &RequestSample::get("/httpbin/x").host("v3.example.com"),
        Vantage::Mesh,
    );
    assert!(matches!(d, Decision::Weighted { major: 2, .. }), "{d:?}");
    // At the ingress, path majors sit under the ingress prefix.
    let d = t.decide(&RequestSample::get("/httpbin/legacy/get"), ing);
    assert_eq!(d.single(), Some(&v("1.0")));
    let d = t.decide(&RequestSample::get("/legacy/get"), ing);
    assert!(matches!(d, Decision::Weighted { major: 2, .. }), "{d:?}");
}

#[test]
fn split_text_is_what_printer_columns_show() {
    assert_eq!(table(ROUTE).split(), "1.0=80,1.1=20,2.0=100,10.0=100");
}
