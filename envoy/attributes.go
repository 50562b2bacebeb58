package envoy

import (
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
)

var headerAttr = regexp.MustCompile(`^(request|response)\.headers\[\s*['"]([^'"]+)['"]\s*\]$`)

// evalAttributes evaluates the configured attribute expressions as Envoy does:
// strings stay strings, integers become numbers, missing values are left
// out. Only plain attribute names and header lookups are understood; any
// other CEL expression evaluates to "missing". Called with mu held.
func (f *filter) evalAttributes(exprs []string) *structpb.Struct {
	if len(exprs) == 0 {
		return nil
	}
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for _, e := range exprs {
		if v := f.evalAttribute(strings.TrimSpace(e)); v != nil {
			s.Fields[e] = v
		}
	}
	return s
}

func (f *filter) evalAttribute(e string) *structpb.Value {
	str := func(v string, ok bool) *structpb.Value {
		if !ok {
			return nil
		}
		return structpb.NewStringValue(v)
	}
	num := func(v int, ok bool) *structpb.Value {
		if !ok {
			return nil
		}
		return structpb.NewNumberValue(float64(v))
	}
	req := f.reqHdr
	if req == nil {
		req = &headerMap{}
	}
	local := localAddr(f.r)
	if m := headerAttr.FindStringSubmatch(e); m != nil {
		hm := req
		if m[1] == "response" {
			if f.respHdr == nil {
				return nil
			}
			hm = f.respHdr
		}
		vs := hm.values(strings.ToLower(m[2]))
		return str(strings.Join(vs, ","), len(vs) > 0)
	}
	switch e {
	case "xds.route_name":
		return str(f.routeName, f.routeName != "")
	case "source.address":
		return str(f.r.RemoteAddr, f.r.RemoteAddr != "")
	case "source.port":
		return num(port(f.r.RemoteAddr))
	case "destination.address":
		return str(local, local != "")
	case "destination.port":
		return num(port(local))
	case "connection.mtls":
		return structpb.NewBoolValue(f.r.TLS != nil && len(f.r.TLS.PeerCertificates) > 0)
	case "request.path":
		return str(req.get(":path"))
	case "request.url_path":
		p, ok := req.get(":path")
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
		return str(p, ok)
	case "request.query":
		p, ok := req.get(":path")
		q := ""
		if i := strings.IndexByte(p, '?'); i >= 0 {
			q = p[i+1:]
		}
		return str(q, ok)
	case "request.method":
		return str(req.get(":method"))
	case "request.host":
		return str(req.get(":authority"))
	case "request.scheme":
		return str(req.get(":scheme"))
	case "request.protocol":
		return str(f.r.Proto, f.r.Proto != "")
	case "request.id":
		return str(req.get("x-request-id"))
	case "request.referer":
		return str(req.get("referer"))
	case "request.useragent":
		return str(req.get("user-agent"))
	case "response.code":
		if f.respHdr == nil {
			return nil
		}
		s, _ := f.respHdr.get(":status")
		n, err := strconv.Atoi(s)
		return num(n, err == nil)
	}
	return nil
}

func localAddr(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && a != nil {
		return a.String()
	}
	return ""
}

func port(addr string) (int, bool) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(p)
	return n, err == nil
}
