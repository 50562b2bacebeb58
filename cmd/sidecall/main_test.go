package main

import (
	"os"
	"os/signal"
	"syscall"
	"testing"
)

// TestMain keeps SIGTERM and SIGHUP from killing the test binary: the serve
// and try tests signal this process, and a signal landing while no command
// has its handler installed would otherwise end every test at once.
func TestMain(m *testing.M) {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
	os.Exit(m.Run())
}
