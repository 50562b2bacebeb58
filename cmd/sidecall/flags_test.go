package main

import (
	"strings"
	"testing"
	"time"
)

// TestEnvFlagUnparsable: a SIDECALL_<FLAG> value the flag cannot take exits 2
// with one line naming the variable, its value and why, for every command
// that reads flags from the environment.
func TestEnvFlagUnparsable(t *testing.T) {
	cases := []struct {
		cmd, env, value, reason string
	}{
		{"serve", "SIDECALL_LUA_TIMEOUT", "soon", "invalid value for --lua-timeout: parse error"},
		{"serve", "SIDECALL_MAX_RECV_MSG_SIZE", "big", "invalid value for --max-recv-msg-size: parse error"},
		{"serve", "SIDECALL_DRAIN_TIMEOUT", "20", "invalid value for --drain-timeout: parse error"},
		{"try", "SIDECALL_LUA_TIMEOUT", "soon", "invalid value for --lua-timeout: parse error"},
		{"demo", "SIDECALL_LUA_TIMEOUT", "1 s", "invalid value for --lua-timeout: parse error"},
	}
	for _, c := range cases {
		t.Run(c.cmd+"/"+c.env, func(t *testing.T) {
			t.Setenv(c.env, c.value)
			var stdout, stderr syncBuf
			// No -c: the environment is read before the command checks its
			// required flags, so the bad value is what stops it.
			code := run([]string{c.cmd}, &stdout, &stderr)
			want := "sidecall " + c.cmd + ": " + c.env + "=" + c.value + ": " + c.reason + "\n"
			if code != 2 || stderr.String() != want {
				t.Errorf("exit %d, stderr %q; want exit 2, stderr %q", code, stderr.String(), want)
			}
		})
	}
}

// TestFlagWinsOverEnv: a flag given on the command line wins over its
// variable, which is then not even parsed; an unset flag takes the variable.
func TestFlagWinsOverEnv(t *testing.T) {
	t.Setenv("SIDECALL_LUA_TIMEOUT", "soon") // would fail if read
	t.Setenv("SIDECALL_DRAIN_TIMEOUT", "7s")
	t.Setenv("SIDECALL_CONFIG", "/from/env.yml")
	t.Setenv("SIDECALL_LOG_LEVEL", "debug")
	t.Setenv("SIDECALL_MAX_RECV_MSG_SIZE", "1024")
	var stderr syncBuf
	fs := newFlags("serve", &stderr)
	var f serveFlags
	f.register(fs)
	err := parseFlags(fs, []string{"-c", "/from/flag.yml", "--lua-timeout", "3ms", "--log-level=warn"})
	if err != nil {
		t.Fatalf("parseFlags: %v (stderr %q)", err, stderr.String())
	}
	if stderr.String() != "" {
		t.Errorf("stderr %q, want nothing", stderr.String())
	}
	if f.config != "/from/flag.yml" {
		t.Errorf("config %q: -c must win over SIDECALL_CONFIG", f.config)
	}
	if f.luaTimeout != 3*time.Millisecond {
		t.Errorf("lua-timeout %s, want the flag's 3ms", f.luaTimeout)
	}
	if f.logLevel != "warn" {
		t.Errorf("log-level %q, want the flag's warn", f.logLevel)
	}
	if f.drain != 7*time.Second {
		t.Errorf("drain-timeout %s, want SIDECALL_DRAIN_TIMEOUT's 7s", f.drain)
	}
	if f.maxRecv != 1024 {
		t.Errorf("max-recv-msg-size %d, want SIDECALL_MAX_RECV_MSG_SIZE's 1024", f.maxRecv)
	}

	// --config (the long form) also wins over SIDECALL_CONFIG; without
	// either flag the variable is used.
	for args, want := range map[string]string{"--config=/long.yml": "/long.yml", "": "/from/env.yml"} {
		fs := newFlags("serve", &stderr)
		var f serveFlags
		f.register(fs)
		var argv []string
		if args != "" {
			argv = []string{args}
		}
		t.Setenv("SIDECALL_LUA_TIMEOUT", "5ms")
		if err := parseFlags(fs, argv); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if f.config != want {
			t.Errorf("%q: config %q, want %q", args, f.config, want)
		}
	}
}

// TestBadFlagArgStillReported: a bad value on the command line is reported
// once, by the flag package, and the environment is not consulted.
func TestBadFlagArgStillReported(t *testing.T) {
	t.Setenv("SIDECALL_MAX_RECV_MSG_SIZE", "big")
	var stdout, stderr syncBuf
	code := run([]string{"serve", "--lua-timeout", "soon"}, &stdout, &stderr)
	out := stderr.String()
	if code != 2 || !strings.Contains(out, `invalid value "soon" for flag -lua-timeout`) {
		t.Errorf("exit %d, stderr %q", code, out)
	}
	if strings.Contains(out, "SIDECALL_MAX_RECV_MSG_SIZE") {
		t.Errorf("the environment was read after a bad argument: %q", out)
	}
}
