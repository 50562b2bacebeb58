package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	yaml3 "gopkg.in/yaml.v3"
)

var (
	yamlBlock  = regexp.MustCompile("(?s)```yaml\n(.*?)```")
	mdLink     = regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)
	deployPath = regexp.MustCompile("`(deploy/[A-Za-z0-9_./-]+)`")
)

// brokerHost redirects Kafka brokers in documented configs to a closed local port: tests
// reach nothing beyond 127.0.0.1.
var brokerHost = regexp.MustCompile(`(?m)^(\s*-?\s*host:) \S+$`)

// TestDocs loads every YAML block of the install and migration guides with the checker that
// fits it: sidecall configs with sidecall's loader, Kubernetes manifests with strict decoding
// and EnvoyFilter validation, Envoy bootstraps with the bootstrap checks, the rest as YAML.
// It also checks that relative links and the deploy/ paths the guides name exist.
func TestDocs(t *testing.T) {
	root := repoRoot(t)
	want := []string{"install-envoy.md", "install-istio.md", "install-helm.md", "install-envoy-gateway.md", "migration.md"}
	for _, name := range want {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(root, "docs", name)
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			md := string(b)
			blocks := yamlBlock.FindAllStringSubmatch(md, -1)
			if len(blocks) == 0 {
				t.Fatal("no YAML examples")
			}
			for i, m := range blocks {
				for _, err := range checkDocBlock(t, name+" yaml block "+strconv.Itoa(i+1), m[1]) {
					t.Error(err)
				}
			}
			for _, m := range mdLink.FindAllStringSubmatch(md, -1) {
				if strings.Contains(m[1], "://") {
					continue
				}
				if !fileExists(filepath.Join(root, "docs", m[1])) {
					t.Errorf("broken link %s", m[1])
				}
			}
			for _, m := range deployPath.FindAllStringSubmatch(md, -1) {
				if !fileExists(filepath.Join(root, m[1])) {
					t.Errorf("names %s, which does not exist", m[1])
				}
			}
		})
	}
}

func checkDocBlock(t *testing.T, at, src string) []error {
	t.Helper()
	var errs []error
	var top map[string]any
	if err := yaml3.Unmarshal([]byte(src), &top); err != nil {
		// Fragments (a list of plugins or routes) are still YAML.
		var anyv any
		if err2 := yaml3.Unmarshal([]byte(src), &anyv); err2 != nil {
			errs = append(errs, fmt.Errorf("%s: invalid YAML: %v", at, err2))
		}
		return errs
	}
	switch {
	case top["_format_version"] != nil:
		cfg := brokerHost.ReplaceAllString(src, "$1 127.0.0.1")
		cfg = strings.ReplaceAll(cfg, "port: 9092", "port: 1")
		if err := loadConfig(t, at, []byte(cfg), nil, true, "/run/secrets/sidecall"); err != nil {
			errs = append(errs, fmt.Errorf("%s: sidecall config: %v", at, err))
		}
	case top["apiVersion"] != nil:
		if _, err := decodeStream(splitDocs(t, []byte(src))); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", at, err))
		}
	case top["static_resources"] != nil:
		if err := validateBootstrap([]byte(src)); err != nil {
			errs = append(errs, fmt.Errorf("%s: Envoy bootstrap: %v", at, err))
		}
	case top["config"] != nil:
		// Helm values: the config inside must load.
		if c, ok := top["config"].(map[string]any); ok {
			if content, ok := c["content"].(string); ok {
				if err := loadConfig(t, at, []byte(content), nil, true, "/run/secrets/sidecall"); err != nil {
					errs = append(errs, fmt.Errorf("%s: config.content: %v", at, err))
				}
			}
		}
	}
	return errs
}

// TestDocBlockChecksFail: broken examples of each kind are caught.
func TestDocBlockChecksFail(t *testing.T) {
	cases := map[string]string{
		"config unknown key":  "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:1\n    urll: x\n",
		"config bad plugin":   "_format_version: \"3.0\"\nplugins:\n  - name: correlation-id\n    config: {generator: dice}\n",
		"manifest bad field":  "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {portz: []}\n",
		"bootstrap no router": "static_resources:\n  listeners: []\n",
		"values bad config":   "config:\n  content: |\n    _format_version: \"3.0\"\n    servicez: []\n",
		"not yaml":            "a: [b\n",
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			if errs := checkDocBlock(t, name, src); len(errs) == 0 {
				t.Fatal("broken example passed")
			}
		})
	}
}
