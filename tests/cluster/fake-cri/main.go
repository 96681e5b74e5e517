// Command fake-cri serves the Kubernetes project's own fake CRI runtime (k8s.io/cri-client/pkg/fake,
// the one kubemark's hollow nodes run in-process) on the unix socket -socket, for the scale tests'
// hollow nodes: each hollow node gets its own runtime. -socket may name several sockets
// (comma-separated): one process then serves a runtime of its own on each, so that many hollow
// nodes do not each pay for a Go process. Sandboxes and containers exist only in memory (a sandbox
// is READY with IP 192.168.192.168 at once, a started container RUNNING until stopped); images are
// pulled by name without a registry, as kubemark's hollow kubelet does with
// --use-host-image-service=false. Built by tests/cluster/build; stops on SIGTERM or SIGINT.
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	fakeremote "k8s.io/cri-client/pkg/fake"
)

func main() {
	sockets := flag.String("socket", "", "path of the unix socket to serve CRI v1 on, or several comma-separated, one runtime each (required)")
	images := flag.String("images", "", "comma-separated image references present from the start")
	imageFs := flag.String("image-fs", "", "mountpoint ImageFsInfo reports as the image filesystem (default: each socket's directory)")
	flag.Parse()
	paths := split(*sockets)
	if len(paths) == 0 {
		log.Fatal("-socket is required")
	}
	present := split(*images)

	var runtimes []*fakeremote.RemoteRuntime
	for _, socket := range paths {
		rt := fakeremote.NewFakeRemoteRuntime()
		if len(present) > 0 {
			rt.ImageService.SetFakeImages(present)
		}
		// The fake reports no image filesystem unless told one; an agent's image GC then fails
		// every 5 minutes (an ImageGCFailed event per node). kubemark's hollow kubelet reads its
		// image filesystem from a fake cAdvisor that reports one, so report one here too.
		mountpoint := *imageFs
		if mountpoint == "" {
			mountpoint = filepath.Dir(socket)
		}
		rt.ImageService.SetFakeFilesystemUsage([]*runtimeapi.FilesystemUsage{{
			Timestamp:  time.Now().UnixNano(),
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: mountpoint},
			UsedBytes:  &runtimeapi.UInt64Value{Value: 0},
			InodesUsed: &runtimeapi.UInt64Value{Value: 0},
		}})
		if err := rt.Start("unix://" + socket); err != nil {
			log.Fatalf("serve on %s: %v", socket, err)
		}
		log.Printf("fake CRI runtime serving on %s", socket)
		runtimes = append(runtimes, rt)
	}

	// The fakes record every call for their unit tests' assertions and never forget one: drop
	// the record now and then so that a long run's memory stays flat.
	go func() {
		for range time.Tick(10 * time.Second) {
			for _, rt := range runtimes {
				rt.RuntimeService.Lock()
				rt.RuntimeService.Called = rt.RuntimeService.Called[:0]
				rt.RuntimeService.Unlock()
				rt.ImageService.Lock()
				rt.ImageService.Called = rt.ImageService.Called[:0]
				rt.ImageService.Unlock()
			}
		}
	}()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	for i, rt := range runtimes {
		rt.Stop()
		_ = os.Remove(paths[i])
	}
}

// split returns the non-empty items of a comma-separated list.
func split(list string) []string {
	var out []string
	for _, s := range strings.Split(list, ",") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
