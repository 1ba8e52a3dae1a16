//! Claims about the test bench, checked against it. One file, so one bench
//! serves every test here (each integration-test file is its own binary and
//! would start its own).

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch,
    PatchParams, PostParams,
};
use kube::{Api, Client};
use serde_json::json;

/// Polls `check` every 200 ms until it returns true, failing after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    loop {
        let last = check().await;
        if matches!(last, Ok(true)) {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?} (last check: {last:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn status_code<T>(result: &Result<T, kube::Error>) -> Option<u16> {
    match result {
        Err(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}

/// The API server's message of a refused request ("" when it succeeded).
fn message<T>(result: &Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => status.message.clone(),
        _ => String::new(),
    }
}

fn config_map(name: &str, owner: Option<&ConfigMap>) -> anyhow::Result<ConfigMap> {
    let owner_references = match owner {
        Some(o) => Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: o.metadata.name.clone().context("owner name")?,
            uid: o.metadata.uid.clone().context("owner uid")?,
            ..OwnerReference::default()
        }]),
        None => None,
    };
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references,
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    })
}

fn virtual_service_api(client: Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
    Api::namespaced_with(
        client,
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "virtualservices"),
    )
}

fn virtual_service(weight: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "httpbin"},
        "spec": {
            "hosts": ["httpbin"],
            "http": [{"route": [
                {"destination": {"host": "httpbin", "subset": "v1-0"}, "weight": weight},
                {"destination": {"host": "httpbin", "subset": "v1-1"}, "weight": 20},
            ]}],
        },
    })
}

#[tokio::test]
async fn serves_with_istio_and_gateway_api_crds_established() -> anyhow::Result<()> {
    let env = packlight_testenv::env().await?;
    let client = env.client()?;
    let version = client.apiserver_version().await?;
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "37"),
        "{version:?}"
    );

    let crds = Api::<CustomResourceDefinition>::all(client);
    for name in [
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
        "gateways.networking.istio.io",
        "sidecars.networking.istio.io",
        "envoyfilters.networking.istio.io",
        "serviceentries.networking.istio.io",
        "authorizationpolicies.security.istio.io",
        "peerauthentications.security.istio.io",
        "requestauthentications.security.istio.io",
        "gatewayclasses.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "httproutes.gateway.networking.k8s.io",
        "grpcroutes.gateway.networking.k8s.io",
        "referencegrants.gateway.networking.k8s.io",
    ] {
        let crd = crds
            .get(name)
            .await
            .with_context(|| format!("CRD {name}"))?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is not Established");
    }
    Ok(())
}

#[tokio::test]
async fn istio_schemas_are_enforced() -> anyhow::Result<()> {
    let ns = packlight_testenv::namespace("istio-schema").await?;
    let vs = virtual_service_api(ns.client(), ns.name());
    let params = PatchParams::apply("packlight-test")
        .dry_run()
        .validation_strict();

    let valid = vs
        .patch(
            "httpbin",
            &params,
            &Patch::Apply(virtual_service(json!(80))),
        )
        .await;
    assert!(
        valid.is_ok(),
        "a valid VirtualService was refused: {valid:?}"
    );

    // A plain create is checked against the CRD's OpenAPI schema: 422.
    let wrong: DynamicObject = serde_json::from_value(virtual_service(json!("eighty")))?;
    let dry_create = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let created = vs.create(&dry_create, &wrong).await;
    assert_eq!(
        status_code(&created),
        Some(422),
        "weight \"eighty\" accepted: {created:?}"
    );
    assert!(
        message(&created).contains("spec.http[0].route[0].weight"),
        "{created:?}"
    );

    // Server-side apply fails earlier, building the typed object from the
    // same schema (the API server answers 500 there, upstream behaviour).
    let applied = vs
        .patch(
            "httpbin",
            &params,
            &Patch::Apply(virtual_service(json!("eighty"))),
        )
        .await;
    assert!(
        message(&applied).contains(".spec.http[0].route[0].weight"),
        "{applied:?}"
    );

    let mut unknown = virtual_service(json!(80));
    unknown["spec"]["http"][0]["weightz"] = json!(1);
    let unknown = vs.patch("httpbin", &params, &Patch::Apply(unknown)).await;
    assert!(
        message(&unknown).contains("weightz"),
        "unknown field accepted: {unknown:?}"
    );

    // Nothing was stored by the dry runs.
    assert_eq!(status_code(&vs.get("httpbin").await), Some(404));
    ns.delete().await
}

#[tokio::test]
async fn rbac_limits_a_service_account_token() -> anyhow::Result<()> {
    let ns = packlight_testenv::namespace("rbac").await?;
    let other = packlight_testenv::namespace("rbac-other").await?;
    let pp = PostParams::default();

    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    ns.api::<ServiceAccount>().create(&pp, &sa).await?;
    let role = Role {
        metadata: ObjectMeta {
            name: Some("configmap-reader".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..PolicyRule::default()
        }]),
    };
    ns.api::<Role>().create(&pp, &role).await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "configmap-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(ns.name().into()),
            ..Subject::default()
        }]),
    };
    ns.api::<RoleBinding>().create(&pp, &binding).await?;

    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = ns
        .api::<ServiceAccount>()
        .create_token_request("reader", &pp, &request)
        .await?
        .status
        .and_then(|s| s.token)
        .context("TokenRequest without a token")?;
    let reader = ns.env().client_with_token(&token)?;

    // RBAC reads its objects through informers: allow it a moment.
    let configmaps = Api::<ConfigMap>::namespaced(reader.clone(), ns.name());
    eventually(
        "the reader may list configmaps",
        Duration::from_secs(10),
        || async { Ok(configmaps.list(&ListParams::default()).await.is_ok()) },
    )
    .await?;

    let create = configmaps
        .create(&pp, &config_map("forbidden", None)?)
        .await;
    assert_eq!(
        status_code(&create),
        Some(403),
        "create configmap: {create:?}"
    );
    let secrets = Api::<Secret>::namespaced(reader.clone(), ns.name())
        .list(&ListParams::default())
        .await;
    assert_eq!(
        status_code(&secrets),
        Some(403),
        "list secrets: {secrets:?}"
    );
    let pods = Api::<Pod>::namespaced(reader.clone(), other.name())
        .list(&ListParams::default())
        .await;
    assert_eq!(
        status_code(&pods),
        Some(403),
        "list pods elsewhere: {pods:?}"
    );
    let elsewhere = Api::<ConfigMap>::namespaced(reader, other.name())
        .list(&ListParams::default())
        .await;
    assert_eq!(
        status_code(&elsewhere),
        Some(403),
        "list configmaps elsewhere: {elsewhere:?}"
    );

    other.delete().await?;
    ns.delete().await
}

#[tokio::test]
async fn garbage_collector_deletes_dependents() -> anyhow::Result<()> {
    let ns = packlight_testenv::namespace("gc").await?;
    let cms = ns.api::<ConfigMap>();
    let pp = PostParams::default();
    let owner = cms.create(&pp, &config_map("owner", None)?).await?;
    cms.create(&pp, &config_map("dependent", Some(&owner))?)
        .await?;

    cms.delete("owner", &DeleteParams::background()).await?;
    eventually(
        "the dependent is garbage-collected",
        Duration::from_secs(30),
        || async { Ok(status_code(&cms.get("dependent").await) == Some(404)) },
    )
    .await?;
    ns.delete().await
}

#[tokio::test]
async fn namespace_deletion_completes() -> anyhow::Result<()> {
    let ns = packlight_testenv::namespace("ns-delete").await?;
    let name = ns.name().to_owned();
    let client = ns.client();
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &config_map("content", None)?)
        .await?;
    // A custom resource too: the namespace controller must find it by discovery.
    virtual_service_api(client.clone(), &name)
        .patch(
            "httpbin",
            &PatchParams::apply("packlight-test"),
            &Patch::Apply(virtual_service(json!(80))),
        )
        .await?;
    ns.delete().await?;

    let namespaces = Api::<Namespace>::all(client);
    eventually("the namespace is gone", Duration::from_secs(60), || async {
        match namespaces.get(&name).await {
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(true),
            Ok(n) => {
                ensure!(
                    n.metadata.deletion_timestamp.is_some(),
                    "namespace not being deleted"
                );
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    })
    .await
}
