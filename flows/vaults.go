package flows

import (
	"encoding/base64"
	"fmt"
	"regexp"

	"gopkg.in/yaml.v3"
)

// VaultConfig is a Kong vault entity. sidecall honours Kong's built-in
// backends that need no service: env (environment variables) and fs
// (files), so a pasted {vault://<prefix>/...} works as in Kong.
type VaultConfig struct {
	ID          string             `yaml:"id"`
	Name        string             `yaml:"name"`
	Prefix      string             `yaml:"prefix"`
	Description string             `yaml:"description"`
	Config      VaultBackendConfig `yaml:"config"`
	Tags        []string           `yaml:"tags"`
}

// VaultBackendConfig holds the env and fs vaults' config fields.
type VaultBackendConfig struct {
	Prefix       string `yaml:"prefix"`        // env: variable prefix; fs: directory
	Base64Decode bool   `yaml:"base64_decode"` // env (Kong 3.11+)
}

// vaultEntity is a vaults entry of the config (env or fs), by prefix.
type vaultEntity struct {
	backend string // "env" or "file"
	prefix  string // env variable prefix, or the fs directory
	base64  bool
}

var vaultPrefix = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

// loadVaults decodes the vaults section before anything else, so later
// values can refer to the prefixes it defines.
func loadVaults(b *Builder, n *yaml.Node) {
	var vs []VaultConfig
	b.Decode(n, "vaults", &vs)
	for i, v := range vs {
		at := Path(fmt.Sprintf("vaults[%d]", i))
		switch {
		case v.Prefix == "":
			b.Errorf(at+".prefix", "required")
			continue
		case !vaultPrefix.MatchString(v.Prefix):
			b.Errorf(at+".prefix", "must be lower-case letters, digits and dashes, got %q", v.Prefix)
			continue
		case v.Prefix == "env" || v.Prefix == "file":
			b.Errorf(at+".prefix", "%q is a built-in vault name", v.Prefix)
			continue
		case b.vaults[v.Prefix] != (vaultEntity{}):
			b.Errorf(at+".prefix", "duplicate vault prefix %q", v.Prefix)
			continue
		}
		var ev vaultEntity
		switch v.Name {
		case "env":
			ev = vaultEntity{backend: "env", prefix: v.Config.Prefix, base64: v.Config.Base64Decode}
		case "fs":
			if v.Config.Prefix == "" {
				b.Errorf(at+".config.prefix", "required for the fs vault (the secrets directory)")
				continue
			}
			if v.Config.Base64Decode {
				b.Errorf(at+".config.base64_decode", "only for the env vault")
				continue
			}
			ev = vaultEntity{backend: "file", prefix: v.Config.Prefix}
		case "":
			b.Errorf(at+".name", "required")
			continue
		default:
			b.Warnf("vaults[%d]: vault %q (%s) is not supported by sidecall (env and fs are); references to it fail", i, v.Prefix, v.Name)
			continue
		}
		if b.vaults == nil {
			b.vaults = map[string]vaultEntity{}
		}
		b.vaults[v.Prefix] = ev
	}
}

func decodeBase64Secret(ref, s string) (string, error) {
	d, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", fmt.Errorf("vault reference %q: value is not base64 (base64_decode is on)", ref)
	}
	return string(d), nil
}
