//go:build tools

// Package tools pins metrics-server, which tests/cluster/build compiles so the
// e2e tests can check that it scrapes bosun. Nothing here is part of Bosun.
package tools

import (
	_ "sigs.k8s.io/metrics-server/cmd/metrics-server"
)
