package plugins_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/plugins"
)

// acceptedWithWarning are config fields sidecall accepts and does not use:
// each maps to a file whose load must warn at a path ending in that field
// (so the warning is seen, not only promised). Keyed by Go type and yaml
// field name.
var acceptedWithWarning = map[string]string{
	"callout.MemoryCfg.dictionary_name":                                         calloutWith("cache: {strategy: memory, memory: {dictionary_name: my_dict}}"),
	"callout.BodyPart.decode":                                                   calloutWith("upstream: {body: {decode: false}}"),
	"callout.RedisConfig.keepalive_backlog":                                     calloutWith("cache: {strategy: redis, redis: {keepalive_backlog: 10}}"),
	"callout.RedisConfig.connection_is_proxied":                                 calloutWith("cache: {strategy: redis, redis: {connection_is_proxied: true}}"),
	"callout.RedisConfig.sentinel_username":                                     calloutWith("cache: {strategy: redis, redis: {sentinel_username: u}}"),
	"callout.RedisConfig.sentinel_password":                                     calloutWith("cache: {strategy: redis, redis: {sentinel_password: p}}"),
	"callout.RedisConfig.sentinel_role":                                         calloutWith("cache: {strategy: redis, redis: {sentinel_role: master}}"),
	"callout.RedisConfig.cluster_max_redirections":                              calloutWith("cache: {strategy: redis, redis: {cluster_max_redirections: 3}}"),
	"kafka.producerSettings.producer_request_limits_bytes_per_request":          kafkaWith("producer_request_limits_bytes_per_request: 2048"),
	"kafka.producerSettings.producer_async_flush_timeout":                       kafkaWith("producer_async_flush_timeout: 50"),
	"kafka.producerSettings.producer_async_buffering_limits_messages_in_memory": kafkaWith("producer_async_buffering_limits_messages_in_memory: 10"),
	"kafka.upstreamConfig.keepalive":                                            kafkaWith("keepalive: 1000"),
	"kafka.upstreamConfig.keepalive_enabled":                                    kafkaWith("keepalive_enabled: true"),
	"kafka.upstreamConfig.cluster_name":                                         kafkaWith("cluster_name: prod"),
	"kafka.Security.certificate_id":                                             kafkaWith("security: {certificate_id: 0a1b}"),
	"flows.RouteConfig.https_redirect_status_code":                              "services: [{name: s, url: \"http://h\", routes: [{name: r, paths: [/], protocols: [https], https_redirect_status_code: 301}]}]\n",
}

// warnedAt is where a warning of acceptedWithWarning stands when it is not
// at the field itself.
var warnedAt = map[string]string{
	"flows.RouteConfig.https_redirect_status_code": "protocols", // the route's scheme warning covers it
}

// refused are fields read only to refuse a value sidecall cannot honour:
// a file setting each must fail at that field.
var refused = map[string]string{
	"callout.RedisConfig.sentinel_master":           calloutWith("cache: {strategy: redis, redis: {sentinel_master: m}}"),
	"callout.RedisConfig.sentinel_nodes":            calloutWith("cache: {strategy: redis, redis: {sentinel_nodes: [{host: h, port: 1}]}}"),
	"callout.RedisConfig.cluster_nodes":             calloutWith("cache: {strategy: redis, redis: {cluster_nodes: [{ip: h, port: 1}]}}"),
	"callout.RedisConfig.cluster_addresses":         calloutWith("cache: {strategy: redis, redis: {cluster_addresses: [\"h:1\"]}}"),
	"callout.RedisConfig.sentinel_addresses":        calloutWith("cache: {strategy: redis, redis: {sentinel_addresses: [\"h:1\"]}}"),
	"callout.RedisConfig.cloud_authentication":      calloutWith("cache: {strategy: redis, redis: {cloud_authentication: {auth_provider: aws}}}"),
	"kafka.Authentication.tokenauth":                kafkaWith("authentication: {strategy: sasl, mechanism: PLAIN, user: u, password: p, tokenauth: true}"),
	"kafka.upstreamConfig.message_by_lua_functions": kafkaWith("message_by_lua_functions: [\"return {}\"]"),
	"kafka.upstreamConfig.headers":                  kafkaWith("headers: {x: y}"),
	"kafka.upstreamConfig.schema_registry":          kafkaWith("schema_registry: {confluent: {}}"),
	"flows.PluginConfig.partials":                   "plugins:\n  - name: correlation-id\n    partials: [{name: x}]\n",
	"flows.PluginConfig.consumer":                   "plugins:\n  - name: correlation-id\n    consumer: ann\n",
}

// metadata are fields with no behaviour in Kong either (names, ids, tags,
// comments): accepted as they are.
var metadata = map[string]bool{
	"id": true, "tags": true, "description": true, "_comment": true, "_ignore": true,
	"instance_name": true, "_transform": true,
	"created_at": true, "updated_at": true, "ws_id": true, // Admin API exports
}

func calloutWith(cfg string) string {
	return "plugins:\n  - name: request-callout\n    config:\n      callouts: [{name: c, request: {url: \"http://127.0.0.1:1/\"}}]\n      " + cfg + "\n"
}

func kafkaWith(cfg string) string {
	return "plugins:\n  - name: kafka-upstream\n    config:\n      bootstrap_servers: [{host: k, port: 9092}]\n      topic: t\n      " + cfg + "\n"
}

// seeds are files that reach every config type (with the examples and
// every package's testdata).
var seeds = []string{
	"vaults:\n  - {name: env, prefix: e, config: {prefix: X_}}\n  - {name: fs, prefix: f, config: {prefix: /tmp}}\n" +
		"ca_certificates: [{id: x, cert: nope}]\nservices: [{name: s, url: \"http://h\", routes: [{name: r, paths: [/]}]}]\n" +
		"plugins:\n  - name: correlation-id\n    ordering: {before: {access: [pre-function]}}\n",
}

// TestNoSilentlyIgnoredField walks every config struct the loader and the
// shipped plugins decode into, and fails for a yaml field that no code
// reads (outside the functions that only validate, default or warn) unless
// it is accepted with a warning that a load shows, refused with an error a
// load shows, or metadata.
func TestNoSilentlyIgnoredField(t *testing.T) {
	set := plugins.New(plugins.Options{})
	defer set.Close()
	roots := map[reflect.Type]bool{}
	decodes := 0
	restore := flows.TraceDecodes(func(t reflect.Type) { roots[t] = true; decodes++ })
	load := func(src []byte) (*flows.Snapshot, error) {
		s, err := flows.Load(filepath.Join(t.TempDir(), "kong.yml"), src, flows.LoadOptions{Registry: set.Registry, Lua: set.Lua, NoProvision: true,
			LookupEnv: func(string) (string, bool) { return "", false }})
		if err == nil {
			defer s.Close()
		}
		return s, err
	}
	var files []string
	for _, glob := range []string{"../examples/*.yaml", "../*/testdata/*.yaml", "../*/testdata/*/*.yaml", "../cmd/sidecall/demo.yaml"} {
		m, _ := filepath.Glob(glob)
		files = append(files, m...)
	}
	for _, f := range files {
		if data, err := os.ReadFile(f); err == nil {
			_, _ = load(data)
		}
	}
	for _, src := range seeds {
		_, _ = load([]byte(src))
	}
	for _, name := range set.Registry.Names() {
		decodes = 0
		_, _ = load([]byte("plugins:\n  - name: " + name + "\n"))
		if decodes < 2 { // the file itself, then the plugin's config
			t.Errorf("plugin %s decoded nothing through Builder.Decode: the walker cannot see its config", name)
		}
	}
	for _, src := range acceptedWithWarning {
		_, _ = load([]byte(src))
	}
	restore()

	reads := fieldReads(t, "..")
	type field struct{ key, goName, yamlName string }
	var fields []field
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type, owner string)
	walk = func(t reflect.Type, owner string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] || t.PkgPath() == "gopkg.in/yaml.v3" {
			return
		}
		seen[t] = true
		if t.Name() != "" {
			owner = typeKey(t)
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" || !f.IsExported() && opts != "inline" {
				continue // not decoded
			}
			if opts == "inline" {
				walk(f.Type, owner)
				continue
			}
			fields = append(fields, field{owner + "." + name, f.Name, name})
			walk(f.Type, owner+"."+name) // an anonymous struct is named by its field
		}
	}
	for r := range roots {
		walk(r, "")
	}
	sort.Slice(fields, func(i, j int) bool { return fields[i].key < fields[j].key })
	if len(fields) < 100 {
		t.Fatalf("only %d fields reached: the walker lost the plugins' configs", len(fields))
	}
	for _, f := range fields {
		_, warned := acceptedWithWarning[f.key]
		_, refusedF := refused[f.key]
		switch {
		case warned || refusedF || metadata[f.yamlName]:
		case !reads[f.goName]:
			t.Errorf("%s (Go %s) is decoded but no code reads it: implement it, warn (acceptedWithWarning) or refuse it", f.key, f.goName)
		}
	}
	checkEmitted(t, load, acceptedWithWarning, true)
	checkEmitted(t, load, refused, false)
}

// typeKey is pkg.Type, the package by its last element.
func typeKey(t reflect.Type) string {
	pkg := t.PkgPath()
	if i := strings.LastIndex(pkg, "/"); i >= 0 {
		pkg = pkg[i+1:]
	}
	return pkg + "." + t.Name()
}

// checkEmitted loads each file and wants a warning (warn) or a problem at a
// path ending in the key's field.
func checkEmitted(t *testing.T, load func([]byte) (*flows.Snapshot, error), table map[string]string, warn bool) {
	t.Helper()
	for key, src := range table {
		field := key[strings.LastIndex(key, ".")+1:]
		if at, ok := warnedAt[key]; ok && warn {
			field = at
		}
		s, err := load([]byte(src))
		var paths []flows.Path
		if warn {
			if err != nil {
				t.Errorf("%s: %v", key, err)
				continue
			}
			for _, w := range s.WarningsAt {
				paths = append(paths, w.Path)
			}
		} else if ce, ok := err.(*flows.ConfigError); ok {
			for _, p := range ce.Problems {
				paths = append(paths, p.Path)
			}
		}
		found := false
		for _, p := range paths {
			if strings.HasSuffix(string(p), "."+field) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no %s at .%s (got %v, %v)", key, map[bool]string{true: "warning", false: "error"}[warn], field, paths, err)
		}
	}
}

// validatorFunc names functions that check, default or warn; one that
// returns nothing only judges the config, so a field read there alone is
// not used (validateConn, which returns the addresses, is not one).
var validatorFunc = regexp.MustCompile(`^(?i)(validate|check|warn|default)`)

// fieldReads are the field names read by the module's non-test code: a
// selector that is not assigned to, not called, outside result-less
// validator funcs. By name, so a field sharing a name with one read
// elsewhere passes: the test catches Kong knobs, which have their own.
func fieldReads(t *testing.T, root string) map[string]bool {
	t.Helper()
	reads := map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil // another engineer's file mid-edit is not this test's subject
		}
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if ok && validatorFunc.MatchString(fd.Name.Name) && fd.Type.Results == nil {
				continue
			}
			skip := map[ast.Expr]bool{}
			ast.Inspect(decl, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.AssignStmt:
					for _, l := range n.Lhs {
						skip[l] = true
					}
				case *ast.CallExpr:
					skip[n.Fun] = true
				case *ast.SelectorExpr:
					if !skip[n] {
						reads[n.Sel.Name] = true
					}
				}
				return true
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return reads
}
