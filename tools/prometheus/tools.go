//go:build tools

// Package tools pins the Prometheus server packlight's tests build from the
// upstream github.com/prometheus/prometheus module: the Istio traffic bench's
// Prometheus, scraping the sidecars' Envoys, which the console queries with
// PromQL (scripts/build-prometheus, crates/console/tests/kubernetes_traffic.rs).
// The web UI's assets are not built: only the query API is used.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
)
