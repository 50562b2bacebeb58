package envoy

import (
	"errors"
	"fmt"
	"os"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// Types that appear inside an Any must be linked to be resolvable.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

const (
	extProcFilter = "envoy.filters.http.ext_proc"
	routerFilter  = "envoy.filters.http.router"
	httpOptsKey   = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// ValidateBootstrapFile reads and validates an Envoy bootstrap YAML file.
func ValidateBootstrapFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading bootstrap: %w", err)
	}
	if err := ValidateBootstrap(b); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// ValidateBootstrap loads a YAML bootstrap the way Envoy does (strict
// protojson), runs protoc-gen-validate on it and on every Any inside it
// (PGV does not look into Any), then the ext_proc checks Envoy makes at
// load time. All problems are returned, joined.
func ValidateBootstrap(yamlBytes []byte) error {
	js, err := yaml.YAMLToJSON(yamlBytes)
	if err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	bs := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, bs); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(bs.ValidateAll())
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range bs.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
		for k, a := range c.GetTypedExtensionProtocolOptions() {
			_, err := unpackValidate(a)
			add(wrap(err, "cluster %q typed_extension_protocol_options[%q]", c.GetName(), k))
		}
	}
	for _, l := range bs.GetStaticResources().GetListeners() {
		for ci, fc := range l.GetFilterChains() {
			for fi, nf := range fc.GetFilters() {
				at := fmt.Sprintf("listener %q filter_chains[%d].filters[%d] (%s)", l.GetName(), ci, fi, nf.GetName())
				m, err := unpackValidate(nf.GetTypedConfig())
				if err != nil {
					add(wrap(err, "%s typed_config", at))
					continue
				}
				if hcm, ok := m.(*hcmv3.HttpConnectionManager); ok {
					for _, err := range checkHCM(hcm, clusters) {
						add(wrap(err, "%s", at))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

func wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), err)
}

// unpackValidate unpacks an Any and runs ValidateAll on its content.
func unpackValidate(a *anypb.Any) (proto.Message, error) {
	if a == nil {
		return nil, errors.New("typed_config is missing")
	}
	m, err := anypb.UnmarshalNew(a, proto.UnmarshalOptions{})
	if err != nil {
		return nil, fmt.Errorf("unpacking %s: %w", a.GetTypeUrl(), err)
	}
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return m, err
		}
	}
	return m, nil
}

// checkHCM validates the HTTP filters and per-route configs, and the ext_proc
// semantic rules: ext_proc before the router, router last, exactly one of
// grpc_service/http_service, an HTTP/2 processor cluster.
func checkHCM(hcm *hcmv3.HttpConnectionManager, clusters map[string]*clusterv3.Cluster) []error {
	var errs []error
	filters := hcm.GetHttpFilters()
	routerAt, extProcAt := -1, -1
	for i, hf := range filters {
		at := fmt.Sprintf("http_filters[%d] (%s)", i, hf.GetName())
		m, err := unpackValidate(hf.GetTypedConfig())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s typed_config: %w", at, err))
			continue
		}
		switch cfg := m.(type) {
		case *extprocfilterv3.ExternalProcessor:
			if extProcAt < 0 {
				extProcAt = i
			}
			for _, err := range checkExtProc(cfg, clusters) {
				errs = append(errs, fmt.Errorf("%s: %w", at, err))
			}
		default:
			if hf.GetName() == routerFilter || hf.GetTypedConfig().GetTypeUrl() == "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" {
				routerAt = i
			}
		}
	}
	switch {
	case routerAt < 0:
		errs = append(errs, errors.New("http_filters: no envoy.filters.http.router"))
	case routerAt != len(filters)-1:
		errs = append(errs, fmt.Errorf("http_filters[%d]: the router must be the last HTTP filter", routerAt))
	}
	if extProcAt >= 0 && routerAt >= 0 && extProcAt > routerAt {
		errs = append(errs, fmt.Errorf("http_filters[%d]: ext_proc must come before the router", extProcAt))
	}
	checkPerFilter := func(at string, m map[string]*anypb.Any) {
		for k, a := range m {
			if _, err := unpackValidate(a); err != nil {
				errs = append(errs, fmt.Errorf("%s typed_per_filter_config[%q]: %w", at, k, err))
			}
		}
	}
	rc := hcm.GetRouteConfig()
	checkPerFilter("route_config", rc.GetTypedPerFilterConfig())
	for _, vh := range rc.GetVirtualHosts() {
		checkPerFilter(fmt.Sprintf("virtual_host %q", vh.GetName()), vh.GetTypedPerFilterConfig())
		for i, r := range vh.GetRoutes() {
			checkPerFilter(routeAt(vh, i, r), r.GetTypedPerFilterConfig())
		}
	}
	return errs
}

func routeAt(vh *routev3.VirtualHost, i int, r *routev3.Route) string {
	return fmt.Sprintf("virtual_host %q routes[%d] (%s)", vh.GetName(), i, r.GetName())
}

// checkExtProc is the part of Envoy's ext_proc config.cc that PGV misses.
func checkExtProc(cfg *extprocfilterv3.ExternalProcessor, clusters map[string]*clusterv3.Cluster) []error {
	var errs []error
	hasGRPC, hasHTTP := cfg.GetGrpcService() != nil, cfg.GetHttpService() != nil
	if hasGRPC == hasHTTP {
		errs = append(errs, errors.New("exactly one of grpc_service and http_service must be set"))
	}
	pm := cfg.GetProcessingMode()
	fd := extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED
	if pm.GetRequestBodyMode() == fd && pm.GetRequestTrailerMode() != extprocfilterv3.ProcessingMode_SEND ||
		pm.GetResponseBodyMode() == fd && pm.GetResponseTrailerMode() != extprocfilterv3.ProcessingMode_SEND {
		errs = append(errs, errors.New("FULL_DUPLEX_STREAMED needs the matching trailer mode SEND"))
	}
	if hasHTTP && (pm.GetRequestBodyMode() != extprocfilterv3.ProcessingMode_NONE || pm.GetResponseBodyMode() != extprocfilterv3.ProcessingMode_NONE ||
		pm.GetRequestTrailerMode() == extprocfilterv3.ProcessingMode_SEND || pm.GetResponseTrailerMode() == extprocfilterv3.ProcessingMode_SEND) {
		errs = append(errs, errors.New("http_service supports header modes only"))
	}
	if cfg.GetDisableClearRouteCache() && cfg.GetRouteCacheAction() != extprocfilterv3.ExternalProcessor_DEFAULT {
		errs = append(errs, errors.New("disable_clear_route_cache conflicts with route_cache_action"))
	}
	if name := cfg.GetGrpcService().GetEnvoyGrpc().GetClusterName(); name != "" {
		c, ok := clusters[name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("grpc_service cluster %q is not defined", name))
		case !isHTTP2(c):
			errs = append(errs, fmt.Errorf("grpc_service cluster %q must speak HTTP/2 (typed_extension_protocol_options %s explicit_http_config.http2_protocol_options)", name, httpOptsKey))
		}
	}
	return errs
}

func isHTTP2(c *clusterv3.Cluster) bool {
	if c.GetHttp2ProtocolOptions() != nil { //nolint:staticcheck // the deprecated field still works in Envoy
		return true
	}
	a, ok := c.GetTypedExtensionProtocolOptions()[httpOptsKey]
	if !ok {
		return false
	}
	opts := &httpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(opts); err != nil {
		return false
	}
	return opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}
