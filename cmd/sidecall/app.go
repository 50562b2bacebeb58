package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/flows/lua"
	"github.com/sidecall/sidecall/plugins"
	"github.com/sidecall/sidecall/processor"
)

type appOptions struct {
	config  string
	data    []byte // config bytes instead of reading config (demo)
	log     *zap.Logger
	maxRecv int
	// maxBody is --max-body-size (0: the processor's default).
	maxBody int
	luaMode string // untrusted_lua: sandbox or off
	pprof   bool   // Go profiles on the admin listener
	// hideConfig (--admin-config=false) leaves /config off the admin
	// listener: it answers 404.
	hideConfig bool
	// luaTimeout is the per-call Lua time limit (0: lua.DefaultTimeout).
	luaTimeout time.Duration
	// selfAddrs are this process's listen addresses, which templated
	// callout hosts may never reach.
	selfAddrs []string
	// envoy is --envoy-message-timeout and --envoy-max-message-timeout
	// (zero: the processor's defaults).
	envoy envoyTimeouts
	// tracer traces the streams (nil: tracing off).
	tracer trace.TracerProvider
	// unsupported is --unsupported-plugins: error or warn.
	unsupported string
}

const adminConfigUsage = "serve /config (the effective config, secrets redacted) on the admin listener; false answers 404 there while /healthz, /readyz and /metrics keep working (SIDECALL_ADMIN_CONFIG)"

const untrustedLuaUsage = "Kong's untrusted_lua: sandbox runs config Lua and $(...) in the sandbox; off rejects them at load (SIDECALL_UNTRUSTED_LUA)"

// maxLuaTimeout is the longest --lua-timeout: a Lua call holds its
// request (and a CPU) for that long.
const maxLuaTimeout = 10 * time.Second

const luaTimeoutUsage = "per-call time limit of a Lua chunk or $(...) expression, above 0 and at most 10s (SIDECALL_LUA_TIMEOUT)"

// defaultMaxBodySize and maxMaxBodySize bound --max-body-size: a body is
// held in memory, once per open stream that buffers one.
const (
	defaultMaxBodySize = 8 << 20
	maxMaxBodySize     = 1 << 30
)

const maxBodySizeUsage = "largest request or response body buffered for plugins, per stream across all chunks, bytes, above 0 and at most 1 GiB; over it a request gets 413, a response 502 (SIDECALL_MAX_BODY_SIZE)"

// checkMaxBodySize checks a --max-body-size value.
func checkMaxBodySize(n int) error {
	if n <= 0 || n > maxMaxBodySize {
		return fmt.Errorf("want a size in bytes above 0 and at most %d (1 GiB), got %d", maxMaxBodySize, n)
	}
	return nil
}

// checkLuaTimeout checks a --lua-timeout value.
func checkLuaTimeout(timeout time.Duration) error {
	if timeout <= 0 || timeout > maxLuaTimeout {
		return fmt.Errorf("want a duration above 0 and at most %s, got %s", maxLuaTimeout, timeout)
	}
	return nil
}

// app is one running sidecall: config holder, processor, metrics, reload.
type app struct {
	opts      appOptions
	log       *zap.Logger
	plugins   *plugins.Set
	res       *flows.Resources
	holder    *processor.Holder
	proc      *processor.Server
	grpc      *grpc.Server
	prom      *prometheus.Registry
	reloads   *prometheus.CounterVec
	lastOK    prometheus.Gauge
	draining  atomic.Bool
	reloadMu  sync.Mutex
	closeOnce sync.Once
}

func newApp(o appOptions) (*app, error) {
	if o.log == nil {
		o.log = zap.NewNop()
	}
	a := &app{opts: o, log: o.log, res: flows.NewResources(), holder: &processor.Holder{},
		prom: prometheus.NewRegistry()}
	a.prom.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecall_config_reloads_total",
		Help: "Config loads by result."}, []string{"result"})
	a.lastOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sidecall_config_last_reload_success",
		Help: "1 if the last config load succeeded."})
	a.prom.MustRegister(a.reloads, a.lastOK)
	a.reloads.WithLabelValues("ok")
	a.reloads.WithLabelValues("failed")
	a.plugins = plugins.New(plugins.Options{Metrics: a.prom, Version: version, Lua: lua.Options{Timeout: o.luaTimeout}, SelfAddrs: o.selfAddrs})
	a.prom.MustRegister(a.plugins.DependencyMetrics(a.res))
	snap, err := a.load()
	if err != nil {
		a.res.Close()
		a.plugins.Close()
		return nil, err
	}
	a.holder.Swap(snap)
	a.reloads.WithLabelValues("ok").Inc()
	a.lastOK.Set(1)
	a.proc = processor.New(processor.Options{Holder: a.holder, Log: a.log, Metrics: processor.NewMetrics(a.prom), MaxRecvMsgSize: o.maxRecv, MaxBodySize: o.maxBody,
		EnvoyMessageTimeout: o.envoy.msg, EnvoyMaxMessageTimeout: o.envoy.max, TracerProvider: o.tracer})
	a.grpc = a.proc.GRPCServer()
	return a, nil
}

func (a *app) load() (*flows.Snapshot, error) {
	lo := flows.LoadOptions{Registry: a.plugins.Registry, Resources: a.res, Lua: a.plugins.Lua, Log: a.log, UntrustedLua: a.opts.luaMode,
		UnsupportedPlugins: a.opts.unsupported}
	if a.opts.data != nil {
		return flows.Load(a.opts.config, a.opts.data, lo)
	}
	return flows.LoadFile(a.opts.config, lo)
}

// reload loads the config again; a bad one keeps the last good serving.
func (a *app) reload(why string) bool {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	snap, err := a.load()
	if err != nil {
		a.reloads.WithLabelValues("failed").Inc()
		a.lastOK.Set(0)
		var ce *flows.ConfigError
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				a.log.Error("config reload rejected; the last good config keeps serving", zap.String("trigger", why), zap.String("problem", p.String()))
			}
		} else {
			a.log.Error("config reload rejected; the last good config keeps serving", zap.String("trigger", why), zap.Error(err))
		}
		return false
	}
	a.holder.Swap(snap)
	a.reloads.WithLabelValues("ok").Inc()
	a.lastOK.Set(1)
	a.log.Info("config reloaded", zap.String("trigger", why), zap.Stringer("config", snap))
	return true
}

// watch reloads when the config file changes. It watches the folder, since
// Kubernetes ConfigMaps swap a symlink rather than write the file.
func (a *app) watch(ctx context.Context) error {
	if a.opts.data != nil {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	dir := filepath.Dir(a.opts.config)
	if err := w.Add(dir); err != nil {
		w.Close()
		return err
	}
	go func() {
		defer w.Close()
		var t *time.Timer
		var fire <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				if t != nil {
					t.Stop()
				}
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if filepath.Base(ev.Name) != filepath.Base(a.opts.config) && filepath.Base(ev.Name) != "..data" {
					continue
				}
				// Editors write in several steps: settle before reloading.
				if t == nil {
					t = time.NewTimer(200 * time.Millisecond)
				} else {
					t.Reset(200 * time.Millisecond)
				}
				fire = t.C
			case <-fire:
				fire = nil
				a.reload("file change")
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				a.log.Warn("config watch", zap.Error(err))
			}
		}
	}()
	return nil
}

// readiness is /readyz's answer: the status, why it is not ready, and
// every long-lived client the config holds with its state.
type readiness struct {
	Status       string               `json:"status"` // "ready" or "not ready"
	Reason       string               `json:"reason,omitempty"`
	Dependencies []plugins.Dependency `json:"dependencies"`
}

// readiness is ready unless draining, without a config, or while a
// dependency that gates readiness (the Kafka clients of
// kafka-request-reply) is not ready. kafka-upstream producers and Redis
// caches are listed but never make it unready.
func (a *app) readiness() readiness {
	r := readiness{Status: "ready", Dependencies: a.plugins.Dependencies(a.res)}
	switch {
	case a.draining.Load():
		r.Reason = "draining"
	case a.holder.Current() == nil:
		r.Reason = "no config loaded"
	case !plugins.GatesReady(r.Dependencies):
		r.Reason = "a dependency that gates readiness is not ready"
	}
	if r.Reason != "" {
		r.Status = "not ready"
	}
	return r
}

func (a *app) isReady() bool { return a.readiness().Status == "ready" }

func (a *app) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "application/json")
		fmt.Fprintln(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		r := a.readiness()
		w.Header().Set("content-type", "application/json")
		if r.Status != "ready" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(r)
	})
	// OpenMetrics when asked for: the only format that carries exemplars
	// (trace ids on latency samples, with tracing on).
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.prom, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	if !a.opts.hideConfig { // --admin-config=false: /config is 404
		mux.HandleFunc("GET /config", func(w http.ResponseWriter, _ *http.Request) {
			s := a.holder.Current()
			w.Header().Set("content-type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			enc.SetEscapeHTML(false) // <redacted>, & in URLs: as written
			_ = enc.Encode(map[string]any{"file": s.File, "loaded": s.Loaded.UTC().Format(time.RFC3339), "config": s.Redacted})
		})
	}
	if a.opts.pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// drain stops taking streams, waits for open ones up to grace, then stops.
// drain reports NOT_SERVING, keeps taking new streams for delay (so health
// checkers and Envoy, draining too, see it before the listener closes),
// then waits up to grace for open streams.
func (a *app) drain(delay, grace time.Duration) {
	a.draining.Store(true)
	a.proc.SetServing(false)
	if delay > 0 {
		a.log.Info("draining: still accepting streams", zap.Duration("drain_delay", delay))
		time.Sleep(delay)
	}
	done := make(chan struct{})
	go func() { a.grpc.GracefulStop(); close(done) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		a.log.Warn("drain timeout: closing open streams", zap.Duration("grace", grace))
		a.grpc.Stop()
		<-done
	}
}

func (a *app) close() {
	a.closeOnce.Do(func() {
		if s := a.holder.Current(); s != nil {
			s.Close()
		}
		if err := a.res.Close(); err != nil {
			a.log.Warn("closing clients", zap.Error(err))
		}
		a.plugins.Close()
	})
}

func listenGRPC(addr string) (net.Listener, error) { return processor.Listen(addr) }
