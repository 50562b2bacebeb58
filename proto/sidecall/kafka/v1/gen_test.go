package kafkav1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestGeneratedCodeIsFresh regenerates the Go code with protoc and the
// protoc-gen-go of go.mod's protobuf version and compares it with the
// committed file. The protoc version comment is ignored.
func TestGeneratedCodeIsFresh(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("protoc not installed; CI must run this test (apt-get install protobuf-compiler)")
		}
		t.Skip("protoc not installed (apt-get install protobuf-compiler); .ci/run installs it")
	}
	_, self, _, _ := runtime.Caller(0)
	dir := filepath.Dir(self)
	protoDir := filepath.Join(dir, "..", "..", "..")
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "protoc-gen-go"), "google.golang.org/protobuf/cmd/protoc-gen-go")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building protoc-gen-go: %v\n%s", err, out)
	}
	out := t.TempDir()
	gen := exec.Command(filepath.Join(protoDir, "gen.sh"), out)
	gen.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	if o, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("gen.sh: %v\n%s", err, o)
	}
	for _, name := range []string{"envelope.pb.go"} {
		want, err := os.ReadFile(filepath.Join(out, "sidecall", "kafka", "v1", name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dropProtocVersion(got), dropProtocVersion(want)) {
			t.Errorf("%s is stale: run proto/gen.sh (make proto) and commit the result", name)
		}
	}
}

func dropProtocVersion(b []byte) []byte {
	lines := strings.Split(string(b), "\n")
	keep := lines[:0]
	for _, l := range lines {
		if strings.HasPrefix(l, "// \tprotoc ") {
			continue
		}
		keep = append(keep, l)
	}
	return []byte(strings.Join(keep, "\n"))
}
