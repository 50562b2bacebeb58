package transformer

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/sidecall/sidecall/flows/lua"
)

// jsonValue is one JSON value as written (compacted on output).
type jsonValue = json.RawMessage

// object is a JSON object that keeps its key order, so a transformed body
// differs from the original only where the config says.
type object struct {
	keys []string
	vals map[string]jsonValue
}

// parseObject decodes a JSON object; ok is false for anything else
// (invalid JSON, an array, a scalar). A repeated key keeps its first place
// and its last value, as cjson keeps the last.
func parseObject(b []byte) (*object, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	o := &object{vals: map[string]jsonValue{}}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, false
		}
		k, _ := t.(string)
		var v jsonValue
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		o.set(k, v)
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, false
	}
	if _, err := dec.Token(); err == nil {
		return nil, false // trailing data
	}
	return o, true
}

func (o *object) get(k string) (jsonValue, bool) { v, ok := o.vals[k]; return v, ok }

func (o *object) set(k string, v jsonValue) {
	if _, ok := o.vals[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = v
}

func (o *object) del(k string) {
	if _, ok := o.vals[k]; !ok {
		return
	}
	delete(o.vals, k)
	for i, n := range o.keys {
		if n == k {
			o.keys = append(o.keys[:i], o.keys[i+1:]...)
			break
		}
	}
}

// rename moves old's value to new (replacing new's) when old's value is a
// true one in Lua, as Kong's rename helpers do.
func (o *object) rename(old, new string, needTruthy bool) bool {
	if old == new {
		return false
	}
	v, ok := o.get(old)
	if !ok || (needTruthy && !truthy(v, ok)) {
		return false
	}
	o.del(old)
	o.set(new, v)
	return true
}

func (o *object) encode() []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(jsonString(k))
		b.WriteByte(':')
		if err := json.Compact(&b, o.vals[k]); err != nil {
			b.Write(o.vals[k])
		}
	}
	b.WriteByte('}')
	return b.Bytes()
}

// jsonString encodes s without HTML escaping.
func jsonString(s string) jsonValue {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimRight(b.Bytes(), "\n")
}

// appendJSON is Kong's append_value on a decoded JSON value: a string
// becomes a two-element list, a list grows, an object gets the value at
// Lua index 1 (an empty one becomes a list), anything else is replaced by
// a one-element list.
func appendJSON(cur jsonValue, present bool, v jsonValue) jsonValue {
	c := bytes.TrimSpace(cur)
	if present && len(c) > 0 {
		switch c[0] {
		case '"':
			return jsonValue("[" + string(c) + "," + string(v) + "]")
		case '[':
			var l []jsonValue
			if json.Unmarshal(c, &l) == nil {
				var b bytes.Buffer
				b.WriteByte('[')
				for _, e := range append(l, v) {
					if b.Len() > 1 {
						b.WriteByte(',')
					}
					if json.Compact(&b, e) != nil {
						b.Write(e)
					}
				}
				b.WriteByte(']')
				return b.Bytes()
			}
		case '{':
			if o, ok := parseObject(c); ok && len(o.keys) > 0 {
				o.set("1", v)
				return o.encode()
			}
		}
	}
	return jsonValue("[" + string(v) + "]")
}

// kongJSONValue is response-transformer's json_value: the config value
// as cjson would encode it, with \" and \/ turned back (an empty value is
// the text null), then cast by json_types. ok is false when the cast
// gives nil (a number that does not parse): Kong then skips the entry.
func kongJSONValue(value string, empty bool, typ string) (jsonValue, bool) {
	v := "null"
	if !empty {
		v = strings.ReplaceAll(cjsonEscape(value), `\"`, `"`)
	}
	v = strings.ReplaceAll(v, `\/`, `/`)
	switch typ {
	case "number":
		f, ok := luaToNumber(v)
		if !ok {
			return nil, false
		}
		return jsonValue(lua.FormatNumber(f)), true
	case "boolean":
		return jsonValue(strconv.FormatBool(v == "true")), true
	}
	return jsonString(v), true
}

// cjsonEscape is the inside of cjson's encoding of s.
func cjsonEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '/':
			b.WriteString(`\/`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				b.WriteString(`\u00`)
				b.WriteByte("0123456789abcdef"[c>>4])
				b.WriteByte("0123456789abcdef"[c&15])
			} else {
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}

// luaToNumber is Lua's tonumber on a string: decimal or 0x hex, blanks
// around allowed. inf and nan are refused (cjson cannot encode them).
func luaToNumber(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	t := strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	if strings.HasPrefix(t, "0x") || strings.HasPrefix(t, "0X") {
		n, err := strconv.ParseUint(t[2:], 16, 64)
		if err != nil || strings.HasPrefix(s, "+") {
			return 0, false
		}
		f := float64(n)
		if s[0] == '-' {
			f = -f
		}
		return f, true
	}
	for _, c := range t {
		if !(c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
			return 0, false // no inf, nan, underscores
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil
}
