package main

import (
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sidecall/sidecall/cmd/sidecall/wire"
	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/processor"
)

// inProcess loads cfg with every plugin into a sidecall processor serving
// gRPC on 127.0.0.1 in this process, and returns a client connection to it
// and the function that stops it all (the sections measure this process's
// CPU, processor and load client together).
func inProcess(cfg string) (*grpc.ClientConn, func(), error) {
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
	snap, err := flows.Load(filepath.Join(dir, "kong.yml"), []byte(cfg), flows.LoadOptions{Registry: wire.Registry(), Resources: res})
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
