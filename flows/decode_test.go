package flows

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestStringFieldRefusesNumber: header_name: 42 is an integer where a string
// is wanted; header_name: "42" is a string.
func TestStringFieldRefusesNumber(t *testing.T) {
	src := `_format_version: "3.0"
plugins:
  - name: top-plugin
    config:
      header_name: 42
`
	_, err := Load("kong.yml", []byte(src), LoadOptions{Registry: testRegistry()})
	if err == nil || !strings.Contains(err.Error(), "kong.yml:5: plugins[0].config.header_name: must be a string, got integer 42") {
		t.Fatalf("got %v", err)
	}
	mustLoad(t, strings.Replace(src, "42", `"42"`, 1))
	mustLoad(t, strings.Replace(src, "42", `'4.5'`, 1))
}

// TestOneProblemPerPath: read_timeout: "2s" fails to decode; the range check
// of the zero it leaves behind is not reported too.
func TestOneProblemPerPath(t *testing.T) {
	src := `_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:1
    read_timeout: "2s"
`
	_, err := Load("kong.yml", []byte(src), LoadOptions{Registry: testRegistry()})
	want := `kong.yml:5: services[0].read_timeout: must be an integer, got string "2s"`
	if err == nil || err.Error() != want {
		t.Fatalf("got\n%v\nwant\n%s", err, want)
	}
}

// TestLuaSyntaxErrorLineInBlock: a syntax error in a | block is reported
// at the file line of the bad Lua line, not at the key.
func TestLuaSyntaxErrorLineInBlock(t *testing.T) {
	src := `_format_version: "3.0"
plugins:
  - name: top-plugin
    config:
      header_name: |
        local a = 1

        local = 2
`
	b := NewBuilder("kong.yml")
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Plugins []struct {
			Name   string `yaml:"name"`
			Config struct {
				HeaderName string `yaml:"header_name"`
			} `yaml:"config"`
		} `yaml:"plugins"`
		FormatVersion string `yaml:"_format_version"`
	}
	b.Decode(&doc, "", &cfg)
	at := Path("plugins[0].config.header_name")
	if b.Lua(cfg.Plugins[0].Config.HeaderName, at) != nil {
		t.Fatal("want nil chunk")
	}
	ps := b.Problems()
	if len(ps) != 1 || ps[0].String() != "kong.yml:8: plugins[0].config.header_name: lua syntax error: syntax error near '='" {
		t.Fatalf("problems: %v", ps)
	}
}
