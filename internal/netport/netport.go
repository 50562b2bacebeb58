// Package netport picks 127.0.0.1 ports for servers a test starts later
// (a broker, redis-server) while a client may already be dialling them.
package netport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Stable returns a free 127.0.0.1 port below the kernel's ephemeral range.
// A client redialling a port inside that range while nothing listens can
// connect to itself (TCP simultaneous open) and hold the port, so the
// server's bind later fails with "address already in use".
func Stable(t testing.TB) int {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				lo = n
			}
		}
	}
	for i := 0; lo > 12000 && i < 500; i++ {
		p := 10000 + rand.IntN(lo-10000)
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			l.Close()
			return p
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
