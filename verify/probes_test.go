package verify

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keystone-nix/keystone/internal/testhost"
)

// The auth-methods probe makes its own SSH connections: a server that
// accepts and never speaks must not hold it past the timeout.
func TestAuthProbeHandshakeIsBounded(t *testing.T) {
	_, port, _ := net.SplitHostPort(testhost.Silent(t))
	sshPort, _ := strconv.Atoi(port)
	done := make(chan Output, 1)
	start := time.Now()
	go func() {
		done <- probeAuthMethods(context.Background(), nil, Host{Addr: "127.0.0.1", SSHPort: sshPort, Timeout: time.Second})
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
