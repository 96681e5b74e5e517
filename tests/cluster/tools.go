//go:build tools

// Package tools pins the Kubernetes commands that tests/cluster/build compiles:
// the control plane the tests run against and the upstream kubelet that Bosun
// is measured against. Nothing here is part of Bosun itself.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
