//go:build tools

// Package tools pins the Istio binaries packlight's tests build from the
// upstream istio.io/istio module: istioctl (validate/analyze), and
// pilot-discovery (istiod) + pilot-agent for the Istio traffic bench
// (scripts/testenv up --istio, docs/testing.md).
package tools

import (
	_ "istio.io/istio/istioctl/cmd/istioctl"
	_ "istio.io/istio/pilot/cmd/pilot-agent"
	_ "istio.io/istio/pilot/cmd/pilot-discovery"
)
