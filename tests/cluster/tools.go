//go:build tools

// Package tools pins the Kubernetes commands that tests/cluster/build compiles:
// the control plane the tests run against, the upstream kubelet that Bosun is
// measured against, and kubemark's hollow node (the kubelet's code on a fake
// runtime), the yardstick of the scale benchmark, and kubeadm, which joins the
// VM node in its test. Nothing here is part of Bosun
// itself.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubemark"
)
