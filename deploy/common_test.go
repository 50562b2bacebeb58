package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	yaml3 "gopkg.in/yaml.v3"
)

// repoRoot is the module root: tests run in deploy/.
func repoRoot(t testing.TB) string {
	t.Helper()
	abs, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// helmBin finds helm: $SIDECALL_HELM, then .tools/bin/helm, then PATH. Without helm the test
// skips locally and fails in CI, where .ci/run installs it.
func helmBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SIDECALL_HELM"); p != "" {
		return p
	}
	if p := filepath.Join(repoRoot(t), ".tools", "bin", "helm"); fileExists(p) {
		return p
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	msg := "helm not found: set SIDECALL_HELM or run `GOBIN=$PWD/.tools/bin go install helm.sh/helm/v3/cmd/helm@v3.22.0`"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// chartDir is the Helm chart's folder.
func chartDir(t testing.TB) string { return filepath.Join(repoRoot(t), "deploy", "helm", "sidecall") }

// valuesFiles are the chart's CI values files (helm's ci/ convention).
func valuesFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir(t), "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("want at least 4 values files in ci/, got %d", len(files))
	}
	return files
}

// helmTemplate renders the chart with a values file (empty: defaults) in namespace "shop".
func helmTemplate(t testing.TB, values string, extra ...string) ([]byte, error) {
	t.Helper()
	args := []string{"template", "sc", chartDir(t), "--namespace", "shop", "--kube-version", "1.33.0"}
	if values != "" {
		args = append(args, "-f", values)
	}
	args = append(args, extra...)
	cmd := exec.Command(helmBin(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		return nil, errors.New(strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// splitDocs splits a multi-document YAML stream, dropping empty documents.
func splitDocs(t testing.TB, data []byte) [][]byte {
	t.Helper()
	dec := yaml3.NewDecoder(bytes.NewReader(data))
	var docs [][]byte
	for {
		var n yaml3.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("invalid YAML stream: %v", err)
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yaml3.ScalarNode && n.Content[0].Tag == "!!null") {
			continue
		}
		b, err := yaml3.Marshal(&n)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	return docs
}
