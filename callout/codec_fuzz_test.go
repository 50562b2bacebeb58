package callout

import (
	"reflect"
	"testing"
)

// FuzzCacheValue: a cache value is read back from Redis, which another
// process (or an older sidecall) may have written: decoding any bytes must
// not panic, and whatever decodes must encode and decode to the same value.
func FuzzCacheValue(f *testing.F) {
	for _, resp := range []map[string]any{
		{"status": float64(200), "headers": map[string]any{"content-type": "application/json"}, "body": map[string]any{"token": "t", "n": float64(1), "ok": true, "l": []any{nil, "x"}}},
		{"status": float64(204)},
	} {
		if b, ok := encodeResponse(resp); ok {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"status":200,"body":"x"}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, ok := decodeResponse(append([]byte(nil), data...))
		if !ok {
			return
		}
		// Foreign bytes may hold what sidecall never writes (invalid UTF-8
		// is stored as JSON, which replaces it), so the first round trip
		// may normalise; from then on it must be stable.
		m1, ok := roundTrip(m)
		if !ok {
			return
		}
		m2, ok := roundTrip(m1)
		if !ok || !reflect.DeepEqual(m1, m2) {
			t.Fatalf("round trip not stable: %q -> %q (%v)", m1, m2, ok)
		}
	})
}

func roundTrip(m map[string]any) (map[string]any, bool) {
	b, ok := encodeResponse(m)
	if !ok {
		return nil, false
	}
	return decodeResponse(b)
}
