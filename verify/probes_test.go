package verify

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// The auth-methods probe makes its own SSH connections: a server that
// accepts and never speaks must not hold it past the timeout.
func TestAuthProbeHandshakeIsBounded(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	addr := l.Addr().(*net.TCPAddr)
	done := make(chan Output, 1)
	start := time.Now()
	go func() {
		done <- probeAuthMethods(context.Background(), nil, Host{Addr: "127.0.0.1", SSHPort: addr.Port, Timeout: time.Second})
	}()
	select {
	case o := <-done:
		if o.Err == nil || !strings.Contains(o.Err.Error(), "no answer within 1s") || time.Since(start) > 3*time.Second {
			t.Errorf("after %s: %v", time.Since(start), o.Err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the probe hung in the handshake")
	}
}
