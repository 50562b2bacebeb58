package main

import (
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/plugins"
	"github.com/sidecall/sidecall/processor"
)

// inProcess loads cfg with every plugin into a sidecall processor serving
// gRPC on 127.0.0.1 in this process, and returns a client connection to it
// and the function that stops it all (the sections measure this process's
// CPU, processor and load client together).
func inProcess(cfg string) (*grpc.ClientConn, func(), error) {
	return inProcessWith(cfg, prometheus.NewRegistry())
}

// inProcessWith is inProcess with the plugins' metrics in reg.
func inProcessWith(cfg string, reg *prometheus.Registry) (*grpc.ClientConn, func(), error) {
	var undo []func()
	stop := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	dir, err := os.MkdirTemp("", "sidecall-bench")
	if err != nil {
		return nil, nil, err
	}
	undo = append(undo, func() { os.RemoveAll(dir) })
	res := flows.NewResources()
	undo = append(undo, func() { res.Close() })
	set := plugins.New(plugins.Options{Metrics: reg, Version: "bench"})
	undo = append(undo, set.Close)
	snap, err := flows.Load(filepath.Join(dir, "kong.yml"), []byte(cfg), flows.LoadOptions{Registry: set.Registry, Resources: res, Lua: set.Lua})
	if err != nil {
		stop()
		return nil, nil, err
	}
	holder := &processor.Holder{}
	holder.Swap(snap)
	undo = append(undo, func() {
		if s := holder.Current(); s != nil {
			s.Close()
		}
	})
	g := processor.New(processor.Options{Holder: holder}).GRPCServer()
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		stop()
		return nil, nil, err
	}
	go func() { _ = g.Serve(gl) }()
	undo = append(undo, g.Stop)
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		stop()
		return nil, nil, err
	}
	undo = append(undo, func() { conn.Close() })
	return conn, stop, nil
}

// counter sums the samples of a counter in reg whose labels include want.
func counter(reg *prometheus.Registry, name string, want map[string]string) float64 {
	mfs, _ := reg.Gather()
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
