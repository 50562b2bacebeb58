package flowcallout_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var placeholder = regexp.MustCompile(`\{\{[A-Z_]+\}\}`)

// testdataFile returns testdata/name with its {{NAME}} placeholders
// replaced: oldnew are pairs as for strings.NewReplacer, each old starting
// with a placeholder. A placeholder left without a value is a test bug, so
// it panics, as it does when the file cannot be read.
func testdataFile(name string, oldnew ...string) string {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		panic(err)
	}
	src := string(b)
	for _, p := range placeholder.FindAllString(src, -1) {
		found := false
		for i := 0; i < len(oldnew); i += 2 {
			if strings.HasPrefix(oldnew[i], p) {
				found = true
			}
		}
		if !found {
			panic("testdata/" + name + ": no value for " + p)
		}
	}
	return strings.NewReplacer(oldnew...).Replace(src)
}
