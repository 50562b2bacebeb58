// Package bench holds sidecall's benchmark suite. `make bench` runs
// bench/cmd/benchreport, which builds the binaries, measures each scenario
// against a floor measured in the same run, and writes bench/RESULTS.md.
package bench
