package callout

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"sort"
	"strconv"

	"github.com/sidecall/sidecall/flows"
)

// sortedQuery is raw with its pairs sorted by name, or raw itself when it
// is empty or has pairs a parse would drop.
func sortedQuery(raw string) string {
	if raw == "" {
		return ""
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return raw
	}
	return q.Encode()
}

// cacheKey is the callout's cache key, or caching.cache_key when by_lua set it.
// The digest is SHA-256 over "<len>:<part>|" for each part: route, plugin,
// callout name, method, URL without query, query sorted by name, each
// header (sorted by name, values joined by ","; the default User-Agent and
// trace headers excluded), body (JSON bodies are encoded with sorted keys).
func (p *Plugin) cacheKey(x *flows.Exchange, name string, s *sendReq, entry map[string]any) string {
	if k, ok := mapGet(entry, "caching", "cache_key").(string); ok && k != "" {
		return k
	}
	route := p.scope.Route
	if x.Route != nil {
		route = x.Route.Name
	}
	// Heap buffers, not stack arrays: see prepare.
	b := make([]byte, 0, 128+len(s.body)+64*len(s.headers)+len(s.u.Path)+len(s.u.RawQuery))
	b = keyPart(b, route)
	b = keyPart(b, p.scope.PluginID)
	b = keyPart(b, name)
	b = keyPart(b, s.method)
	u := *s.u
	u.RawQuery = ""
	b = keyPart(b, u.String())
	if s.canonQuery {
		b = keyPart(b, s.u.RawQuery) // already sorted and encoded
	} else {
		b = keyPart(b, sortedQuery(s.u.RawQuery)) // from the URL or a by_lua string
	}
	ks := make([]string, 0, len(s.headers))
	for k := range s.headers {
		if k != "User-Agent" && k != "Traceparent" && k != "Tracestate" {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	for _, k := range ks {
		b = keyPart(b, k)
		vs := s.headers[k]
		n := len(vs) - 1
		for _, v := range vs {
			n += len(v)
		}
		if n < 0 {
			n = 0
		}
		b = strconv.AppendInt(b, int64(n), 10)
		b = append(b, ':')
		for i, v := range vs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, v...)
		}
		b = append(b, '|')
	}
	b = keyPart(b, s.body)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func keyPart[T string | []byte](b []byte, s T) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	b = append(b, s...)
	return append(b, '|')
}
