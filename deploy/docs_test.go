package deploy

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"

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

var (
	mdFence      = regexp.MustCompile("^\\s{0,3}(```|~~~)")
	mdHeading    = regexp.MustCompile(`^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$`)
	mdInlineLink = regexp.MustCompile(`!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	mdRefDef     = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s+"[^"]*")?\s*$`)
	mdCodeSpan   = regexp.MustCompile("`[^`]*`")
	mdHTMLAnchor = regexp.MustCompile(`<a\s+[^>]*(?:name|id)="([^"]+)"`)
	mdScheme     = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
	mdLineAnchor = regexp.MustCompile(`^L\d+(-L\d+)?$`)
	mdTagOrLink  = regexp.MustCompile(`<[^>]+>|!?\[([^\]]*)\]\([^)]*\)`)
)

// githubSlug is the anchor GitHub gives a heading (github-slugger): the heading's text,
// lower-cased, without characters other than letters, digits, marks, connector
// punctuation (_), spaces and hyphens, each space a hyphen.
func githubSlug(heading string) string {
	text := mdTagOrLink.ReplaceAllString(heading, "$1") // [text](url) renders as text
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(text)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-', unicode.IsLetter(r), unicode.IsNumber(r), unicode.In(r, unicode.M, unicode.Pc):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// mdDoc is what a Markdown file offers and asks for: its anchors and its link targets.
type mdDoc struct {
	anchors map[string]bool
	links   []mdLinkAt
}

type mdLinkAt struct {
	line   int
	target string
}

// parseMarkdown reads headings (with GitHub's -1, -2 suffixes for repeats), HTML anchors,
// inline links and reference definitions, outside fenced code blocks.
func parseMarkdown(src string) mdDoc {
	d := mdDoc{anchors: map[string]bool{}}
	seen := map[string]int{}
	fence := ""
	for i, line := range strings.Split(src, "\n") {
		if m := mdFence.FindStringSubmatch(line); m != nil {
			switch fence {
			case "":
				fence = m[1]
			case m[1]:
				fence = ""
			}
			continue
		}
		if fence != "" {
			continue
		}
		if m := mdHeading.FindStringSubmatch(line); m != nil {
			slug := githubSlug(m[2])
			if n := seen[slug]; n > 0 {
				d.anchors[slug+"-"+strconv.Itoa(n)] = true
			} else {
				d.anchors[slug] = true
			}
			seen[slug]++
		}
		for _, m := range mdHTMLAnchor.FindAllStringSubmatch(line, -1) {
			d.anchors[m[1]] = true
		}
		text := mdCodeSpan.ReplaceAllStringFunc(line, func(code string) string {
			if strings.Contains(code, "](") {
				return "" // a link written as code is not a link
			}
			return code
		})
		for _, m := range mdInlineLink.FindAllStringSubmatch(text, -1) {
			d.links = append(d.links, mdLinkAt{i + 1, m[1]})
		}
		if m := mdRefDef.FindStringSubmatch(text); m != nil {
			d.links = append(d.links, mdLinkAt{i + 1, m[1]})
		}
	}
	return d
}

// checkMarkdownLinks checks the relative links of files (paths relative to root): each
// names an existing file or folder inside root (a link that climbs out of root would be
// broken wherever the repository is read on its own), and each #anchor an
// existing heading of the Markdown file it points to (or a GitHub #L line anchor of another
// file). It returns what it visited, file to resolved targets, for further checks.
func checkMarkdownLinks(root string, files []string) (map[string][]string, []error) {
	var errs []error
	docs := map[string]mdDoc{}
	doc := func(abs string) (mdDoc, error) {
		if d, ok := docs[abs]; ok {
			return d, nil
		}
		b, err := os.ReadFile(abs)
		if err != nil {
			return mdDoc{}, err
		}
		d := parseMarkdown(string(b))
		docs[abs] = d
		return d, nil
	}
	targets := map[string][]string{}
	for _, rel := range files {
		abs := filepath.Join(root, rel)
		d, err := doc(abs)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, l := range d.links {
			at := fmt.Sprintf("%s:%d: link %q", rel, l.line, l.target)
			if l.target == "" {
				errs = append(errs, fmt.Errorf("%s: empty", at))
				continue
			}
			if mdScheme.MatchString(l.target) || strings.HasPrefix(l.target, "//") {
				continue // absolute URL
			}
			p, anchor, _ := strings.Cut(l.target, "#")
			p, err := url.PathUnescape(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %v", at, err))
				continue
			}
			dest := abs
			if p != "" {
				if strings.HasPrefix(p, "/") {
					errs = append(errs, fmt.Errorf("%s: root-relative, write it relative to %s", at, filepath.Dir(rel)))
					continue
				}
				dest = filepath.Join(filepath.Dir(abs), p)
				if r, err := filepath.Rel(root, dest); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
					errs = append(errs, fmt.Errorf("%s: leaves the repository", at))
					continue
				}
				if !fileExists(dest) {
					errs = append(errs, fmt.Errorf("%s: no such file %s", at, dest))
					continue
				}
			}
			targets[rel] = append(targets[rel], dest)
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(dest, ".md") {
				if !mdLineAnchor.MatchString(anchor) {
					errs = append(errs, fmt.Errorf("%s: #%s on a file that is not Markdown", at, anchor))
				}
				continue
			}
			td, err := doc(dest)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %v", at, err))
				continue
			}
			if !td.anchors[anchor] {
				errs = append(errs, fmt.Errorf("%s: no heading with anchor #%s in %s", at, anchor, dest))
			}
		}
	}
	return targets, errs
}

// docFiles are README.md, deploy/README.md and docs/*.md, relative to root.
func docFiles(t *testing.T, root string) []string {
	t.Helper()
	guides, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(guides) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	files := []string{"README.md", filepath.Join("deploy", "README.md")}
	for _, g := range guides {
		files = append(files, filepath.Join("docs", filepath.Base(g)))
	}
	return files
}

// TestDocLinks: every relative link in README.md, deploy/README.md and docs/*.md names an
// existing file, and every #anchor an existing heading (GitHub's slug rules).
func TestDocLinks(t *testing.T) {
	root := repoRoot(t)
	targets, errs := checkMarkdownLinks(root, docFiles(t, root))
	for _, err := range errs {
		t.Error(err)
	}
	if len(targets["README.md"]) == 0 {
		t.Error("found no links in README.md: the parser is broken")
	}
}

// TestReadmeLinksGuides: README.md links every guide in docs/, the install guides and the
// migration guide included.
func TestReadmeLinksGuides(t *testing.T) {
	root := repoRoot(t)
	targets, _ := checkMarkdownLinks(root, []string{"README.md"})
	linked := map[string]bool{}
	for _, dest := range targets["README.md"] {
		linked[dest] = true
	}
	want := map[string]bool{}
	for _, name := range []string{"install-envoy.md", "install-istio.md", "install-helm.md", "install-envoy-gateway.md", "migration.md"} {
		want[filepath.Join(root, "docs", name)] = true
	}
	guides, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	for _, g := range guides {
		want[g] = true
	}
	for g := range want {
		if !fileExists(g) {
			t.Errorf("guide %s is missing", g)
		}
		if !linked[g] {
			t.Errorf("README.md does not link %s", g)
		}
	}
}

// TestGithubSlug: anchors as GitHub makes them.
func TestGithubSlug(t *testing.T) {
	for heading, want := range map[string]string{
		"3. Secrets":                      "3-secrets",
		"Which route a request runs":      "which-route-a-request-runs",
		"`sidecall serve` flags & env":    "sidecall-serve-flags--env",
		"Kafka (request/reply)":           "kafka-requestreply",
		"The [chart](deploy/helm) values": "the-chart-values",
		"snake_case and dash-case":        "snake_case-and-dash-case",
		"Über große Dinge?":               "über-große-dinge",
		"v1.2 — what's new":               "v12--whats-new",
	} {
		if got := githubSlug(heading); got != want {
			t.Errorf("githubSlug(%q) = %q, want %q", heading, got, want)
		}
	}
}

// TestDocLinkCheckFails: the checker catches each kind of broken link and accepts good ones.
func TestDocLinkCheckFails(t *testing.T) {
	root := t.TempDir()
	write := func(rel, src string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("docs/guide.md", "# Guide\n\n## 1. Install\n\n## Repeat\n\n## Repeat\n\n```sh\n# not a heading\n```\n")
	write("deploy/x.yaml", "a: 1\n")
	good := []string{
		"[g](docs/guide.md)", "[g](docs/guide.md#1-install)", "[g](docs/guide.md#repeat-1)", "[d](deploy/)",
		"[y](deploy/x.yaml#L1)", "[w](https://example.com/nope)", "[m](mailto:a@b.c)", "[self](#top)",
		"`[not](a-link.md)`", "[t](docs/guide.md \"title\")", "[r]: docs/guide.md#guide",
		"```\n[fenced](nowhere.md)\n```", "`code` then [g](docs/guide.md), [`d`](deploy/)",
	}
	bad := []string{
		"[g](docs/gide.md)", "[g](docs/guide.md#2-install)", "[g](docs/guide.md#repeat-2)",
		"[g](docs/guide.md#not-a-heading)", "[y](deploy/x.yaml#top)", "[up](../elsewhere.md)",
		"[abs](/docs/guide.md)", "[self](#nope)", "[r]: docs/none.md", "![img](img.png)",
		"`code` then [g](docs/none.md), [`d`](deploy/)",
	}
	for i, link := range good {
		name := fmt.Sprintf("good%d.md", i)
		write(name, "# Top\n\n"+link+"\n")
		if _, errs := checkMarkdownLinks(root, []string{name}); len(errs) != 0 {
			t.Errorf("%s: %v", link, errs)
		}
	}
	for i, link := range bad {
		name := fmt.Sprintf("bad%d.md", i)
		write(name, "# Top\n\n"+link+"\n")
		if _, errs := checkMarkdownLinks(root, []string{name}); len(errs) != 1 {
			t.Errorf("%s: %d errors, want 1: %v", link, len(errs), errs)
		}
	}
}
