// Command sidecall serves Envoy as an ext_proc processor: Kong's
// request-callout, Apigee's FlowCallout and Kafka request-reply beside Envoy.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `usage: sidecall <command> [flags]

commands:
  serve     serve Envoy's ext_proc API (-c FILE)
  validate  check a config file without touching the network (-c FILE)
  try       play Envoy in-process in front of an upstream (-c FILE --upstream URL)
  demo      run everything on embedded defaults and print curl commands
  version   print the version
  help      help COMMAND (or COMMAND --help) prints that command's flags
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stdout, stderr)
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "try":
		return cmdTry(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "--help":
		if len(args) > 1 && args[0] == "help" {
			switch args[1] {
			case "serve", "validate", "try", "demo":
				return run([]string{args[1], "--help"}, stdout, stderr)
			case "version", "help":
			default:
				fmt.Fprintf(stderr, "sidecall: unknown command %q\n%s", args[1], usage)
				return 2
			}
		}
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sidecall: unknown command %q\n%s", args[0], usage)
	return 2
}
