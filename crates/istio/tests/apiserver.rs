//! Every rendered object, applied to a real API server with Istio's own
//! CRDs (`packlight-testenv`) by server-side apply with
//! `fieldValidation=Strict` and `dryRun=All`: the Kubernetes and Istio
//! schemas accept it, with no unknown or misplaced field. Objects are moved
//! into the test's namespace (a dry run persists nothing, so the same name
//! in several inputs does not clash). A negative case proves the check
//! can fail.

mod common;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use packlight_istio::{RenderOptions, render};
use serde_json::Value;

fn plural(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Deployment" => "deployments",
        "Service" => "services",
        "ServiceAccount" => "serviceaccounts",
        "NetworkPolicy" => "networkpolicies",
        "VirtualService" => "virtualservices",
        "DestinationRule" => "destinationrules",
        "ServiceEntry" => "serviceentries",
        "Sidecar" => "sidecars",
        "Gateway" => "gateways",
        "EnvoyFilter" => "envoyfilters",
        "PeerAuthentication" => "peerauthentications",
        "AuthorizationPolicy" => "authorizationpolicies",
        _ => return None,
    })
}

async fn dry_run_apply(client: &kube::Client, ns: &str, obj: &Value) -> anyhow::Result<()> {
    let mut obj = obj.clone();
    obj["metadata"]["namespace"] = ns.into();
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let plural = plural(kind).ok_or_else(|| anyhow::anyhow!("no plural known for {kind}"))?;
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let params = PatchParams::apply("packlight")
        .dry_run()
        .validation_strict();
    api.patch(&name, &params, &Patch::Apply(&obj)).await?;
    Ok(())
}

#[tokio::test]
async fn every_rendered_object_is_accepted_by_the_api_server() -> anyhow::Result<()> {
    let ns = packlight_testenv::namespace("istio-render").await?;
    let client = ns.client();
    let mut failures = Vec::new();
    let mut applied = 0;
    for (name, path) in common::inputs() {
        let model = common::load(&path);
        for obj in render(&model.mesh, &RenderOptions::default()) {
            applied += 1;
            if let Err(e) = dry_run_apply(&client, ns.name(), &obj).await {
                failures.push(format!(
                    "{name}: {} {}: {e}",
                    obj["kind"], obj["metadata"]["name"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(applied > 100, "only {applied} objects applied");
    ns.delete().await
}

#[tokio::test]
async fn the_api_server_rejects_a_misplaced_field() -> anyhow::Result<()> {
    let ns = packlight_testenv::namespace("istio-render-bad").await?;
    let client = ns.client();
    let model = common::load(&common::root().join("examples/route-weights.yaml"));
    let objs = render(&model.mesh, &RenderOptions::default());
    let mut dr = objs
        .iter()
        .find(|o| o["kind"] == "DestinationRule")
        .cloned()
        .expect("a DestinationRule");
    // `weight` belongs to a VirtualService destination, not a subset.
    dr["spec"]["subsets"][0]["weight"] = 80.into();
    let err = dry_run_apply(&client, ns.name(), &dr)
        .await
        .expect_err("a misplaced field was accepted")
        .to_string();
    assert!(err.contains("weight"), "{err}");
    ns.delete().await
}
