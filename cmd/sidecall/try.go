package main

import (
	"fmt"
	"io"
)

func cmdTry(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "sidecall try: not wired yet")
	return 2
}

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "sidecall demo: not wired yet")
	return 2
}
