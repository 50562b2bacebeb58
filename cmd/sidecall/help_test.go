package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestSubcommandHelp: --help/-h of a subcommand, and "help CMD", print that
// subcommand's usage on stdout and exit 0.
func TestSubcommandHelp(t *testing.T) {
	for _, argv := range [][]string{
		{"serve", "--help"}, {"validate", "-h"}, {"try", "-help"}, {"demo", "--help"},
		{"help", "serve"}, {"help", "validate"}, {"serve", "-c", "x.yml", "--help"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(argv, &stdout, &stderr)
		cmd := argv[0]
		if cmd == "help" {
			cmd = argv[1]
		}
		if code != 0 || !strings.HasPrefix(stdout.String(), "usage: sidecall "+cmd+" [flags]") ||
			!strings.Contains(stdout.String(), "-lua-timeout") && cmd != "validate" || stderr.Len() != 0 {
			t.Errorf("%q: exit %d\nstdout %q\nstderr %q", argv, code, stdout.String(), stderr.String())
		}
	}
}

func TestHelpUnknownCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"help", "nope"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), `unknown command "nope"`) {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}

// TestBadFlagStillExit2: a bad flag keeps its report and usage on stderr.
func TestBadFlagStillExit2(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"validate", "--nope"}, &stdout, &stderr); code != 2 || stdout.Len() != 0 ||
		!strings.Contains(stderr.String(), "flag provided but not defined: -nope") || !strings.Contains(stderr.String(), "usage: sidecall validate") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}
