package flows

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// HTTPError is an error that answers the client with Status and a JSON
// {"message": Message, "request_id": ...} body. The processor renders it.
type HTTPError struct {
	Status  int
	Message string
	Err     error
	Headers Headers // extra response headers, optional
}

func (e *HTTPError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, e.Message, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Message)
}

func (e *HTTPError) Unwrap() error { return e.Err }

// Errorf returns an HTTPError with a formatted message.
func Errorf(status int, format string, args ...any) *HTTPError {
	return &HTTPError{Status: status, Message: fmt.Sprintf(format, args...)}
}

// AsHTTPError turns any error into an HTTPError (500 unless it is one).
func AsHTTPError(err error) *HTTPError {
	var he *HTTPError
	if errors.As(err, &he) {
		return he
	}
	return &HTTPError{Status: 500, Message: "internal error", Err: err}
}

// Path is a config field path such as plugins[2].config.callouts[0].request.url.
type Path string

// Key returns the path of a map key or struct field below p.
func (p Path) Key(k string) Path {
	if p == "" {
		return Path(k)
	}
	return p + "." + Path(k)
}

// Index returns the path of a list element below p.
func (p Path) Index(i int) Path { return p + Path("["+strconv.Itoa(i)+"]") }

// FieldError is one config problem.
type FieldError struct {
	File   string
	Line   int
	Path   Path
	Reason string
}

func (e FieldError) String() string {
	p := e.Path
	if p == "" {
		p = "(root)"
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, p, e.Reason)
}

// Warning formats e as a warning: FILE:LINE: PATH: warning: REASON.
func (e FieldError) Warning() string {
	p := e.Path
	if p == "" {
		p = "(root)"
	}
	return fmt.Sprintf("%s:%d: %s: warning: %s", e.File, e.Line, p, e.Reason)
}

// message is PATH: REASON, or REASON for the whole file (for logs).
func (e FieldError) message() string {
	if e.Path == "" {
		return e.Reason
	}
	return string(e.Path) + ": " + e.Reason
}

// ConfigError holds every problem found in a config file.
type ConfigError struct {
	Problems []FieldError
	// Warnings are what the load would have warned about, so a failed
	// validate still says everything in one run.
	Warnings []FieldError
}

func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func (e *ConfigError) sort() {
	sort.SliceStable(e.Problems, func(i, j int) bool {
		if e.Problems[i].Line != e.Problems[j].Line {
			return e.Problems[i].Line < e.Problems[j].Line
		}
		return e.Problems[i].Path < e.Problems[j].Path
	})
}

// firstPerPath keeps only the first problem recorded at each field path: a
// later one (a range check of a value that failed to decode, say) follows
// from it. Problems of the whole file (path "") are all kept.
func (e *ConfigError) firstPerPath() {
	seen := map[Path]bool{}
	out := e.Problems[:0:0]
	for _, p := range e.Problems {
		if p.Path != "" {
			if seen[p.Path] {
				continue
			}
			seen[p.Path] = true
		}
		out = append(out, p)
	}
	e.Problems = out
}
