package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// newFlags returns a FlagSet whose unset flags fall back to SIDECALL_<FLAG>.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: sidecall %s [flags]\n\nflags:\n", name)
		fs.PrintDefaults()
	}
	return fs
}

// helpError is parseFlags' answer to -h/--help: the usage text, to be printed
// on stdout. It matches flag.ErrHelp.
type helpError struct{ usage string }

func (e *helpError) Error() string        { return flag.ErrHelp.Error() }
func (e *helpError) Is(target error) bool { return target == flag.ErrHelp }

// flagsExit is the exit code of a command whose parseFlags failed with err:
// 0 after printing the usage on stdout for -h/--help, 2 otherwise (fs.Parse
// already reported the problem on stderr).
func flagsExit(err error, stdout io.Writer) int {
	var h *helpError
	if errors.As(err, &h) {
		fmt.Fprint(stdout, h.usage)
		return 0
	}
	return 2
}

// parseFlags parses args, then fills unset flags from the environment. A flag
// given in args wins over its variable. An environment value the flag cannot
// take is reported on the FlagSet's output as
// "sidecall CMD: SIDECALL_NAME=VALUE: REASON" (fs.Parse reports bad args itself).
//
// -h/--help returns a *helpError carrying the usage instead of printing it on
// the FlagSet's output (see flagsExit).
func parseFlags(fs *flag.FlagSet, args []string) error {
	var buf bytes.Buffer
	out := fs.Output()
	fs.SetOutput(&buf)
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		return &helpError{usage: buf.String()}
	}
	io.Copy(out, &buf)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["c"] || set["config"] { // -c is an alias of --config
		set["c"], set["config"] = true, true
	}
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		env := "SIDECALL_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if f.Name == "c" {
			return // --config reads SIDECALL_CONFIG
		}
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%s: invalid value for --%s: %w", env, v, f.Name, e)
				fmt.Fprintf(fs.Output(), "sidecall %s: %v\n", fs.Name(), err)
			}
		}
	})
	return err
}
