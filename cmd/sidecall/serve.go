package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/flows/lua"
)

type serveFlags struct {
	config      string
	grpcListen  string
	adminListen string
	logLevel    string
	logFormat   string
	maxRecv     int
	maxBody     int
	drain       time.Duration
	drainDelay  time.Duration
	pprof       bool
	adminConfig bool
	luaMode     string
	luaTimeout  time.Duration
	unsupported string
	envoy       envoyTimeouts
}

func (f *serveFlags) register(fs interface {
	StringVar(*string, string, string, string)
	IntVar(*int, string, int, string)
	DurationVar(*time.Duration, string, time.Duration, string)
	BoolVar(*bool, string, bool, string)
}) {
	fs.StringVar(&f.config, "c", "", "config file (alias of --config)")
	fs.StringVar(&f.config, "config", "", "config file (SIDECALL_CONFIG)")
	fs.StringVar(&f.grpcListen, "grpc-listen", "127.0.0.1:9000", "ext_proc gRPC address, host:port or unix:///path.sock")
	fs.StringVar(&f.adminListen, "admin-listen", "127.0.0.1:9901", "admin HTTP address (/healthz /readyz /metrics /config)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn, error")
	fs.StringVar(&f.logFormat, "log-format", "json", "json or console")
	fs.IntVar(&f.maxRecv, "max-recv-msg-size", 8<<20, "largest gRPC message accepted from Envoy, bytes")
	fs.IntVar(&f.maxBody, "max-body-size", defaultMaxBodySize, maxBodySizeUsage)
	fs.DurationVar(&f.drain, "drain-timeout", 20*time.Second, "how long SIGTERM waits for open streams")
	fs.BoolVar(&f.pprof, "admin-pprof", false, "serve Go profiles on the admin listener at /debug/pprof/ (keep the admin port private)")
	fs.BoolVar(&f.adminConfig, "admin-config", true, adminConfigUsage)
	fs.DurationVar(&f.drainDelay, "drain-delay", 0, "after SIGTERM, keep accepting new streams this long while health reports NOT_SERVING and /readyz 503 (Envoy still draining its own connections)")
	fs.StringVar(&f.luaMode, "untrusted-lua", "sandbox", untrustedLuaUsage)
	fs.StringVar(&f.unsupported, "unsupported-plugins", "error", unsupportedPluginsUsage)
	fs.DurationVar(&f.luaTimeout, "lua-timeout", lua.DefaultTimeout, luaTimeoutUsage)
	f.envoy.register(fs)
}

func newLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("--log-format: want json or console, got %q", format)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), lvl)), nil
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("serve", stderr)
	var f serveFlags
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return flagsExit(err, stdout)
	}
	if f.config == "" {
		fmt.Fprintln(stderr, "sidecall serve: -c FILE is required")
		return 2
	}
	if err := flows.CheckUntrustedLua(f.luaMode); err != nil {
		fmt.Fprintln(stderr, "sidecall serve: --untrusted-lua:", err)
		return 2
	}
	if err := checkLuaTimeout(f.luaTimeout); err != nil {
		fmt.Fprintln(stderr, "sidecall serve: --lua-timeout:", err)
		return 2
	}
	if err := flows.CheckUnsupportedPlugins(f.unsupported); err != nil {
		fmt.Fprintln(stderr, "sidecall serve: --unsupported-plugins:", err)
		return 2
	}
	if err := checkMaxBodySize(f.maxBody); err != nil {
		fmt.Fprintln(stderr, "sidecall serve: --max-body-size:", err)
		return 2
	}
	if flag, err := f.envoy.check(); err != nil {
		fmt.Fprintf(stderr, "sidecall serve: %s: %v\n", flag, err)
		return 2
	}
	log, err := newLogger(f.logLevel, f.logFormat, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "sidecall serve:", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	tp, err := startTracing(log)
	if err != nil {
		fmt.Fprintln(stderr, "sidecall serve: tracing:", err)
		return 2
	}
	if tp != nil {
		// Deferred before the app's close: spans of draining streams are
		// flushed too.
		defer stopTracing(tp, log)
	}
	a, err := newApp(appOptions{config: f.config, log: log, maxRecv: f.maxRecv, maxBody: f.maxBody, luaMode: f.luaMode, unsupported: f.unsupported, pprof: f.pprof, luaTimeout: f.luaTimeout, hideConfig: !f.adminConfig,
		selfAddrs: []string{f.grpcListen, f.adminListen}, envoy: f.envoy, tracer: tracerOrNil(tp)})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer a.close()
	gl, err := listenGRPC(f.grpcListen)
	if err != nil {
		fmt.Fprintf(stderr, "sidecall serve: --grpc-listen: %v\n", err)
		return 1
	}
	al, err := net.Listen("tcp", f.adminListen)
	if err != nil {
		gl.Close()
		fmt.Fprintf(stderr, "sidecall serve: --admin-listen: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-hup:
				a.reload("SIGHUP")
			case <-ctx.Done():
				return
			}
		}
	}()
	if err := a.watch(ctx); err != nil {
		log.Warn("config file watch unavailable; SIGHUP still reloads", zap.Error(err))
	}
	errc := make(chan error, 2)
	go func() { errc <- a.grpc.Serve(gl) }()
	admin := &http.Server{Handler: a.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { errc <- admin.Serve(al) }()
	log.Info("sidecall serving", zap.String("grpc", gl.Addr().String()), zap.String("admin", al.Addr().String()),
		zap.String("config", f.config), zap.String("version", version), zap.Stringer("lua_timeout", a.plugins.Lua.Sandbox.Options().Timeout))
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("server stopped", zap.Error(err))
			return 1
		}
	}
	a.drain(f.drainDelay, f.drain)
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = admin.Shutdown(sctx)
	log.Info("sidecall stopped")
	return 0
}
