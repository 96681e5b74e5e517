//go:build tools

// Package tools pins containerd 2, which tests/cluster/build compiles so the image volume e2e
// test has a runtime that mounts images (CRI Mount.image, containerd 2.1 and later; the
// machine's packaged containerd is 1.6). Nothing here is part of Bosun.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
)
