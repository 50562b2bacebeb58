package deploy

import (
	"errors"
	"fmt"
	"regexp"
	"slices"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"

	"github.com/sidecall/sidecall/processor"

	// Types that appear inside Any in what we ship; Any resolution needs them registered.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
)

const (
	extProcFilter = "envoy.filters.http.ext_proc"
	routerFilter  = "envoy.filters.http.router"
	hcmFilter     = "envoy.filters.network.http_connection_manager"
	h2Options     = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// istioServiceCluster is Istio's generated name for a Service's outbound cluster.
var istioServiceCluster = regexp.MustCompile(`^outbound\|[0-9]+\|\|[a-z0-9]([a-z0-9.-]*[a-z0-9])?\.svc\.cluster\.local$`)

type allValidator interface{ ValidateAll() error }

// deepValidate runs ValidateAll on m and on every message inside it, unpacking each Any
// (ValidateAll alone stops at an Any and never looks inside typed_config).
func deepValidate(m proto.Message, at string) error {
	var errs []error
	if v, ok := m.(allValidator); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
		}
	}
	if a, ok := m.(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: unpacking %s: %w", at, a.GetTypeUrl(), err)
		}
		return deepValidate(inner, at+"<"+string(inner.ProtoReflect().Descriptor().FullName())+">")
	}
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := at + "." + string(fd.Name())
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					if err := deepValidate(mv.Message().Interface(), fmt.Sprintf("%s[%s]", name, k.String())); err != nil {
						errs = append(errs, err)
					}
					return true
				})
			}
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				for i := 0; i < v.List().Len(); i++ {
					if err := deepValidate(v.List().Get(i).Message().Interface(), fmt.Sprintf("%s[%d]", name, i)); err != nil {
						errs = append(errs, err)
					}
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			if err := deepValidate(v.Message().Interface(), name); err != nil {
				errs = append(errs, err)
			}
		}
		return true
	})
	return errors.Join(errs...)
}

// structTo decodes an EnvoyFilter patch value into the Envoy type it patches. protojson
// rejects unknown fields and resolves "@type" against the registered types.
func structTo(v *structpb.Struct, m proto.Message) error {
	b, err := protojson.Marshal(v)
	if err != nil {
		return err
	}
	return protojson.Unmarshal(b, m)
}

// checkExtProc checks what ValidateAll cannot: the settings sidecall needs.
func checkExtProc(ep *extprocv3.ExternalProcessor, at string) (cluster string, errs []error) {
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(at+": "+f, a...)) }
	if !ep.GetAllowModeOverride() {
		bad("allow_mode_override must be true: sidecall asks for bodies per route with mode_override")
	}
	if !slices.Contains(ep.GetRequestAttributes(), "xds.route_name") {
		bad("request_attributes must include xds.route_name (sidecall picks the route by it)")
	}
	pm := ep.GetProcessingMode()
	if pm.GetRequestHeaderMode() != extprocv3.ProcessingMode_SEND {
		bad("processing_mode.request_header_mode must be SEND, got %v", pm.GetRequestHeaderMode())
	}
	if ep.GetMessageTimeout() == nil {
		bad("message_timeout must be set: Envoy's 200 ms default is too short for callouts")
	}
	if m := ep.GetMaxMessageTimeout().AsDuration(); m < processor.DefaultEnvoyMaxMessageTimeout {
		bad("max_message_timeout %v: must be at least %v (sidecall's --envoy-max-message-timeout default), or Envoy ignores "+
			"the override_message_timeout sidecall sends before slow callouts and answers its own 504", m, processor.DefaultEnvoyMaxMessageTimeout)
	}
	cluster = ep.GetGrpcService().GetEnvoyGrpc().GetClusterName()
	if cluster == "" {
		bad("grpc_service.envoy_grpc.cluster_name is required")
	}
	return cluster, errs
}

// checkHTTP2 checks that a cluster speaks HTTP/2, which gRPC needs.
func checkHTTP2(c *clusterv3.Cluster, at string) error {
	if c.GetHttp2ProtocolOptions() != nil { //nolint:staticcheck // deprecated form still works
		return nil
	}
	a, ok := c.GetTypedExtensionProtocolOptions()[h2Options]
	if !ok {
		return fmt.Errorf("%s: cluster %q has no %s: ext_proc needs HTTP/2", at, c.GetName(), h2Options)
	}
	var o upstreamhttpv3.HttpProtocolOptions
	if err := a.UnmarshalTo(&o); err != nil {
		return fmt.Errorf("%s: %w", at, err)
	}
	if o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		return fmt.Errorf("%s: cluster %q must set explicit_http_config.http2_protocol_options", at, c.GetName())
	}
	return nil
}

// checkPerRoute unpacks and validates a route's typed_per_filter_config for ext_proc.
func checkPerRoute(tpfc map[string]*anypb.Any, at string) []error {
	var errs []error
	for name, a := range tpfc {
		if err := deepValidate(a, at+".typed_per_filter_config["+name+"]"); err != nil {
			errs = append(errs, err)
			continue
		}
		if name != extProcFilter {
			continue
		}
		var pr extprocv3.ExtProcPerRoute
		if err := a.UnmarshalTo(&pr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s must be an ExtProcPerRoute: %w", at, name, err))
		}
	}
	return errs
}

// decodeEnvoyFilter decodes an EnvoyFilter's spec (JSON) strictly with istio.io/api.
func decodeEnvoyFilter(spec []byte) (*networking.EnvoyFilter, error) {
	var ef networking.EnvoyFilter
	if err := protojson.Unmarshal(spec, &ef); err != nil {
		return nil, fmt.Errorf("EnvoyFilter spec: %w", err)
	}
	return &ef, nil
}

// validateEnvoyFilter checks every patch of an EnvoyFilter against the Envoy type it patches.
func validateEnvoyFilter(ef *networking.EnvoyFilter, at string) error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(at+": "+f, a...)) }
	if len(ef.GetWorkloadSelector().GetLabels()) == 0 && len(ef.GetTargetRefs()) == 0 {
		bad("workloadSelector.labels is empty: the filter would patch every proxy in the namespace")
	}
	if len(ef.GetConfigPatches()) == 0 {
		bad("no configPatches")
	}
	added := map[string]bool{}
	var wanted []string
	for i, p := range ef.GetConfigPatches() {
		pat := fmt.Sprintf("%s: configPatches[%d]", at, i)
		ctx := p.GetMatch().GetContext()
		if ctx != networking.EnvoyFilter_SIDECAR_INBOUND && ctx != networking.EnvoyFilter_GATEWAY {
			errs = append(errs, fmt.Errorf("%s: context must be SIDECAR_INBOUND or GATEWAY, got %v", pat, ctx))
		}
		switch p.GetApplyTo() {
		case networking.EnvoyFilter_HTTP_FILTER:
			if p.GetPatch().GetOperation() != networking.EnvoyFilter_Patch_INSERT_BEFORE {
				errs = append(errs, fmt.Errorf("%s: HTTP_FILTER must be INSERT_BEFORE the router, got %v", pat, p.GetPatch().GetOperation()))
			}
			f := p.GetMatch().GetListener().GetFilterChain().GetFilter()
			if f.GetName() != hcmFilter || f.GetSubFilter().GetName() != routerFilter {
				errs = append(errs, fmt.Errorf("%s: must match %s / subFilter %s, got %q / %q", pat, hcmFilter, routerFilter, f.GetName(), f.GetSubFilter().GetName()))
			}
			var hf hcmv3.HttpFilter
			if err := structTo(p.GetPatch().GetValue(), &hf); err != nil {
				errs = append(errs, fmt.Errorf("%s: value is not an HttpFilter: %w", pat, err))
				continue
			}
			if err := deepValidate(&hf, pat+".value"); err != nil {
				errs = append(errs, err)
			}
			if hf.GetName() != extProcFilter {
				errs = append(errs, fmt.Errorf("%s: filter name must be %s, got %q", pat, extProcFilter, hf.GetName()))
			}
			var ep extprocv3.ExternalProcessor
			if err := hf.GetTypedConfig().UnmarshalTo(&ep); err != nil {
				errs = append(errs, fmt.Errorf("%s: typed_config must be an ExternalProcessor: %w", pat, err))
				continue
			}
			c, e := checkExtProc(&ep, pat)
			errs = append(errs, e...)
			wanted = append(wanted, c)
		case networking.EnvoyFilter_CLUSTER:
			if p.GetPatch().GetOperation() != networking.EnvoyFilter_Patch_ADD {
				errs = append(errs, fmt.Errorf("%s: CLUSTER patch must be ADD, got %v", pat, p.GetPatch().GetOperation()))
			}
			var c clusterv3.Cluster
			if err := structTo(p.GetPatch().GetValue(), &c); err != nil {
				errs = append(errs, fmt.Errorf("%s: value is not a Cluster: %w", pat, err))
				continue
			}
			if err := deepValidate(&c, pat+".value"); err != nil {
				errs = append(errs, err)
			}
			if err := checkHTTP2(&c, pat); err != nil {
				errs = append(errs, err)
			}
			added[c.GetName()] = true
		case networking.EnvoyFilter_HTTP_ROUTE:
			if p.GetPatch().GetOperation() != networking.EnvoyFilter_Patch_MERGE {
				errs = append(errs, fmt.Errorf("%s: HTTP_ROUTE patch must be MERGE, got %v", pat, p.GetPatch().GetOperation()))
			}
			if p.GetMatch().GetRouteConfiguration().GetVhost().GetRoute().GetName() == "" {
				errs = append(errs, fmt.Errorf("%s: HTTP_ROUTE must match a route by name", pat))
			}
			// A MERGE value is a partial Route (no match/action), so Route.ValidateAll would
			// fail on purpose-omitted fields: validate what it sets.
			var r routev3.Route
			if err := structTo(p.GetPatch().GetValue(), &r); err != nil {
				errs = append(errs, fmt.Errorf("%s: value is not a Route: %w", pat, err))
				continue
			}
			if len(r.GetTypedPerFilterConfig()) == 0 {
				errs = append(errs, fmt.Errorf("%s: HTTP_ROUTE MERGE sets no typed_per_filter_config", pat))
			}
			errs = append(errs, checkPerRoute(r.GetTypedPerFilterConfig(), pat+".value")...)
		default:
			errs = append(errs, fmt.Errorf("%s: unexpected applyTo %v", pat, p.GetApplyTo()))
		}
	}
	for _, c := range wanted {
		if c != "" && !added[c] && !istioServiceCluster.MatchString(c) {
			bad("ext_proc cluster %q is neither ADDed by this filter nor an Istio outbound|PORT||SVC.NS.svc.cluster.local cluster", c)
		}
	}
	return errors.Join(errs...)
}

// validateBootstrap checks an Envoy bootstrap that fronts sidecall: deep validation, then
// what ValidateAll misses (ext_proc before the router, its cluster exists and speaks HTTP/2,
// allow_mode_override, xds.route_name).
func validateBootstrap(data []byte) error {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return err
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(j, &b); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	var errs []error
	if err := deepValidate(&b, "bootstrap"); err != nil {
		errs = append(errs, err)
	}
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}
	found := false
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, nf := range fc.GetFilters() {
				if nf.GetName() != hcmFilter {
					continue
				}
				var hcm hcmv3.HttpConnectionManager
				if err := nf.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
					errs = append(errs, err)
					continue
				}
				at := "listener " + l.GetName()
				ep, router := -1, -1
				for i, hf := range hcm.GetHttpFilters() {
					switch hf.GetName() {
					case extProcFilter:
						ep = i
						found = true
						var cfg extprocv3.ExternalProcessor
						if err := hf.GetTypedConfig().UnmarshalTo(&cfg); err != nil {
							errs = append(errs, fmt.Errorf("%s: %w", at, err))
							continue
						}
						c, e := checkExtProc(&cfg, at)
						errs = append(errs, e...)
						if cl, ok := clusters[c]; !ok {
							errs = append(errs, fmt.Errorf("%s: ext_proc cluster %q is not defined", at, c))
						} else if err := checkHTTP2(cl, at); err != nil {
							errs = append(errs, err)
						}
					case routerFilter:
						router = i
					}
				}
				if router != len(hcm.GetHttpFilters())-1 {
					errs = append(errs, fmt.Errorf("%s: %s must be the last HTTP filter", at, routerFilter))
				}
				if ep >= 0 && ep > router {
					errs = append(errs, fmt.Errorf("%s: ext_proc must come before the router", at))
				}
				for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
					for _, r := range vh.GetRoutes() {
						errs = append(errs, checkPerRoute(r.GetTypedPerFilterConfig(), at+" route "+r.GetName())...)
					}
				}
			}
		}
	}
	if !found {
		errs = append(errs, errors.New("bootstrap: no ext_proc filter in any listener"))
	}
	return errors.Join(errs...)
}
