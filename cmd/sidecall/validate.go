package main

import (
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/plugins"
)

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("validate", stderr)
	file := fs.String("c", "", "config file (SIDECALL_CONFIG)")
	fs.StringVar(file, "config", "", "config file")
	luaMode := fs.String("untrusted-lua", "sandbox", untrustedLuaUsage)
	strict := fs.Bool("strict", false, "treat warnings (fields and sections sidecall ignores, budgets over --envoy-max-message-timeout) as errors: exit 1")
	unsupported := fs.String("unsupported-plugins", "error", unsupportedPluginsUsage)
	offline := fs.Bool("offline", false, "check vault references' syntax and that their vault exists without reading any secret (CI without the secrets); checks of the values they stand for are skipped (SIDECALL_OFFLINE)")
	var et envoyTimeouts
	et.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return flagsExit(err, stdout)
	}
	if flag, err := et.check(); err != nil {
		fmt.Fprintf(stderr, "sidecall validate: %s: %v\n", flag, err)
		return 2
	}
	if err := flows.CheckUnsupportedPlugins(*unsupported); err != nil {
		fmt.Fprintln(stderr, "sidecall validate: --unsupported-plugins:", err)
		return 2
	}
	if *file == "" && fs.NArg() > 0 {
		*file = fs.Arg(0)
	}
	if *file == "" {
		fmt.Fprintln(stderr, "sidecall validate: -c FILE is required")
		return 2
	}
	snap, err := flows.LoadFile(*file, flows.LoadOptions{Registry: plugins.New(plugins.Options{}).Registry, UntrustedLua: *luaMode, NoProvision: true,
		UnsupportedPlugins: *unsupported, Offline: *offline})
	if err != nil {
		var ce *flows.ConfigError
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				fmt.Fprintln(stdout, p.String())
			}
			printWarnings(stderr, ce.Warnings)
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
	printWarnings(stderr, snap.WarningsAt)
	budget := budgetWarnings(snap, et.max)
	for _, w := range budget {
		fmt.Fprintf(stderr, "%s: warning: %s\n", *file, w)
	}
	if n := len(snap.WarningsAt) + len(budget); *strict && n > 0 {
		fmt.Fprintf(stdout, "%s: %d warnings (--strict)\n", *file, n)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d services, %d routes, %d global plugins)\n", *file, len(snap.Services), len(snap.Routes), len(snap.Global.Instances))
	return 0
}

const unsupportedPluginsUsage = "an enabled plugin sidecall does not run: error refuses the file; warn skips it with a warning naming what does its job in Envoy (SIDECALL_UNSUPPORTED_PLUGINS)"

// printWarnings writes FILE:LINE: PATH: warning: REASON lines in file order.
func printWarnings(w io.Writer, ws []flows.FieldError) {
	ws = append([]flows.FieldError(nil), ws...)
	sort.SliceStable(ws, func(i, j int) bool { return ws[i].Line < ws[j].Line })
	for _, x := range ws {
		fmt.Fprintln(w, x.Warning())
	}
}
