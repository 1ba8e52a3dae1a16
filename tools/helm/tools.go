//go:build tools

// Package tools pins the Helm CLI packlight's tests build from the upstream
// helm.sh/helm/v3 module: `helm lint` and `helm template` of
// deploy/helm/packlight (scripts/build-helm, crates/operator/tests/helm.rs).
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
