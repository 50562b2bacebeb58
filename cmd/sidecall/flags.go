package main

import (
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
	return fs
}

// parseFlags parses args, then fills unset flags from the environment. A flag
// given in args wins over its variable. An environment value the flag cannot
// take is reported on the FlagSet's output as
// "sidecall CMD: SIDECALL_NAME=VALUE: REASON" (fs.Parse reports bad args itself).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["c"] || set["config"] { // -c is an alias of --config
		set["c"], set["config"] = true, true
	}
	var err error
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
