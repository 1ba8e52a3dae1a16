//! What the Istio traffic tests share: packlight's CRDs installed on the
//! bench, and this package's `packlight operator` as a child process.

use std::path::Path;

use packlight_testenv::TestEnv;

pub const PACKLIGHT: &str = env!("CARGO_BIN_EXE_packlight");

/// This package's `packlight operator` with `kubeconfig`, for one
/// namespace or (`None`) all of them; killed on drop.
pub fn operator(kubeconfig: &Path, namespace: Option<&str>) -> packlight_testenv::Operator {
    packlight_testenv::Operator::start(Path::new(PACKLIGHT), kubeconfig, namespace)
}

/// Applies packlight's CRDs and waits until each is Established.
pub async fn install_crds(env: &TestEnv) {
    let client = env.client().expect("client");
    packlight_testenv::install_crds(&client, &packlight_api::crds())
        .await
        .expect("packlight's CRDs");
}
