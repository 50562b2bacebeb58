package callout

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Helpers for the JSON-like values of kong.ctx.shared (map[string]any,
// []any, string, numbers, bool).

func listValue(vs []string) any {
	if len(vs) == 1 {
		return vs[0]
	}
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = v
	}
	return out
}

func stringList(v any) []string {
	switch t := v.(type) {
	case string:
		return []string{t}
	case []string:
		return t
	case []any:
		var out []string
		for _, e := range t {
			out = append(out, stringList(e)...)
		}
		return out
	case nil:
		return nil
	case bool:
		if t {
			return []string{"true"}
		}
		return []string{"false"}
	case float64:
		return []string{strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%f", t), "0"), ".")}
	default:
		return []string{fmt.Sprint(t)}
	}
}

func delFold(m map[string]any, name string) {
	for k := range m {
		if strings.EqualFold(k, name) {
			delete(m, k)
		}
	}
}

func mapGet(m map[string]any, keys ...string) any {
	var cur any = m
	for _, k := range keys {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}

func truthy(v any) bool { b, _ := v.(bool); return b }

func msValue(v any) time.Duration {
	switch t := v.(type) {
	case int:
		return time.Duration(t) * time.Millisecond
	case int64:
		return time.Duration(t) * time.Millisecond
	case float64:
		return time.Duration(t * float64(time.Millisecond))
	}
	return 0
}

// decodeObject decodes a JSON object body; nil/"" gives nil.
func decodeObject(body any) (map[string]any, error) {
	switch b := body.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return b, nil
	case string:
		if strings.TrimSpace(b) == "" {
			return nil, nil
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(b), &m); err != nil {
			return nil, fmt.Errorf("body is not a JSON object: %w", err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("unexpected body type %T", body)
}
