package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/plugins"
)

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("validate", stderr)
	file := fs.String("c", "", "config file (SIDECALL_CONFIG)")
	fs.StringVar(file, "config", "", "config file")
	luaMode := fs.String("untrusted-lua", "sandbox", untrustedLuaUsage)
	strict := fs.Bool("strict", false, "treat warnings (fields and sections sidecall ignores, budgets over --envoy-max-message-timeout) as errors: exit 1")
	var et envoyTimeouts
	et.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return flagsExit(err, stdout)
	}
	if flag, err := et.check(); err != nil {
		fmt.Fprintf(stderr, "sidecall validate: %s: %v\n", flag, err)
		return 2
	}
	if *file == "" && fs.NArg() > 0 {
		*file = fs.Arg(0)
	}
	if *file == "" {
		fmt.Fprintln(stderr, "sidecall validate: -c FILE is required")
		return 2
	}
	snap, err := flows.LoadFile(*file, flows.LoadOptions{Registry: plugins.New(plugins.Options{}).Registry, UntrustedLua: *luaMode, NoProvision: true})
	if err != nil {
		var ce *flows.ConfigError
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				fmt.Fprintln(stdout, p.String())
			}
		} else {
			fmt.Fprintf(stdout, "%s: %v\n", *file, err)
		}
		return 1
	}
	defer snap.Close()
	nPlugins := 0
	for _, r := range snap.Routes {
		nPlugins += len(r.Pipeline.Instances)
	}
	warnings := append(append([]string(nil), snap.Warnings...), budgetWarnings(snap, et.max)...)
	for _, w := range warnings {
		fmt.Fprintf(stderr, "%s: warning: %s\n", *file, w)
	}
	if *strict && len(warnings) > 0 {
		fmt.Fprintf(stdout, "%s: %d warnings (--strict)\n", *file, len(warnings))
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d services, %d routes, %d global plugins)\n", *file, len(snap.Services), len(snap.Routes), len(snap.Global.Instances))
	return 0
}
