package envoy

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// headerMap is Envoy's ordered header map: lower-case keys, pseudo headers
// first, a key may repeat.
type headerMap struct{ h []hdr }

type hdr struct{ k, v string }

func (m *headerMap) get(k string) (string, bool) {
	for _, e := range m.h {
		if e.k == k {
			return e.v, true
		}
	}
	return "", false
}

func (m *headerMap) values(k string) []string {
	var out []string
	for _, e := range m.h {
		if e.k == k {
			out = append(out, e.v)
		}
	}
	return out
}

func (m *headerMap) has(k string) bool { _, ok := m.get(k); return ok }

// set replaces the first entry of k (dropping the others) or appends one,
// like Envoy's setCopy.
func (m *headerMap) set(k, v string) {
	out := m.h[:0]
	found := false
	for _, e := range m.h {
		if e.k == k {
			if found {
				continue
			}
			found = true
			e.v = v
		}
		out = append(out, e)
	}
	m.h = out
	if !found {
		m.add(k, v)
	}
}

// add appends an entry; pseudo headers are kept in front.
func (m *headerMap) add(k, v string) {
	if strings.HasPrefix(k, ":") {
		i := 0
		for i < len(m.h) && strings.HasPrefix(m.h[i].k, ":") {
			i++
		}
		m.h = append(m.h, hdr{})
		copy(m.h[i+1:], m.h[i:])
		m.h[i] = hdr{k, v}
		return
	}
	m.h = append(m.h, hdr{k, v})
}

func (m *headerMap) del(k string) {
	out := m.h[:0]
	for _, e := range m.h {
		if e.k != k {
			out = append(out, e)
		}
	}
	m.h = out
}

func (m *headerMap) byteSize() int {
	n := 0
	for _, e := range m.h {
		n += len(e.k) + len(e.v)
	}
	return n
}

func (m *headerMap) clone() *headerMap {
	return &headerMap{h: append([]hdr(nil), m.h...)}
}

// proto encodes the map as Envoy does: key plus raw_value, value empty.
func (m *headerMap) proto() *corev3.HeaderMap {
	out := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, len(m.h))}
	for _, e := range m.h {
		out.Headers = append(out.Headers, &corev3.HeaderValue{Key: e.k, RawValue: []byte(e.v)})
	}
	return out
}

// rules is a compiled HeaderMutationRules.
type rules struct {
	allowAllRouting, allowEnvoy, disallowSystem, disallowAll, disallowIsError bool
	allow, disallow                                                           *regexp.Regexp
}

func compileRules(r *mutationrulesv3.HeaderMutationRules) (*rules, error) {
	out := &rules{}
	if r == nil {
		return out, nil
	}
	out.allowAllRouting = r.GetAllowAllRouting().GetValue()
	out.allowEnvoy = r.GetAllowEnvoy().GetValue()
	out.disallowSystem = r.GetDisallowSystem().GetValue()
	out.disallowAll = r.GetDisallowAll().GetValue()
	out.disallowIsError = r.GetDisallowIsError().GetValue()
	var err error
	if e := r.GetAllowExpression(); e != nil {
		if out.allow, err = regexp.Compile("^(?:" + e.GetRegex() + ")$"); err != nil {
			return nil, fmt.Errorf("mutation_rules.allow_expression: %w", err)
		}
	}
	if e := r.GetDisallowExpression(); e != nil {
		if out.disallow, err = regexp.Compile("^(?:" + e.GetRegex() + ")$"); err != nil {
			return nil, fmt.Errorf("mutation_rules.disallow_expression: %w", err)
		}
	}
	return out, nil
}

type checkOp int

const (
	opSet checkOp = iota
	opAppend
	opRemove
)

type checkResult int

const (
	checkOK checkResult = iota
	checkIgnore
	checkFail
)

// check is Envoy's mutation_rules Checker::check.
func (r *rules) check(op checkOp, name, value string) checkResult {
	deny := checkIgnore
	if r.disallowIsError {
		deny = checkFail
	}
	pseudo := strings.HasPrefix(name, ":")
	if op == opRemove && (pseudo || name == "host") {
		return deny
	}
	allowed := func() bool {
		if r.disallow != nil && r.disallow.MatchString(name) {
			return false
		}
		if r.allow != nil && r.allow.MatchString(name) {
			return true
		}
		if r.disallowAll {
			return false
		}
		if !r.allowAllRouting {
			switch name {
			case "host", ":authority", ":method", ":scheme":
				return false
			}
		}
		if (pseudo && op == opAppend) || r.disallowSystem {
			return false
		}
		if !r.allowEnvoy && strings.HasPrefix(name, "x-envoy") {
			return false
		}
		return true
	}()
	if !allowed {
		return deny
	}
	if op == opRemove {
		return checkOK
	}
	if !validValueFor(name, value) {
		return deny
	}
	return checkOK
}

func validValueFor(name, value string) bool {
	switch name {
	case "host", ":authority":
		return validAuthority(value)
	case ":scheme":
		return value == "http" || value == "https"
	case ":status":
		n, err := strconv.Atoi(value)
		return err == nil && n >= 200
	}
	return validHeaderValue(value)
}

func validAuthority(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("/?#@\\\"<>{}|^`", c) >= 0 {
			return false
		}
	}
	return true
}

// validHeaderName follows Envoy's HeaderUtility::headerNameIsValid: a
// pseudo header uses HTTP/2 rules (lower-case token), any other name HTTP/1
// token rules (upper case allowed, lower-cased later).
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	rest := k
	if k[0] == ':' {
		rest = k[1:]
		if rest == "" {
			return false
		}
		for i := 0; i < len(rest); i++ {
			if c := rest[i]; c >= 'A' && c <= 'Z' {
				return false
			}
		}
	}
	for i := 0; i < len(rest); i++ {
		if !isTokenChar(rest[i]) {
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func validHeaderValue(v string) bool {
	return strings.IndexAny(v, "\x00\r\n") < 0
}

// mutationError is an invalid mutation: always a local reply with
// status_on_error, whatever failure_mode_allow says.
type mutationError struct{ details string }

func (e *mutationError) Error() string { return e.details }

var errContentLengthMismatch = &mutationError{"mismatch_between_content_length_and_the_length_of_the_mutated_body"}

// mutationCtx carries what applyHeaderMutation needs besides the map.
type mutationCtx struct {
	rules      *rules
	maxCount   int
	maxBytes   int
	stripCL    bool // content-length is being removed: drop it from set_headers
	replacing  bool // CONTINUE_AND_REPLACE: :method may change
	isRequest  bool // "host" means :authority
	onRejected func()
}

// applyHeaderMutation is Envoy's MutationUtils::applyHeaderMutations.
// Changes made before an error stay applied, as in Envoy.
func applyHeaderMutation(m *headerMap, mut *extprocv3.HeaderMutation, c mutationCtx) error {
	if mut == nil {
		return nil
	}
	reject := func() {
		if c.onRejected != nil {
			c.onRejected()
		}
	}
	if len(mut.GetRemoveHeaders()) > c.maxCount || len(mut.GetSetHeaders()) > c.maxCount {
		return &mutationError{"header_mutation_set_contains_too_many_headers"}
	}
	for _, name := range mut.GetRemoveHeaders() {
		if !validHeaderName(name) {
			reject()
			return &mutationError{"Invalid_character_in_remove_headers_mutation."}
		}
		k := strings.ToLower(name)
		switch c.rules.check(opRemove, k, "") {
		case checkOK:
			m.del(mapKey(k, c.isRequest))
		case checkIgnore:
			reject()
		case checkFail:
			reject()
			return &mutationError{"Invalid_attempt_to_remove_" + k}
		}
	}
	for _, sh := range mut.GetSetHeaders() {
		h := sh.GetHeader()
		if h == nil {
			continue
		}
		k := strings.ToLower(h.GetKey())
		if c.stripCL && k == "content-length" {
			continue
		}
		v := string(h.GetRawValue()) // header.value is ignored, as in Envoy >= 1.32
		if !validHeaderName(h.GetKey()) || !validHeaderValue(v) {
			reject()
			return &mutationError{"Invalid_character_in_set_headers_mutation."}
		}
		appendV := sh.GetAppend().GetValue() // append_action is ignored
		op := opSet
		if appendV && m.has(mapKey(k, c.isRequest)) {
			op = opAppend
		}
		res := c.rules.check(op, k, v)
		if c.replacing && k == ":method" {
			res = checkOK
		}
		switch res {
		case checkOK:
			if appendV {
				m.add(mapKey(k, c.isRequest), v)
			} else {
				m.set(mapKey(k, c.isRequest), v)
			}
		case checkIgnore:
			reject()
		case checkFail:
			reject()
			return &mutationError{"Invalid_attempt_to_modify_" + k}
		}
	}
	if len(m.h) > c.maxCount || m.byteSize() > c.maxBytes {
		return &mutationError{"Header_map_size_exceeds_the_limit"}
	}
	return nil
}

func mapKey(k string, isRequest bool) string {
	if isRequest && k == "host" {
		return ":authority"
	}
	return k
}

// checkContentLength is MutationUtils::validateContentLength: a numeric
// content-length in held headers must equal the mutated body's length.
func checkContentLength(m *headerMap, bodyLen int) error {
	v, ok := m.get("content-length")
	if !ok {
		return nil
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return nil
	}
	if n != uint64(bodyLen) {
		return errContentLengthMismatch
	}
	return nil
}

// applyBodyMutation returns the new body for target.
func applyBodyMutation(target []byte, bm *extprocv3.BodyMutation) []byte {
	switch x := bm.GetMutation().(type) {
	case *extprocv3.BodyMutation_Body:
		return append([]byte(nil), x.Body...)
	case *extprocv3.BodyMutation_ClearBody:
		if x.ClearBody {
			return nil
		}
	}
	return target
}
