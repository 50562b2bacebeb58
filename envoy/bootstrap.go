package envoy

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"
)

//go:embed sidecar.yaml
var sidecarYAML []byte

// SidecarBootstrap turns envoy/sidecar.yaml into the bootstrap of a real
// Envoy that stands where this stand-in would: listening on 127.0.0.1:listen
// (admin on 127.0.0.1:admin), routing to upstream (a base URL) through the
// processor at processor (host:port), with the ext_proc filter configured
// as c says. It returns the bootstrap as JSON (which Envoy reads as YAML),
// and the names of c's fields that a bootstrap cannot carry (the Route hook,
// a Transport, MetadataContext, GracefulClose): a test that sets them
// cannot run against a real Envoy.
func SidecarBootstrap(c Config, listen, admin int, processor, upstream string) ([]byte, []string, error) {
	var unsupported []string
	if c.Route != nil {
		unsupported = append(unsupported, "Route")
	}
	if c.Transport != nil {
		unsupported = append(unsupported, "Transport")
	}
	if c.MetadataContext != nil {
		unsupported = append(unsupported, "MetadataContext")
	}
	if c.GracefulClose {
		unsupported = append(unsupported, "GracefulClose")
	}
	js, err := yaml.YAMLToJSON(sidecarYAML)
	if err != nil {
		return nil, nil, err
	}
	bs := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, bs); err != nil {
		return nil, nil, err
	}
	bs.Admin.Address = sockAddr("127.0.0.1", admin)
	res := bs.GetStaticResources()
	if len(res.GetListeners()) != 1 || len(res.GetListeners()[0].GetFilterChains()) != 1 {
		return nil, nil, errors.New("sidecar.yaml: want one listener with one filter chain")
	}
	l := res.Listeners[0]
	l.Address = sockAddr("127.0.0.1", listen)
	if c.BufferLimit > 0 {
		l.PerConnectionBufferLimitBytes = wrapperspb.UInt32(uint32(c.BufferLimit))
	}
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: %w", err)
	}
	for _, cl := range res.GetClusters() {
		addr := u.Host
		if cl.GetName() == "sidecall" {
			addr = processor
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, nil, fmt.Errorf("cluster %s: %w", cl.GetName(), err)
		}
		p, _ := strconv.Atoi(port)
		cl.LoadAssignment.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(host, p)}}}}}}
	}

	fc := l.FilterChains[0].Filters[0]
	hcm := &hcmv3.HttpConnectionManager{}
	if err := fc.GetTypedConfig().UnmarshalTo(hcm); err != nil {
		return nil, nil, err
	}
	// The stand-in gives routes no name unless its Route hook does.
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			r.Name = ""
		}
	}
	if c.MaxHeaderCount > 0 {
		hcm.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxHeadersCount: wrapperspb.UInt32(uint32(c.MaxHeaderCount))}
	}
	if c.MaxHeadersKB > 0 {
		hcm.MaxRequestHeadersKb = wrapperspb.UInt32(uint32(c.MaxHeadersKB))
	}
	if c.StreamIdleTimeout > 0 {
		hcm.StreamIdleTimeout = durationpb.New(c.StreamIdleTimeout)
	}
	for _, hf := range hcm.GetHttpFilters() {
		if hf.GetName() != extProcFilter {
			continue
		}
		ep := &extprocfilterv3.ExternalProcessor{}
		if err := hf.GetTypedConfig().UnmarshalTo(ep); err != nil {
			return nil, nil, err
		}
		applyConfig(ep, c)
		a, err := anypb.New(ep)
		if err != nil {
			return nil, nil, err
		}
		hf.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}
	}
	a, err := anypb.New(hcm)
	if err != nil {
		return nil, nil, err
	}
	fc.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	out, err := protojson.MarshalOptions{Indent: "  "}.Marshal(bs)
	if err != nil {
		return nil, nil, err
	}
	return out, unsupported, nil
}

// applyConfig sets the ext_proc fields c carries.
func applyConfig(ep *extprocfilterv3.ExternalProcessor, c Config) {
	ep.ProcessingMode = c.ProcessingMode
	ep.MessageTimeout, ep.MaxMessageTimeout = nil, nil
	if c.MessageTimeout > 0 {
		ep.MessageTimeout = durationpb.New(c.MessageTimeout)
	}
	if c.MaxMessageTimeout > 0 {
		ep.MaxMessageTimeout = durationpb.New(c.MaxMessageTimeout)
	}
	ep.FailureModeAllow = c.FailureModeAllow
	ep.AllowModeOverride = c.AllowModeOverride
	ep.AllowedOverrideModes = c.AllowedOverrideModes
	ep.RequestAttributes = c.RequestAttributes
	ep.ResponseAttributes = c.ResponseAttributes
	ep.DisableImmediateResponse = c.DisableImmediateResponse
	ep.MutationRules = c.MutationRules
	ep.SendBodyWithoutWaitingForHeaderResponse = c.SendBodyWithoutWaiting
	ep.RouteCacheAction = c.RouteCacheAction
	ep.DisableClearRouteCache = c.DisableClearRouteCache
	if c.StatusOnError != 0 {
		ep.StatusOnError = &typev3.HttpStatus{Code: typev3.StatusCode(c.StatusOnError)}
	}
	if c.ForwardingNamespaces != nil || c.ReceivingNamespaces != nil {
		ep.MetadataOptions = &extprocfilterv3.MetadataOptions{
			ForwardingNamespaces: &extprocfilterv3.MetadataOptions_MetadataNamespaces{Untyped: c.ForwardingNamespaces},
			ReceivingNamespaces:  &extprocfilterv3.MetadataOptions_MetadataNamespaces{Untyped: c.ReceivingNamespaces},
		}
	}
	gs := ep.GetGrpcService()
	for k, v := range c.InitialMetadata {
		gs.InitialMetadata = append(gs.InitialMetadata, &corev3.HeaderValue{Key: k, Value: v})
	}
	if c.Authority != "" {
		gs.GetEnvoyGrpc().Authority = c.Authority
	}
}

func sockAddr(host string, port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}
}
