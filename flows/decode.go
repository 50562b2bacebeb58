package flows

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"

	"gopkg.in/yaml.v3"
)

// Decode decodes node strictly into out (a pointer), recording every problem
// with its path and line. Fields already set in out are defaults: keys that
// are absent or null keep them. Struct fields use `yaml:"name"` tags. A whole
// string value {vault://env/NAME} or {vault://file/PATH} is replaced by the
// secret. A *yaml.Node field keeps the raw node.
func (b *Builder) Decode(node *yaml.Node, at Path, out any) {
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		panic("flows.Decode: out must be a non-nil pointer")
	}
	if h := decodeHook.Load(); h != nil {
		(*h)(v.Elem().Type())
	}
	b.decode(node, at, v.Elem())
}

// decodeHook sees every type decoded; nil but under TraceDecodes.
var decodeHook atomic.Pointer[func(reflect.Type)]

// TraceDecodes makes every Builder.Decode report the type it decodes into
// until stop is called: how a test reaches each plugin's config type
// through the registry. f must be safe for the loads running meanwhile.
func TraceDecodes(f func(reflect.Type)) (stop func()) {
	decodeHook.Store(&f)
	return func() { decodeHook.Store(nil) }
}

var nodeType = reflect.TypeOf(yaml.Node{})

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.Tag {
	case "!!str":
		return fmt.Sprintf("string %q", n.Value)
	case "!!int":
		return "integer " + n.Value
	case "!!float":
		return "number " + n.Value
	case "!!bool":
		return "boolean " + n.Value
	case "!!null":
		return "null"
	}
	return fmt.Sprintf("%q", n.Value)
}

func (b *Builder) decode(n *yaml.Node, at Path, v reflect.Value) {
	if n == nil {
		return
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	b.mark(at, n)
	if v.Type() == nodeType {
		v.Set(reflect.ValueOf(*n))
		return
	}
	if v.Kind() == reflect.Pointer && v.Type().Elem() == nodeType {
		v.Set(reflect.ValueOf(n))
		return
	}
	isNull := n.Kind == yaml.ScalarNode && n.Tag == "!!null"
	if isNull {
		return // null keeps the default (Kong semantics)
	}
	if v.CanAddr() {
		if u, ok := v.Addr().Interface().(yaml.Unmarshaler); ok {
			if err := u.UnmarshalYAML(n); err != nil {
				b.Errorf(at, "%v", err)
			}
			return
		}
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		b.decode(n, at, v.Elem())
	case reflect.Struct:
		b.decodeStruct(n, at, v)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			b.Errorf(at, "must be a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			b.decode(c, at.Index(i), s.Index(i))
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			b.Errorf(at, "must be a mapping, got %s", kindName(n))
			return
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			kp := at.Key(k.Value)
			if seen[k.Value] {
				b.errorAt(k.Line, kp, "duplicate key")
				continue
			}
			seen[k.Value] = true
			ev := reflect.New(v.Type().Elem()).Elem()
			if val.Kind == yaml.ScalarNode && val.Tag == "!!null" {
				b.mark(kp, val)
				v.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), ev) // null kept as zero (nil)
				continue
			}
			b.decode(val, kp, ev)
			v.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), ev)
		}
	case reflect.Interface:
		var x any
		if err := n.Decode(&x); err != nil {
			b.Errorf(at, "%v", err)
			return
		}
		v.Set(reflect.ValueOf(normalize(x)))
	case reflect.String:
		// Only a YAML string: 42 is refused ("42" is fine), as Kong's schema
		// refuses a number where it wants a string.
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			b.Errorf(at, "must be a string, got %s", kindName(n))
			return
		}
		s, err := b.resolveVault(n.Value)
		if err != nil {
			b.Errorf(at, "%v", err)
			if strings.HasPrefix(err.Error(), notWhole) {
				v.SetString(n.Value) // Lua code may name references: Builder.Lua withdraws the problem
			}
			return
		}
		if s != n.Value {
			b.secrets[at] = true
		}
		if b.offline && isVaultRef(n.Value) {
			if b.offlineRefs == nil {
				b.offlineRefs = map[Path]bool{}
			}
			b.offlineRefs[at] = true // its value is unknown: later checks of it say nothing
		}
		if n.Style&yaml.LiteralStyle != 0 {
			if b.literal == nil {
				b.literal = map[Path]bool{}
			}
			b.literal[at] = true
		}
		v.SetString(s)
	case reflect.Int, reflect.Int64, reflect.Int32:
		var i int64
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&i) != nil {
			b.Errorf(at, "must be an integer, got %s", kindName(n))
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		var f float64
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&f) != nil {
			b.Errorf(at, "must be a number, got %s", kindName(n))
			return
		}
		v.SetFloat(f)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			b.Errorf(at, "must be a boolean, got %s", kindName(n))
			return
		}
		v.SetBool(n.Value == "true" || n.Value == "True" || n.Value == "TRUE")
	default:
		panic("flows.Decode: unsupported kind " + v.Kind().String())
	}
}

func (b *Builder) decodeStruct(n *yaml.Node, at Path, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		b.Errorf(at, "must be a mapping, got %s", kindName(n))
		return
	}
	fields := structFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		kp := at.Key(k.Value)
		if seen[k.Value] {
			b.errorAt(k.Line, kp, "duplicate key")
			continue
		}
		seen[k.Value] = true
		idx, ok := fields[k.Value]
		if !ok {
			b.errorAt(k.Line, kp, "unknown field")
			continue
		}
		b.decode(val, kp, v.FieldByIndex(idx))
	}
}

func structFields(t reflect.Type) map[string][]int {
	m := map[string][]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if opts == "inline" {
			for k, idx := range structFields(f.Type) {
				m[k] = append([]int{i}, idx...)
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = []int{i}
	}
	return m
}

// normalize turns yaml's map[string]any trees into JSON-compatible values.
func normalize(x any) any {
	switch t := x.(type) {
	case map[string]any:
		for k, v := range t {
			t[k] = normalize(v)
		}
		return t
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, v := range t {
			m[fmt.Sprint(k)] = normalize(v)
		}
		return m
	case []any:
		for i, v := range t {
			t[i] = normalize(v)
		}
		return t
	}
	return x
}

var vaultRef = regexp.MustCompile(`\{vault://[^}]*\}`)

// resolveVault resolves a whole-value vault reference (adding it to the
// load's allow-set); other strings pass.
func (b *Builder) resolveVault(s string) (string, error) {
	if !strings.Contains(s, "{vault://") {
		return s, nil
	}
	if !strings.HasPrefix(s, "{vault://") || !strings.HasSuffix(s, "}") || vaultRef.FindString(s) != s {
		return "", fmt.Errorf(notWhole+", got %q", s)
	}
	return b.resolveRef(s)
}

// ResolveVault resolves {vault://env/NAME[/KEY]} and {vault://file/PATH}
// (a file under dir only). lookup reads the environment (os.LookupEnv when
// nil).
func ResolveVault(ref, dir string, lookup func(string) (string, bool)) (string, error) {
	return resolveVault(ref, dir, lookup, nil)
}

// resolveVault also knows the prefixes of the config's vaults entities.
// Files are read only under the config's directory dir or an fs vault's.
func resolveVault(ref, dir string, lookup func(string) (string, bool), vaults map[string]vaultEntity) (string, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	body := strings.TrimSuffix(strings.TrimPrefix(ref, "{vault://"), "}")
	kind, rest, _ := strings.Cut(body, "/")
	if v, ok := vaults[kind]; ok {
		if v.unsupported != "" {
			return "", unsupportedVault(ref, kind, v.unsupported)
		}
		if v.backend == "file" {
			return resolveFSVault(ref, rest, v.prefix, dir)
		}
		s, err := resolveEnvVault(ref, rest, v.prefix, lookup)
		if err == nil && v.base64 {
			return decodeBase64Secret(ref, s)
		}
		return s, err
	}
	switch kind {
	case "env":
		return resolveEnvVault(ref, rest, "", lookup)
	case "file":
		if rest == "" {
			return "", fmt.Errorf("vault reference %q names no file", ref)
		}
		p := rest
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		roots := fileRoots(dir, vaults)
		s, err := readConfined(absUnder(dir, p), roots)
		switch {
		case errors.Is(err, errOutside) && len(roots) > 1:
			return "", fmt.Errorf("vault reference %q: file is outside the config directory and the fs vaults' directories", ref)
		case errors.Is(err, errOutside):
			return "", fmt.Errorf("vault reference %q: file is outside the config directory", ref)
		case err != nil:
			return "", fmt.Errorf("vault reference %q: cannot read file %s", ref, rest)
		}
		return s, nil
	}
	return "", unknownVault(ref, kind)
}

// resolveEnvVault is Kong's env vault: prefix + NAME with - as _,
// upper-cased; NAME/KEY reads KEY from a JSON object.
func resolveEnvVault(ref, rest, prefix string, lookup func(string) (string, bool)) (string, error) {
	name, key, _ := strings.Cut(rest, "/")
	if name == "" {
		return "", fmt.Errorf("vault reference %q names no variable", ref)
	}
	env := strings.ToUpper(prefix + strings.ReplaceAll(name, "-", "_"))
	val, ok := lookup(env)
	if !ok {
		return "", fmt.Errorf("vault reference %q: environment variable %s is not set", ref, env)
	}
	if key == "" {
		return val, nil
	}
	return jsonKey(ref, env, val, key)
}

// resolveFSVault is Kong's fs vault: a file under the vault's directory,
// or FILE/KEY for a key of a JSON file. It never leaves the directory, not
// even through a symlink.
func resolveFSVault(ref, rest, root, configDir string) (string, error) {
	root = absUnder(configDir, root)
	if rest == "" || !filepath.IsLocal(rest) {
		return "", fmt.Errorf("vault reference %q must name a file inside the vault's directory", ref)
	}
	roots := []string{root}
	outside := fmt.Errorf("vault reference %q: file is outside the vault's directory", ref)
	s, err := readConfined(filepath.Join(root, rest), roots)
	if err == nil {
		return s, nil
	}
	if errors.Is(err, errOutside) {
		return "", outside
	}
	file, key := filepath.Split(rest)
	if file != "" && key != "" {
		data, err := readConfined(filepath.Join(root, file), roots)
		if errors.Is(err, errOutside) {
			return "", outside
		}
		if err == nil {
			return jsonKey(ref, file, data, key)
		}
	}
	return "", fmt.Errorf("vault reference %q: cannot read file %s", ref, rest)
}

func jsonKey(ref, from, val, key string) (string, error) {
	var m map[string]any
	if err := json.Unmarshal([]byte(val), &m); err != nil {
		return "", fmt.Errorf("vault reference %q: %s is not a JSON object", ref, from)
	}
	s, ok := m[key].(string)
	if !ok {
		return "", fmt.Errorf("vault reference %q: key %q not found in %s", ref, key, from)
	}
	return s, nil
}
