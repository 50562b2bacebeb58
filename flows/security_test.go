package flows

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sidecall/sidecall/flows/lua"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"gopkg.in/yaml.v3"
)

// Vault confinement: kong.vault.get answers only the references the config
// names (resolved at load), and file references never leave the config's
// directory or a declared fs vault's, even through a symlink.

// refused is what kong.vault.get returns (as err) for a reference the
// config does not name.
const refused = "vault reference not found: sidecall resolves only the references its config names"

// vaultLua is a plugin running its access chunks, then rendering its
// template into kong.ctx.shared.tmpl (or the error into tmpl_err);
// header_name is decoded like any value (vault references resolved).
type vaultLua struct {
	chunks []*LuaChunk
	tmpl   *Template
}

func (vaultLua) Name() string  { return "vault-lua" }
func (vaultLua) Priority() int { return 1000 }
func (p vaultLua) Access(ctx context.Context, x *Exchange) error {
	for _, c := range p.chunks {
		if err := c.Run(ctx, x); err != nil {
			return err
		}
	}
	if p.tmpl != nil {
		v, err := RenderString(ctx, p.tmpl, x)
		if err != nil {
			x.Shared["tmpl_err"] = err.Error()
		} else {
			x.Shared["tmpl"] = v
		}
	}
	return nil
}

func vaultRegistry() *Registry {
	r := NewRegistry()
	r.Register("vault-lua", 1000, func(b *Builder, raw *yaml.Node, at Path) (Plugin, error) {
		var cfg struct {
			Access     []string `yaml:"access"`
			HeaderName string   `yaml:"header_name"`
			Template   string   `yaml:"template"`
		}
		b.Decode(raw, at, &cfg)
		var p vaultLua
		for i, src := range cfg.Access {
			if c := b.Lua(src, at.Key("access").Index(i)); c != nil {
				p.chunks = append(p.chunks, c)
			}
		}
		if cfg.Template != "" {
			p.tmpl = b.Template(cfg.Template, at.Key("template"))
		}
		return p, nil
	})
	return r
}

// vaultEnv is the process environment the tests pretend to have.
var vaultEnv = map[string]string{
	"API_TOKEN":    "tok-s3cr3t",
	"TMPL_TOKEN":   "tmpl-s3cr3t",
	"OTHER_SECRET": "other-s3cr3t",
}

func vaultLookup(k string) (string, bool) { v, ok := vaultEnv[k]; return v, ok }

// loadVault loads src as file (absolute) with the vault-lua plugin.
func loadVault(t *testing.T, file, src string, rt *LuaRuntime) (*Snapshot, error) {
	t.Helper()
	s, err := Load(file, []byte(src), LoadOptions{Registry: vaultRegistry(), LookupEnv: vaultLookup, Lua: rt})
	if err == nil {
		t.Cleanup(s.Close)
	}
	return s, err
}

// luaPlugin is a config with one vault-lua plugin running code.
func luaPlugin(code string) string {
	return "_format_version: \"3.0\"\nplugins:\n  - name: vault-lua\n    config:\n      access:\n        - |\n" +
		indent(code, "          ") + "\n"
}

func indent(s, by string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = by + l
	}
	return strings.Join(lines, "\n")
}

// serveVault runs the snapshot's global pipeline on a request logged to log.
func serveVault(t *testing.T, s *Snapshot, log *zap.Logger) *Exchange {
	t.Helper()
	x := NewExchange("req-1", Request{Method: "GET", Path: "/"}, log)
	if err := s.Global.Run(context.Background(), PhaseAccess, x, nil); err != nil {
		t.Fatal(err)
	}
	return x
}

// probeCode asks kong.vault.get for each reference expression (Lua) and
// stores v<i> (the value, absent when nil) and e<i> (the error). P is
// "{vault://" built at run time, as an attacker writes it: no reference
// appears literally in the code.
func probeCode(exprs ...string) string {
	var b strings.Builder
	b.WriteString(`local P = "{vault:" .. "//"` + "\n")
	for i, e := range exprs {
		b.WriteString("do local v, err = kong.vault.get(" + e + "); kong.ctx.shared.v" + itoa(i) + " = v; kong.ctx.shared.e" + itoa(i) + " = err end\n")
	}
	return b.String()
}

func itoa(i int) string { return string(rune('0' + i)) }

// wantRefused checks every probe was refused with exactly Kong's nil, err.
func wantRefused(t *testing.T, x *Exchange, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if v, ok := x.Shared["v"+itoa(i)]; ok {
			t.Errorf("probe %d: kong.vault.get returned a value (%d bytes), want nil", i, len(v.(string)))
		}
		if e := x.Shared["e"+itoa(i)]; e != refused {
			t.Errorf("probe %d: err = %v, want %q", i, e, refused)
		}
	}
}

// configDir makes dir/conf (the config's directory) and returns both.
func configDir(t *testing.T) (dir, conf string) {
	t.Helper()
	dir = t.TempDir()
	conf = filepath.Join(dir, "conf")
	if err := os.MkdirAll(conf, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir, conf
}

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestVaultLuaConcatenatedProcSelfEnvironRefused(t *testing.T) {
	if _, err := os.Stat("/proc/self/environ"); err != nil {
		t.Skip("no /proc/self/environ here")
	}
	_, conf := configDir(t)
	s, err := loadVault(t, filepath.Join(conf, "kong.yml"), luaPlugin(probeCode(
		`P .. "file//proc/self/environ}"`,
		`P .. "file/" .. "/proc/self/environ}"`,
		`"{" .. "vault:" .. "//file//proc/self/environ}"`,
	)), nil)
	if err != nil {
		t.Fatal(err)
	}
	wantRefused(t, serveVault(t, s, nil), 3)
}

func TestVaultLuaConcatenatedEtcPasswdRefused(t *testing.T) {
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Skip("no /etc/passwd here")
	}
	_, conf := configDir(t)
	s, err := loadVault(t, filepath.Join(conf, "kong.yml"), luaPlugin(probeCode(
		`P .. "file//etc/passwd}"`,
		`"{" .. "vault:" .. "//file//etc/passwd}"`,
	)), nil)
	if err != nil {
		t.Fatal(err)
	}
	wantRefused(t, serveVault(t, s, nil), 2)
}

func TestVaultLuaDotDotWalkRefused(t *testing.T) {
	dir, conf := configDir(t)
	writeFile(t, filepath.Join(dir, "outside.txt"), "outside-s3cr3t\n")
	s, err := loadVault(t, filepath.Join(conf, "kong.yml"), luaPlugin(probeCode(
		`P .. "file/../outside.txt}"`,
		`P .. "file/../../../../../../../etc/hostname}"`,
		`P .. "file/`+filepath.Join(dir, "outside.txt")+`}"`,
	)), nil)
	if err != nil {
		t.Fatal(err)
	}
	wantRefused(t, serveVault(t, s, nil), 3)
}

func TestVaultLuaArbitraryEnvRefused(t *testing.T) {
	_, conf := configDir(t)
	t.Setenv("SIDECALL_SECURITY_PROBE", "process-s3cr3t")
	// The config names API_TOKEN (and, through an env vault with a
	// prefix, KCS_...): neither lets Lua read another variable.
	src := "_format_version: \"3.0\"\nvaults:\n  - name: env\n    prefix: kcs\n    config: {prefix: OTHER_}\n" +
		"plugins:\n  - name: vault-lua\n    config:\n      header_name: \"{vault://env/api-token}\"\n" +
		"      template: '$(kong.vault.get(\"{vault:\" .. \"//env/sidecall-security-probe}\") or \"refused\")'\n" +
		"      access:\n        - |\n" + indent(probeCode(
		`P .. "env/other-secret}"`,
		`P .. "env/sidecall-security-probe}"`,
		`P .. "kcs/secret}"`,
		`P .. "env/home}"`,
	), "          ") + "\n"
	s, err := loadVault(t, filepath.Join(conf, "kong.yml"), src, nil)
	if err != nil {
		t.Fatal(err)
	}
	x := serveVault(t, s, nil)
	wantRefused(t, x, 4)
	if x.Shared["tmpl"] != "refused" {
		t.Errorf("template got %q (err %v), want the refusal", x.Shared["tmpl"], x.Shared["tmpl_err"])
	}
}

func TestVaultFileSymlinkOutsideConfigDirRefused(t *testing.T) {
	dir, conf := configDir(t)
	writeFile(t, filepath.Join(dir, "outside", "secret.txt"), "outside-s3cr3t\n")
	if err := os.Symlink(filepath.Join(dir, "outside", "secret.txt"), filepath.Join(conf, "link")); err != nil {
		t.Skipf("no symlinks: %v", err)
	}
	if err := os.Symlink(filepath.Join(dir, "outside"), filepath.Join(conf, "dirlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/proc/self", filepath.Join(conf, "self")); err != nil {
		t.Fatal(err)
	}
	// An fs vault whose directory holds a link out of it.
	if err := os.MkdirAll(filepath.Join(conf, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../outside/secret.txt", filepath.Join(conf, "secrets", "up")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(conf, "kong.yml")
	for _, c := range []struct{ vaults, ref, reason string }{
		{"", "{vault://file/link}", `vault reference "{vault://file/link}": file is outside the config directory`},
		{"", "{vault://file/dirlink/secret.txt}", `vault reference "{vault://file/dirlink/secret.txt}": file is outside the config directory`},
		{"", "{vault://file/self/environ}", `vault reference "{vault://file/self/environ}": file is outside the config directory`},
		{"vaults:\n  - name: fs\n    prefix: fsv\n    config: {prefix: secrets}\n", "{vault://fsv/up}", `vault reference "{vault://fsv/up}": file is outside the vault's directory`},
	} {
		// As a value, and written in Lua: both are load errors at their path.
		for _, where := range []struct{ src, at string }{
			{"_format_version: \"3.0\"\n" + c.vaults + "plugins:\n  - name: vault-lua\n    config:\n      header_name: \"" + c.ref + "\"\n", "plugins[0].config.header_name"},
			{"_format_version: \"3.0\"\n" + c.vaults + "plugins:\n  - name: vault-lua\n    config:\n      access: ['return kong.vault.get(\"" + c.ref + "\")']\n", "plugins[0].config.access[0]"},
		} {
			_, err := loadVault(t, file, where.src, nil)
			wantProblem(t, err, where.at, c.reason)
		}
	}
	// A symlink that stays inside (a Kubernetes Secret mount) still works.
	writeFile(t, filepath.Join(conf, "mnt", "..2024_01", "token"), "inside-s3cr3t\n")
	if err := os.Symlink("..2024_01", filepath.Join(conf, "mnt", "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/token", filepath.Join(conf, "mnt", "token")); err != nil {
		t.Fatal(err)
	}
	s, err := loadVault(t, file, luaPlugin(probeCode(`"{vault://file/mnt/token}"`)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if x := serveVault(t, s, nil); x.Shared["v0"] != "inside-s3cr3t" {
		t.Errorf("inside symlink: got %v, %v", x.Shared["v0"], x.Shared["e0"])
	}
}

// wantProblem checks err is a ConfigError with exactly one problem, at at
// with reason, and that no secret (file or env content) shows.
func wantProblem(t *testing.T, err error, at, reason string) {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Errorf("%s: want a ConfigError, got %v", at, err)
		return
	}
	if len(ce.Problems) != 1 || string(ce.Problems[0].Path) != at || ce.Problems[0].Reason != reason {
		t.Errorf("problems: %v\nwant one at %s: %s", ce.Problems, at, reason)
	}
	if msg := ce.Error(); strings.Contains(msg, "s3cr3t") || strings.Contains(msg, "root:") {
		t.Errorf("a secret leaks into the error: %s", msg)
	}
}

func TestVaultFileOutsideConfigDirIsALoadError(t *testing.T) {
	dir, conf := configDir(t)
	writeFile(t, filepath.Join(dir, "x"), "outside-s3cr3t\n")
	writeFile(t, filepath.Join(dir, "mounted", "s.txt"), "mounted-s3cr3t\n")
	file := filepath.Join(conf, "kong.yml")
	value := func(vaults, ref string) string {
		return "_format_version: \"3.0\"\n" + vaults + "plugins:\n  - name: vault-lua\n    config:\n      header_name: \"" + ref + "\"\n"
	}
	for _, ref := range []string{"{vault://file//etc/passwd}", "{vault://file/../x}", "{vault://file/" + filepath.Join(dir, "x") + "}", "{vault://file/./sub/../../x}"} {
		_, err := loadVault(t, file, value("", ref), nil)
		wantProblem(t, err, "plugins[0].config.header_name", `vault reference "`+ref+`": file is outside the config directory`)
	}
	// A declared fs vault's directory is allowed to the file vault too.
	fs := "vaults:\n  - name: fs\n    prefix: fsv\n    config: {prefix: " + filepath.Join(dir, "mounted") + "}\n"
	s, err := loadVault(t, file, value(fs, "{vault://file/"+filepath.Join(dir, "mounted", "s.txt")+"}")+
		"      access: ['kong.ctx.shared.v0 = kong.vault.get(\"{vault://fsv/s.txt}\")']\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if x := serveVault(t, s, nil); x.Shared["v0"] != "mounted-s3cr3t" {
		t.Errorf("fs vault from Lua: got %v", x.Shared["v0"])
	}
	_, err = loadVault(t, file, value(fs, "{vault://file/../x}"), nil)
	wantProblem(t, err, "plugins[0].config.header_name", `vault reference "{vault://file/../x}": file is outside the config directory and the fs vaults' directories`)
}

func TestVaultAllowedReferencesWorkFromLua(t *testing.T) {
	_, conf := configDir(t)
	writeFile(t, filepath.Join(conf, "secret.txt"), "file-s3cr3t\n")
	var denied atomic.Int64
	rt := NewLuaRuntime(lua.Options{})
	t.Cleanup(rt.Sandbox.Close)
	rt.OnVaultDenied = func() { denied.Add(1) }
	src := "_format_version: \"3.0\"\nplugins:\n  - name: vault-lua\n    config:\n" +
		"      header_name: \"{vault://env/api-token}\"\n" +
		"      template: 'Bearer $(kong.vault.get(\"{vault://env/tmpl-token}\"))'\n" +
		"      access:\n        - |\n" + indent(`
local s = kong.ctx.shared
s.named = kong.vault.get("{vault://env/" .. "api-token}") -- named by header_name
s.literal = kong.vault.get("{vault://file/secret.txt}")  -- written here
s.is_ref = kong.vault.is_reference("{vault://env/tmpl-token}")
`, "          ") + "\n"
	s, err := loadVault(t, filepath.Join(conf, "kong.yml"), src, rt)
	if err != nil {
		t.Fatal(err)
	}
	x := serveVault(t, s, nil)
	if x.Shared["named"] != "tok-s3cr3t" || x.Shared["literal"] != "file-s3cr3t" || x.Shared["is_ref"] != true || x.Shared["tmpl"] != "Bearer tmpl-s3cr3t" {
		t.Errorf("shared: %v", x.Shared)
	}
	if n := denied.Load(); n != 0 {
		t.Errorf("denied %d times, want 0", n)
	}
	// A reference in a template's literal text is still not resolved.
	_, err = loadVault(t, filepath.Join(conf, "kong.yml"), "plugins:\n  - name: vault-lua\n    config:\n      template: 'Bearer {vault://env/api-token} $(1)'\n", rt)
	wantProblem(t, err, "plugins[0].config.template", `a vault reference must be the whole value, got "Bearer {vault://env/api-token} $(1)"`)
	// One written in Lua must resolve: the error names it, never a value.
	_, err = loadVault(t, filepath.Join(conf, "kong.yml"), luaPlugin(`return kong.vault.get("{vault://env/no-such-var}")`), rt)
	wantProblem(t, err, "plugins[0].config.access[0]", `vault reference "{vault://env/no-such-var}": environment variable NO_SUCH_VAR is not set`)
}

func TestVaultDenialCountedAndLoggedWithoutValue(t *testing.T) {
	_, conf := configDir(t)
	var denied atomic.Int64
	rt := NewLuaRuntime(lua.Options{})
	t.Cleanup(rt.Sandbox.Close)
	rt.OnVaultDenied = func() { denied.Add(1) }
	s, err := loadVault(t, filepath.Join(conf, "kong.yml"), luaPlugin(`
local tok = kong.vault.get("{vault://env/api-token}")
local _, e1 = kong.vault.get("{vault://env/" .. tok .. "}")
local _, e2 = kong.vault.get("{vault:" .. "//file//etc/passwd}")
local _, e3 = kong.vault.get("not a reference " .. tok)
kong.ctx.shared.errs = {e1, e2, e3}
`), rt)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	x := serveVault(t, s, zap.New(core))
	if got := x.Shared["errs"]; len(got.([]any)) != 3 || got.([]any)[0] != refused || got.([]any)[1] != refused || got.([]any)[2] != "not a vault reference" {
		t.Errorf("errors: %v", got)
	}
	if n := denied.Load(); n != 2 {
		t.Errorf("denied %d times, want 2 (a non-reference is not counted)", n)
	}
	var got []string
	for _, e := range logs.All() {
		m := e.ContextMap()
		if e.Level != zapcore.WarnLevel || e.Message != "kong.vault.get refused a reference the config does not name" {
			t.Errorf("unexpected log: %s %s %v", e.Level, e.Message, m)
			continue
		}
		got = append(got, m["chunk"].(string)+" "+m["reference"].(string))
		for k, v := range m {
			if s, ok := v.(string); ok && strings.Contains(s, "tok-s3cr3t") {
				t.Errorf("log field %s shows the secret: %q", k, s)
			}
		}
	}
	want := "plugins[0].config.access[0] {vault://env/{vault://env/api-token}}\nplugins[0].config.access[0] {vault://file//etc/passwd}"
	if strings.Join(got, "\n") != want {
		t.Errorf("logs:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}
}

// Before this, references in Lua code were refused at load; now they are
// resolved, and one in any other value still must be the whole value.
func TestVaultLiteralReferencesInLuaLoad(t *testing.T) {
	_, conf := configDir(t)
	file := filepath.Join(conf, "kong.yml")
	s, err := loadVault(t, file, luaPlugin(`kong.ctx.shared.v = "Bearer " .. kong.vault.get("{vault://env/api-token}")`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if x := serveVault(t, s, nil); x.Shared["v"] != "Bearer tok-s3cr3t" {
		t.Errorf("got %v", x.Shared["v"])
	}
	_, err = loadVault(t, file, "plugins:\n  - name: vault-lua\n    config:\n      header_name: \"X-{vault://env/api-token}\"\n", nil)
	wantProblem(t, err, "plugins[0].config.header_name", `a vault reference must be the whole value, got "X-{vault://env/api-token}"`)
}
