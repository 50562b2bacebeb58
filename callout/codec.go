package callout

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"unicode/utf8"
	"unsafe"
)

// Cached responses (kong.ctx.shared.callouts.<name>.response after
// response.by_lua) are stored in a compact binary form: decoding JSON on
// every hit cost more than the rest of the plugin.
//
// A stored value is either
//   - codecBinary followed by one encoded value (the response table), or
//   - a JSON object (first byte '{'): the fallback for values the binary
//     form does not cover exactly, and the format of older sidecalls.
//
// Any other first byte, or a malformed value, is a miss. Older sidecalls
// sharing a Redis fail to decode a binary value as JSON, which they also
// treat as a miss.
//
// A hit must give the same Go values as the JSON round trip it replaces:
// every number decodes as float64, nil maps and slices as nil, other
// strings unchanged. Values JSON would change or reject (invalid UTF-8,
// NaN, float32, json.Number, other Go types, very deep nesting) make the
// whole response use the JSON fallback.
const codecBinary byte = 0x01

const (
	tagNil byte = iota
	tagFalse
	tagTrue
	tagNumber // 8 bytes, IEEE 754 big endian
	tagString // uvarint length, bytes
	tagArray  // uvarint count, values
	tagObject // uvarint count, (uvarint key length, key, value)...
)

// maxCodecDepth bounds the binary encoder's recursion; deeper (or cyclic)
// values go through encoding/json, which reports cycles.
const maxCodecDepth = 100

// encodeResponse returns the cache value for resp; false when resp cannot
// be stored (encoding/json rejects it).
func encodeResponse(resp map[string]any) ([]byte, bool) {
	buf := make([]byte, 1, 256)
	buf[0] = codecBinary
	if buf, ok := appendValue(buf, resp, 0); ok {
		return buf, true
	}
	enc, err := json.Marshal(resp)
	if err != nil {
		return nil, false
	}
	return enc, true
}

func appendString(buf []byte, s string) ([]byte, bool) {
	if !utf8.ValidString(s) {
		return buf, false // JSON replaces invalid bytes with U+FFFD
	}
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...), true
}

func appendNumber(buf []byte, f float64) ([]byte, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return buf, false
	}
	buf = append(buf, tagNumber)
	return binary.BigEndian.AppendUint64(buf, math.Float64bits(f)), true
}

func appendValue(buf []byte, v any, depth int) ([]byte, bool) {
	if depth > maxCodecDepth {
		return buf, false
	}
	switch t := v.(type) {
	case nil:
		return append(buf, tagNil), true
	case bool:
		if t {
			return append(buf, tagTrue), true
		}
		return append(buf, tagFalse), true
	case string:
		return appendString(append(buf, tagString), t)
	case float64:
		return appendNumber(buf, t)
	case int:
		return appendNumber(buf, float64(t))
	case int64:
		return appendNumber(buf, float64(t))
	case int32:
		return appendNumber(buf, float64(t))
	case uint64:
		return appendNumber(buf, float64(t))
	case uint32:
		return appendNumber(buf, float64(t))
	case []any:
		if t == nil {
			return append(buf, tagNil), true
		}
		buf = append(buf, tagArray)
		buf = binary.AppendUvarint(buf, uint64(len(t)))
		for _, e := range t {
			var ok bool
			if buf, ok = appendValue(buf, e, depth+1); !ok {
				return buf, false
			}
		}
		return buf, true
	case map[string]any:
		if t == nil {
			return append(buf, tagNil), true
		}
		buf = append(buf, tagObject)
		buf = binary.AppendUvarint(buf, uint64(len(t)))
		for k, e := range t {
			var ok bool
			if buf, ok = appendString(buf, k); !ok {
				return buf, false
			}
			if buf, ok = appendValue(buf, e, depth+1); !ok {
				return buf, false
			}
		}
		return buf, true
	}
	return buf, false
}

// decodeResponse decodes a cache value; false is a miss. It takes
// ownership of v: decoded strings share its memory, so the caller must
// not modify v afterwards (the caches return a fresh copy on every Get).
func decodeResponse(v []byte) (map[string]any, bool) {
	if len(v) == 0 {
		return nil, false
	}
	switch v[0] {
	case '{':
		var m map[string]any
		if json.Unmarshal(v, &m) != nil || m == nil {
			return nil, false
		}
		return m, true
	case codecBinary:
		d := decoder{s: unsafe.String(&v[0], len(v)), i: 1}
		if d.i >= len(d.s) || d.s[d.i] != tagObject {
			return nil, false
		}
		out, ok := d.value(0)
		if !ok || d.i != len(d.s) {
			return nil, false
		}
		m, _ := out.(map[string]any)
		return m, m != nil
	}
	return nil, false
}

type decoder struct {
	s string
	i int
}

func (d *decoder) uvarint() (int, bool) {
	var x uint64
	var shift uint
	for n := 0; n < binary.MaxVarintLen64; n++ {
		if d.i >= len(d.s) {
			return 0, false
		}
		b := d.s[d.i]
		d.i++
		if b < 0x80 {
			x |= uint64(b) << shift
			// A count or length never exceeds the bytes left.
			if x > uint64(len(d.s)-d.i) {
				return 0, false
			}
			return int(x), true
		}
		x |= uint64(b&0x7f) << shift
		shift += 7
	}
	return 0, false
}

func (d *decoder) str() (string, bool) {
	n, ok := d.uvarint()
	if !ok {
		return "", false
	}
	s := d.s[d.i : d.i+n]
	d.i += n
	return s, true
}

func (d *decoder) value(depth int) (any, bool) {
	if d.i >= len(d.s) || depth > maxCodecDepth {
		return nil, false
	}
	tag := d.s[d.i]
	d.i++
	switch tag {
	case tagNil:
		return nil, true
	case tagFalse:
		return false, true
	case tagTrue:
		return true, true
	case tagNumber:
		if len(d.s)-d.i < 8 {
			return nil, false
		}
		var u uint64
		for k := 0; k < 8; k++ {
			u = u<<8 | uint64(d.s[d.i+k])
		}
		d.i += 8
		return math.Float64frombits(u), true
	case tagString:
		return d.str()
	case tagArray:
		n, ok := d.uvarint()
		if !ok {
			return nil, false
		}
		out := make([]any, n)
		for k := range out {
			if out[k], ok = d.value(depth + 1); !ok {
				return nil, false
			}
		}
		return out, true
	case tagObject:
		n, ok := d.uvarint()
		if !ok {
			return nil, false
		}
		out := make(map[string]any, n)
		for ; n > 0; n-- {
			k, ok := d.str()
			if !ok {
				return nil, false
			}
			if out[k], ok = d.value(depth + 1); !ok {
				return nil, false
			}
		}
		return out, true
	}
	return nil, false
}
