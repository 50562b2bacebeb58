package httpx

import "testing"

func TestValidHeaderName(t *testing.T) {
	for _, s := range []string{"x-request-id", "X_Custom.1", "a!#$%&'*+-.^_`|~"} {
		if !ValidHeaderName(s) {
			t.Errorf("%q: want valid", s)
		}
	}
	for _, s := range []string{"", "a b", "a:b", "a\r\nb", "é", "(x)", "a/b", "a\x00"} {
		if ValidHeaderName(s) {
			t.Errorf("%q: want invalid", s)
		}
	}
}

func TestValidMethod(t *testing.T) {
	for m, want := range map[string]bool{"GET": true, "PURGE": true, "": false, "get": false, "GE T": false, "GET1": false} {
		if ValidMethod(m) != want {
			t.Errorf("%q: want %v", m, want)
		}
	}
}

func TestNotForwarded(t *testing.T) {
	for _, h := range []string{"connection", "te", "upgrade", "host", "content-length", "proxy-authorization"} {
		if !NotForwarded(h) {
			t.Errorf("%s: want not forwarded", h)
		}
	}
	for _, h := range []string{"authorization", "x-request-id", "content-type"} {
		if NotForwarded(h) || HopByHop(h) {
			t.Errorf("%s: want forwarded", h)
		}
	}
	if HopByHop("host") {
		t.Error("host is not hop-by-hop")
	}
}
