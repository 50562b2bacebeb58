package plugins_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/plugins"
)

// FuzzConfigAllPlugins: any file, checked by every plugin sidecall ships
// (decoding and validation only, as sidecall validate does), loads or
// gives a ConfigError; nothing panics.
func FuzzConfigAllPlugins(f *testing.F) {
	for _, glob := range []string{"../examples/*.yaml", "../*/testdata/*.yaml", "../*/testdata/*/*.yaml", "../cmd/sidecall/demo.yaml"} {
		files, _ := filepath.Glob(glob)
		for _, file := range files {
			if b, err := os.ReadFile(file); err == nil {
				f.Add(b)
			}
		}
	}
	set := plugins.New(plugins.Options{})
	defer set.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := flows.Load("fuzz.yml", data, flows.LoadOptions{Registry: set.Registry, Lua: set.Lua, NoProvision: true,
			LookupEnv: func(string) (string, bool) { return "", false }})
		if err == nil {
			s.Close()
			return
		}
		var ce *flows.ConfigError
		if !errors.As(err, &ce) || len(ce.Problems) == 0 {
			t.Fatalf("want a ConfigError with problems, got %v", err)
		}
	})
}
