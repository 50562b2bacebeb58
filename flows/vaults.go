package flows

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// VaultConfig is a Kong vault entity. sidecall honours Kong's built-in
// backends that need no service: env (environment variables) and fs
// (files), so a pasted {vault://<prefix>/...} works as in Kong.
type VaultConfig struct {
	EntityMeta  `yaml:",inline"`
	ID          string   `yaml:"id"`
	Name        string   `yaml:"name"`
	Prefix      string   `yaml:"prefix"`
	Description string   `yaml:"description"`
	Tags        []string `yaml:"tags"`
	// Config is decoded as VaultBackendConfig for env and fs; another
	// backend's config is not sidecall's to check.
	Config *yaml.Node `yaml:"config"`
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
	// unsupported names the backend of a vault sidecall cannot read
	// (hcv, aws...): only a reference to it is an error.
	unsupported string
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
		var bc VaultBackendConfig
		if v.Name == "env" || v.Name == "fs" {
			b.Decode(v.Config, at.Key("config"), &bc)
		}
		switch v.Name {
		case "env":
			ev = vaultEntity{backend: "env", prefix: bc.Prefix, base64: bc.Base64Decode}
		case "fs":
			if bc.Prefix == "" {
				b.Errorf(at+".config.prefix", "required for the fs vault (the secrets directory)")
				continue
			}
			if bc.Base64Decode {
				b.Errorf(at+".config.base64_decode", "only for the env vault")
				continue
			}
			ev = vaultEntity{backend: "file", prefix: bc.Prefix}
		case "":
			b.Errorf(at+".name", "required")
			continue
		default:
			b.WarnAt(at, "vault %q (%s) is not supported by sidecall (env and fs are); references to it fail", v.Prefix, v.Name)
			ev = vaultEntity{unsupported: v.Name}
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

// vaultSet is a load's allow-set: every {vault://...} reference the config
// names (whole values, and references written in Lua code and $(...)
// templates), resolved at load. kong.vault.get answers only from it, so
// Lua never reads a file or an environment variable at request time, and
// never one the config does not name.
type vaultSet struct {
	mu   sync.RWMutex
	vals map[string]string // reference → value
}

func (s *vaultSet) add(ref, val string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vals == nil {
		s.vals = map[string]string{}
	}
	s.vals[ref] = val
}

func (s *vaultSet) get(ref string) (string, bool) {
	if s == nil {
		return "", false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.vals[ref]
	return v, ok
}

// redact replaces every known secret value inside str by its reference
// (for logging what Lua asked for: it may have built it from a secret).
func (s *vaultSet) redact(str string) string {
	if s == nil {
		return str
	}
	s.mu.RLock()
	pairs := make([][2]string, 0, len(s.vals))
	for ref, v := range s.vals {
		if len(v) >= 3 {
			pairs = append(pairs, [2]string{v, ref})
		}
	}
	s.mu.RUnlock()
	sort.Slice(pairs, func(i, j int) bool { return len(pairs[i][0]) > len(pairs[j][0]) })
	for _, p := range pairs {
		str = strings.ReplaceAll(str, p[0], p[1])
	}
	return str
}

// vaultRefs returns the load's allow-set, made on first use.
func (b *Builder) vaultRefs() *vaultSet {
	if b.refs == nil {
		b.refs = &vaultSet{}
	}
	return b.refs
}

// resolveRef resolves a reference the config names, adds it to the load's
// allow-set and hides its value from every later problem and warning.
func (b *Builder) resolveRef(ref string) (string, error) {
	if b.offline {
		return ref, checkVaultRef(ref, b.Dir, b.vaults)
	}
	v, err := resolveVault(ref, b.Dir, b.LookupEnv, b.vaults)
	if err != nil {
		return "", err
	}
	if old, seen := b.vaultRefs().get(ref); seen && old == v {
		return v, nil // already in the set and hidden
	}
	b.vaultRefs().add(ref, v)
	b.hideSecret(v, ref)
	return v, nil
}

// luaVaultRef is a reference written literally in Lua code: no quote,
// bracket, backslash or space inside, so "{vault://" .. x .. "}" is not one
// (it is refused when it runs, unless it builds a reference named here).
var luaVaultRef = regexp.MustCompile(`\{vault://[^{}"'\\\[\]\s]+\}`)

// luaRefs resolves the references written in Lua code at load (an error
// names the reference, never a value), so kong.vault.get finds them.
func (b *Builder) luaRefs(code string, at Path) bool {
	ok := true
	for _, ref := range luaVaultRef.FindAllString(code, -1) {
		if _, err := b.resolveRef(ref); err != nil {
			b.Errorf(at, "%v", err)
			ok = false
		}
	}
	return ok
}

// checkVaultRef is resolveVault without reading anything (offline): the
// reference names something, its vault exists and is supported, and a
// file stays, as written, where the file vaults may read.
func checkVaultRef(ref, dir string, vaults map[string]vaultEntity) error {
	body := strings.TrimSuffix(strings.TrimPrefix(ref, "{vault://"), "}")
	kind, rest, _ := strings.Cut(body, "/")
	v, declared := vaults[kind]
	switch {
	case declared && v.unsupported != "":
		return unsupportedVault(ref, kind, v.unsupported)
	case declared && v.backend == "file":
		if rest == "" || !filepath.IsLocal(rest) {
			return fmt.Errorf("vault reference %q must name a file inside the vault's directory", ref)
		}
	case !declared && kind == "file":
		if rest == "" {
			return fmt.Errorf("vault reference %q names no file", ref)
		}
		if !within(absUnder(dir, rest), fileRoots(dir, vaults)) {
			return fmt.Errorf("vault reference %q: file is outside the config directory and the fs vaults' directories", ref)
		}
	case declared, kind == "env":
		if name, _, _ := strings.Cut(rest, "/"); name == "" {
			return fmt.Errorf("vault reference %q names no variable", ref)
		}
	default:
		return unknownVault(ref, kind)
	}
	return nil
}

func unsupportedVault(ref, kind, backend string) error {
	return fmt.Errorf("vault reference %q: vault %q is a %s vault, which sidecall does not support (env and fs are)", ref, kind, backend)
}

func unknownVault(ref, kind string) error {
	return fmt.Errorf("vault reference %q: unsupported vault %q (sidecall supports env, file, and vaults entities named env or fs)", ref, kind)
}

const notWhole = "a vault reference must be the whole value"

// withdrawNotWhole drops the "must be the whole value" problem Decode
// recorded at at: Lua code and $(...) expressions may name references
// inside their text.
func (b *Builder) withdrawNotWhole(at Path) {
	out := b.problems[:0]
	for _, p := range b.problems {
		if p.Path == at && strings.HasPrefix(p.Reason, notWhole) {
			continue
		}
		out = append(out, p)
	}
	b.problems = out
}

// errOutside marks a file reference that leaves its allowed directories.
var errOutside = errors.New("outside")

// fileRoots are the directories the built-in file vault may read: the
// config's and every fs vault's.
func fileRoots(configDir string, vaults map[string]vaultEntity) []string {
	roots := []string{absUnder(configDir, "")}
	for _, v := range vaults {
		if v.backend == "file" {
			roots = append(roots, absUnder(configDir, v.prefix))
		}
	}
	return roots
}

// absUnder is p made absolute, relative to configDir.
func absUnder(configDir, p string) string {
	if !filepath.IsAbs(p) {
		p = filepath.Join(configDir, p)
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}

// within tells whether p lies under one of roots.
func within(p string, roots []string) bool {
	for _, r := range roots {
		if rel, err := filepath.Rel(r, p); err == nil && (rel == "." || filepath.IsLocal(rel)) {
			return true
		}
	}
	return false
}

// readConfined reads the regular file at p (absolute) only if it lies
// under one of roots once ".." is cleaned, and still does once symlinks are
// resolved (in the file's path and in the roots). errOutside when it does
// not; os.ErrNotExist (wrapped) when it cannot be read.
func readConfined(p string, roots []string) (string, error) {
	p = filepath.Clean(p)
	real := make([]string, 0, len(roots))
	for _, r := range roots {
		if rr, err := filepath.EvalSymlinks(r); err == nil {
			real = append(real, rr)
		}
	}
	if !within(p, roots) && !within(p, real) {
		return "", errOutside
	}
	target, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("%w", os.ErrNotExist)
	}
	if !within(target, real) {
		return "", errOutside
	}
	if fi, err := os.Stat(target); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w", os.ErrNotExist)
	}
	data, err := os.ReadFile(target)
	if err != nil {
		return "", fmt.Errorf("%w", os.ErrNotExist)
	}
	return strings.TrimRight(string(data), "\r\n"), nil
}
