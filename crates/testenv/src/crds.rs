//! CustomResourceDefinitions a test brings (e.g. packlight's own, from
//! `packlight_api::crds()`), installed into a bench beside the pinned Istio
//! and Gateway API CRDs it starts with.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

/// The field manager of the CRDs [`install_crds`] applies.
const MANAGER: &str = "packlight-testenv";

/// How long a CRD may take to become Established.
const ESTABLISHED: Duration = Duration::from_secs(30);

/// Applies `crds` (server-side, forced) and returns once every one is
/// Established, so their resources can be served; an error (never a
/// skip) when one is refused or not Established within 30 s.
pub async fn install_crds(
    client: &Client,
    crds: &[CustomResourceDefinition],
) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply(MANAGER).force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &pp, &Patch::Apply(crd))
            .await
            .with_context(|| format!("CRD {name}"))?;
    }
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let deadline = Instant::now() + ESTABLISHED;
        loop {
            let last = match api.get(&name).await {
                Ok(got) if established(&got) => break,
                Ok(_) => "not yet".to_string(),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!("CRD {name} Established: not within {ESTABLISHED:?} ({last})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}
