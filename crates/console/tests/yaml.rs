//! The YAML editor in a real headless Chromium against a real `packlight
//! up` on the httpbin example (real Envoy): the EgressPolicy of `sleep`,
//! opened from the policies page, edited as text. A duplicate host is the
//! model's diagnostic with its field path and the line and column of the
//! edited text, and applies nothing (the engine's resourceVersion and
//! generation stay); another name is refused; a new host is applied and
//! the engine's API returns it. Screenshots in
//! `target/console-screenshots/yaml-*.png`.
//!
//! Needs what `browser.rs` needs: the `packlight` binary, Envoy and
//! Chromium. It fails, never skips.

// The helpers kubernetes.rs and browser.rs use and this file does not.
#[allow(dead_code)]
mod support;

use fantoccini::{Client, Locator};
use serde_json::Value;
use support::{Up, chromium, click, example, free_port, packlight_up, screenshot, wait_text};

const PAGE: &str = "egresspolicies/demo/sleep-egress";

/// The EgressPolicy as the engine's API has it.
async fn egress(up: &Up) -> Value {
    up.get("egresspolicies", "demo", "sleep-egress").await
}

/// Replaces the textarea's text with `text`, typed.
async fn type_yaml(b: &Client, text: &str) {
    let t = b.find(Locator::Css("#yaml")).await.unwrap();
    t.clear().await.unwrap();
    t.send_keys(text).await.unwrap();
}

async fn textarea(b: &Client) -> String {
    b.find(Locator::Css("#yaml"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap()
}

fn hosts(v: &Value) -> Vec<String> {
    v["spec"]["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn yaml_edit_of_an_egress_policy_diagnoses_in_place_then_applies_in_chromium() {
    let up = packlight_up(example("demo"), free_port());
    let (_console, login, base) = up.console();
    let (_driver, b) = chromium().await;
    b.goto(&login).await.unwrap();

    // From the policies page's YAML link to the editor, checked on load.
    b.goto(&format!("{base}/policies")).await.unwrap();
    click(&b, &format!("a.yaml[data-resource='{PAGE}']")).await;
    wait_text(&b, "#validation", |t| t.contains("valid"), "first check").await;
    assert!(b.current_url().await.unwrap().as_str().ends_with(PAGE));
    let text = textarea(&b).await;
    assert!(
        text.contains("kind: EgressPolicy")
            && text.contains("name: sleep-egress")
            && text.contains("- httpbin.org"),
        "{text}"
    );
    assert!(
        !text.contains("status") && !text.contains("managedFields"),
        "{text}"
    );
    let before = egress(&up).await;

    // A duplicate host, typed on a new last line of the hosts.
    let last = "- 127.0.0.2:18080";
    let at = text.find(last).expect("the example's last host");
    let indent = text[..at].rsplit('\n').next().unwrap().to_string();
    let bad = text.replacen(last, &format!("{last}\n{indent}- httpbin.org"), 1);
    // 1-based: the line after the last host's.
    let line = 2 + bad.lines().position(|l| l.trim() == last).unwrap();
    let column = indent.len() + 3;
    type_yaml(&b, &bad).await;
    click(&b, "#check-button").await;
    let diag = wait_text(
        &b,
        "#diagnostics",
        |t| t.contains("listed twice"),
        "duplicate host",
    )
    .await;
    assert!(diag.contains("spec.hosts[3]"), "{diag}");
    assert!(
        diag.contains(&format!("line {line}, column {column}")),
        "want line {line}, column {column}: {diag}\n{bad}"
    );
    let diff = wait_text(&b, "#diff", |t| t.contains("+"), "diff").await;
    assert!(
        diff.contains("+ ") && diff.contains("httpbin.org"),
        "{diff}"
    );
    click(&b, "#apply").await;
    let result = wait_text(&b, "#results", |t| !t.is_empty(), "refused apply").await;
    assert!(result.contains("not applied (invalid)"), "{result}");
    assert!(result.contains("listed twice"), "{result}");
    screenshot(&b, "yaml-invalid-edit").await;
    let after = egress(&up).await;
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    assert_eq!(
        after["metadata"]["generation"],
        before["metadata"]["generation"]
    );
    assert_eq!(hosts(&after), hosts(&before));

    // Another name: this page edits one resource.
    type_yaml(&b, &text.replace("name: sleep-egress", "name: other")).await;
    click(&b, "#check-button").await;
    let diag = wait_text(
        &b,
        "#diagnostics",
        |t| t.contains("edits EgressPolicy demo/sleep-egress only"),
        "another name",
    )
    .await;
    assert!(diag.contains("demo/other"), "{diag}");

    // A new host: valid, applied, and the engine serves it.
    let good = text.replacen(last, &format!("{last}\n{indent}- api.example.org"), 1);
    type_yaml(&b, &good).await;
    click(&b, "#check-button").await;
    wait_text(
        &b,
        "#validation",
        |t| t.contains("valid") && !t.contains("only"),
        "valid edit",
    )
    .await;
    let diff = wait_text(&b, "#diff", |t| t.contains("api.example.org"), "diff").await;
    assert!(
        diff.contains("+ ") && diff.contains("- api.example.org"),
        "{diff}"
    );
    click(&b, "#apply").await;
    let result = wait_text(&b, "#results", |t| t.contains(": applied"), "apply").await;
    assert!(
        result.contains("applied") && result.contains("configured"),
        "{result}"
    );
    screenshot(&b, "yaml-applied").await;
    let applied = egress(&up).await;
    let mut want = hosts(&before);
    want.push("api.example.org".into());
    assert_eq!(hosts(&applied), want);
    assert_ne!(
        applied["metadata"]["generation"],
        before["metadata"]["generation"]
    );
    b.close().await.unwrap();
}
