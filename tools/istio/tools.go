//go:build tools

// Package tools pins the Istio binaries packlight's tests build from the
// upstream istio.io/istio module: istioctl (validate/analyze).
package tools

import (
	_ "istio.io/istio/istioctl/cmd/istioctl"
)
