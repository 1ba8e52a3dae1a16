//! What the Istio traffic tests share: packlight's CRDs installed on the
//! bench, and this package's `packlight operator` as a child process.

use std::path::Path;

use packlight_testenv::TestEnv;

pub const PACKLIGHT: &str = env!("CARGO_BIN_EXE_packlight");

/// This package's `packlight operator` under its own ServiceAccount and
/// ClusterRole (`deploy/rbac.yaml`), for one namespace or (`None`) all of
/// them; killed on drop.
pub async fn operator(
    env: &TestEnv,
    namespace: Option<&str>,
) -> anyhow::Result<packlight_testenv::Operator> {
    let kubeconfig = packlight_testenv::operator_kubeconfig(env).await?;
    Ok(packlight_testenv::Operator::start(
        Path::new(PACKLIGHT),
        &kubeconfig,
        namespace,
    ))
}

/// Applies packlight's CRDs and waits until each is Established.
pub async fn install_crds(env: &TestEnv) {
    let client = env.client().expect("client");
    packlight_testenv::install_crds(&client, &packlight_api::crds())
        .await
        .expect("packlight's CRDs");
}
