package flows

import (
	"strings"
)

// protoSet is a plugin's Kong protocols among those sidecall serves; 0
// means all of them (no protocols field, or all four listed).
type protoSet uint8

const (
	protoHTTP protoSet = 1 << iota
	protoHTTPS
	protoGRPC
	protoGRPCS
	protoNever // only protocols sidecall never serves
	protoAll   = protoHTTP | protoHTTPS | protoGRPC | protoGRPCS
)

var protoNames = map[string]protoSet{"http": protoHTTP, "https": protoHTTPS, "grpc": protoGRPC, "grpcs": protoGRPCS}

// streamProtocols are Kong protocols of its stream (L4) and WebSocket
// routes: a plugin may list them, but sidecall sees no such request.
var streamProtocols = map[string]bool{"tcp": true, "tls": true, "tls_passthrough": true, "udp": true, "ws": true, "wss": true}

// pluginProtocols compiles a plugin's protocols field at path at.
func pluginProtocols(b *Builder, list []string, at Path) protoSet {
	var set protoSet
	var stream []string
	for i, p := range list {
		switch {
		case protoNames[p] != 0:
			set |= protoNames[p]
		case streamProtocols[p]:
			stream = append(stream, p)
		default:
			b.Errorf(at.Index(i), "expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp, ws, wss, got %q", p)
		}
	}
	switch {
	case len(list) > 0 && set == 0 && len(stream) > 0:
		b.Warnf("%s: the plugin never runs: sidecall serves only http, https, grpc and grpcs requests", at)
		return protoNever
	case set == protoAll:
		return 0
	}
	return set
}

// requestProtocol is the request's Kong protocol: grpc(s) when the
// content-type is application/grpc*, else http(s) by the scheme.
func requestProtocol(x *Exchange) protoSet {
	https := strings.EqualFold(x.Request.Scheme, "https")
	if ct := x.Request.Headers.Get("content-type"); len(ct) >= 16 && strings.EqualFold(ct[:16], "application/grpc") {
		if https {
			return protoGRPCS
		}
		return protoGRPC
	}
	if https {
		return protoHTTPS
	}
	return protoHTTP
}

// runsFor tells whether the plugin's protocols include the request's.
func (in *Instance) runsFor(x *Exchange) bool {
	return in.protocols == 0 || in.protocols&requestProtocol(x) != 0
}
