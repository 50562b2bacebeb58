package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sidecall/sidecall/envoy"
	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/flows/lua"
)

// local is an app serving gRPC on a loopback port with the Envoy stand-in
// in front: what try and demo run.
type local struct {
	app   *app
	grpcL net.Listener
	conn  *grpc.ClientConn
	proxy *envoy.Proxy
	http  *http.Server
	httpL net.Listener
}

func startLocal(a *app, upstream, listen string) (*local, error) {
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() { _ = a.grpc.Serve(gl) }()
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		gl.Close()
		return nil, err
	}
	cfg := envoy.Config{Upstream: upstream, Conn: conn}
	envoy.SidecallDefaults(&cfg)
	if m := a.opts.envoy.max; m > cfg.MaxMessageTimeout {
		cfg.MaxMessageTimeout = m // the stand-in takes every override sidecall may send
	}
	p, err := envoy.New(cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	hl, err := net.Listen("tcp", listen)
	if err != nil {
		p.Close()
		conn.Close()
		return nil, fmt.Errorf("--listen: %w", err)
	}
	l := &local{app: a, grpcL: gl, conn: conn, proxy: p, httpL: hl,
		http: &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = l.http.Serve(hl) }()
	return l, nil
}

func (l *local) URL() string { return "http://" + l.httpL.Addr().String() }

func (l *local) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = l.http.Shutdown(ctx)
	l.proxy.Close()
	l.conn.Close()
	l.app.grpc.Stop()
	l.app.close()
}

func cmdTry(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("try", stderr)
	config := fs.String("config", "", "config file (SIDECALL_CONFIG)")
	fs.StringVar(config, "c", "", "config file (alias of --config)")
	upstream := fs.String("upstream", "", "upstream base URL the stand-in forwards to")
	listen := fs.String("listen", "127.0.0.1:8000", "HTTP address to listen on")
	logLevel := fs.String("log-level", "info", "debug, info, warn, error")
	luaMode := fs.String("untrusted-lua", "sandbox", untrustedLuaUsage)
	unsupported := fs.String("unsupported-plugins", "error", unsupportedPluginsUsage)
	luaTimeout := fs.Duration("lua-timeout", lua.DefaultTimeout, luaTimeoutUsage)
	maxBody := fs.Int("max-body-size", defaultMaxBodySize, maxBodySizeUsage)
	var et envoyTimeouts
	et.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return flagsExit(err, stdout)
	}
	if flag, err := et.check(); err != nil {
		fmt.Fprintf(stderr, "sidecall try: %s: %v\n", flag, err)
		return 2
	}
	if *config == "" || *upstream == "" {
		fmt.Fprintln(stderr, "sidecall try: -c FILE and --upstream URL are required")
		return 2
	}
	if err := checkLuaTimeout(*luaTimeout); err != nil {
		fmt.Fprintln(stderr, "sidecall try: --lua-timeout:", err)
		return 2
	}
	if err := flows.CheckUnsupportedPlugins(*unsupported); err != nil {
		fmt.Fprintln(stderr, "sidecall try: --unsupported-plugins:", err)
		return 2
	}
	if err := checkMaxBodySize(*maxBody); err != nil {
		fmt.Fprintln(stderr, "sidecall try: --max-body-size:", err)
		return 2
	}
	log, err := newLogger(*logLevel, "console", stderr)
	if err != nil {
		fmt.Fprintln(stderr, "sidecall try:", err)
		return 2
	}
	tp, err := startTracing(log)
	if err != nil {
		fmt.Fprintln(stderr, "sidecall try: tracing:", err)
		return 2
	}
	if tp != nil {
		defer stopTracing(tp, log)
	}
	a, err := newApp(appOptions{config: *config, log: log, luaMode: *luaMode, unsupported: *unsupported, luaTimeout: *luaTimeout, maxBody: *maxBody,
		selfAddrs: []string{*listen}, envoy: et, tracer: tracerOrNil(tp)})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// Signals are caught before the port answers: a Ctrl-C right after
	// start stops try cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	l, err := startLocal(a, *upstream, *listen)
	if err != nil {
		a.close()
		fmt.Fprintln(stderr, "sidecall try:", err)
		return 1
	}
	defer l.close()
	_ = a.watch(ctx)
	fmt.Fprintf(stdout, "sidecall try: Envoy stand-in on %s -> %s (not a production proxy; Ctrl-C stops)\n", l.URL(), *upstream)
	log.Info("try running", zap.String("listen", l.URL()), zap.Stringer("lua_timeout", a.plugins.Lua.Sandbox.Options().Timeout))
	<-ctx.Done()
	return 0
}
