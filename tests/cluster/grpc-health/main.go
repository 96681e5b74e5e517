// Command grpc-health is the tests' gRPC health server: grpc.health.v1.Health on -port,
// answering SERVING for the service "" and each of -services, and NOT_SERVING for them
// while the file -fail-file exists. A service it does not know is NotFound, as grpc-go's
// health server answers it. Built by tests/cluster/build; the probe tests run it in a
// busybox pod from a hostPath.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	port := flag.Int("port", 8081, "TCP port to serve on")
	failFile := flag.String("fail-file", "", "while this file exists the known services answer NOT_SERVING")
	services := flag.String("services", "", "comma-separated service names known besides \"\"")
	flag.Parse()

	known := []string{""}
	for _, s := range strings.Split(*services, ",") {
		if s != "" {
			known = append(known, s)
		}
	}
	lis, err := net.Listen("tcp", fmt.Sprintf(":%d", *port))
	if err != nil {
		log.Fatalf("listen on :%d: %v", *port, err)
	}
	hs := health.NewServer()
	set := func(st healthpb.HealthCheckResponse_ServingStatus) {
		for _, s := range known {
			hs.SetServingStatus(s, st)
		}
	}
	set(healthpb.HealthCheckResponse_SERVING)
	if *failFile != "" {
		go func() {
			last := healthpb.HealthCheckResponse_SERVING
			for range time.Tick(100 * time.Millisecond) {
				st := healthpb.HealthCheckResponse_SERVING
				if _, err := os.Stat(*failFile); err == nil {
					st = healthpb.HealthCheckResponse_NOT_SERVING
				}
				if st != last {
					log.Printf("now %v", st)
					set(st)
					last = st
				}
			}
		}()
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	log.Printf("serving grpc.health.v1.Health on :%d for %q", *port, known)
	if err := srv.Serve(lis); err != nil {
		log.Fatalf("serve: %v", err)
	}
}
