// Package netport picks 127.0.0.1 ports for servers a test starts later (a
// broker, redis-server) while a client may already be dialling them, and
// makes a loopback address whose connects hang (FullBacklog).
package netport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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

// FullBacklog returns a 127.0.0.1 address whose accept queue is full, so
// connecting hangs (Linux drops the SYN): a connect timeout on loopback.
func FullBacklog(t testing.TB) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("needs Linux listen backlog behaviour")
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	c, err := net.DialTimeout("tcp", addr, time.Second) // fills the queue
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if c2, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
		c2.Close()
		t.Skip("listen backlog does not block connects here")
	}
	return "http://" + addr
}
