package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/plugins"
)

// registry is sidecall's own: every plugin the binary ships.
func registry() *flows.Registry { return plugins.New(plugins.Options{}).Registry }

// placeholder is what every secret resolves to in these tests: valid as a URL and a string.
const placeholder = "http://127.0.0.1:1/placeholder"

// fsVaultRef is a reference to the charts' fs vault of the mounted Secret.
var fsVaultRef = regexp.MustCompile(`\{vault://secrets/([^}/]+)\}`)

// loadConfig loads a sidecall config as `sidecall validate` would. env lists the variables
// the pod defines. The Secret mounted at fileMount is emulated by a temp folder: every fs
// vault whose folder is fileMount is pointed there, and each key a reference reads is
// written. File references are left as written: like in the pod, they resolve only inside
// the config's own folder.
func loadConfig(t *testing.T, name string, data []byte, env map[string]bool, anyEnv bool, fileMount string) error {
	t.Helper()
	dir := t.TempDir()
	s := string(data)
	if fileMount != "" && strings.Contains(s, fileMount) {
		local := filepath.Join(dir, "mounted-secret")
		if err := os.MkdirAll(local, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, m := range fsVaultRef.FindAllStringSubmatch(s, -1) {
			if err := os.WriteFile(filepath.Join(local, m[1]), []byte(placeholder+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		s = strings.ReplaceAll(s, "prefix: "+fileMount, "prefix: "+local)
	}
	file := filepath.Join(dir, "kong.yml")
	if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	lookup := func(k string) (string, bool) {
		if env[k] || anyEnv {
			return placeholder, true
		}
		return "", false
	}
	// Our own Resources, closed here: Kafka plugins start clients at load.
	res := flows.NewResources()
	defer res.Close()
	snap, err := flows.LoadFile(file, flows.LoadOptions{Registry: registry(), Resources: res, LookupEnv: lookup})
	if err != nil {
		return err
	}
	snap.Close()
	return nil
}

// TestRenderedConfigsValidate: each values file's config passes sidecall's loader (what
// `sidecall validate` runs), with every {vault://env/X} provided by the pod's env and every
// {vault://file/...} under its mounted Secret.
func TestRenderedConfigsValidate(t *testing.T) {
	configs := RenderedConfigs(t)
	if len(configs) < 4 {
		t.Fatalf("want a config per values file, got %d", len(configs))
	}
	for _, vf := range valuesFiles(t) {
		name := filepath.Base(vf)
		t.Run(name, func(t *testing.T) {
			ps, ok := renderedPod(t, vf)
			if !ok {
				t.Fatal("no sidecall pod spec rendered")
			}
			env, anyEnv, mount := map[string]bool{}, false, ""
			for _, c := range ps.Containers {
				if c.Name != "sidecall" {
					continue
				}
				for _, e := range c.Env {
					env[e.Name] = true
				}
				anyEnv = len(c.EnvFrom) > 0
				for _, m := range c.VolumeMounts {
					if m.Name == "sidecall-secrets" {
						mount = m.MountPath
					}
				}
			}
			// envFrom names are unknown here: only allow unlisted env refs without it.
			if err := loadConfig(t, name, configs[name], env, false, mount); err != nil && !anyEnv {
				t.Fatal(err)
			} else if err != nil {
				if err2 := loadConfig(t, name, configs[name], env, true, mount); err2 != nil {
					t.Fatal(err2)
				}
			}
		})
	}
}

// TestConfigChecksCatchMissingSecret: a config naming an env var the pod does not define,
// or a file outside the mounted Secret, fails.
func TestConfigChecksCatchMissingSecret(t *testing.T) {
	cfg := []byte(`_format_version: "3.0"
services:
  - name: s
    url: "{vault://env/NOT_DEFINED}"
`)
	if err := loadConfig(t, "env", cfg, map[string]bool{}, false, ""); err == nil {
		t.Error("an undefined env var passed")
	}
	cfg = []byte(`_format_version: "3.0"
services:
  - name: s
    url: "{vault://file//etc/elsewhere/url}"
`)
	if err := loadConfig(t, "file", cfg, nil, false, "/run/secrets/sidecall"); err == nil {
		t.Error("a file outside the secret mount passed")
	}
	if err := loadConfig(t, "plugin", []byte("_format_version: \"3.0\"\nplugins:\n  - name: no-such-plugin\n"), nil, false, ""); err == nil {
		t.Error("an unknown plugin passed")
	}
}

// TestShippedConfigs loads the other sidecall configs under deploy/: the image's default
// and the compose stack's (its Kafka broker redirected to a closed local port).
func TestShippedConfigs(t *testing.T) {
	root := repoRoot(t)
	for _, f := range []string{"deploy/config/kong.yml", "deploy/compose/sidecall/kong.yml"} {
		t.Run(f, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(root, f))
			if err != nil {
				t.Fatal(err)
			}
			// No network beyond 127.0.0.1 in tests: compose names become a closed local port.
			s := strings.ReplaceAll(string(b), "host: kafka", "host: 127.0.0.1")
			s = strings.ReplaceAll(s, "port: 9092", "port: 1")
			if err := loadConfig(t, f, []byte(s), map[string]bool{"CLIENT_SECRET": true}, false, ""); err != nil {
				t.Fatal(err)
			}
		})
	}
}
