package testhost

import (
	"net"
	"testing"
	"time"
)

func connectTime(t *testing.T, addr string) time.Duration {
	t.Helper()
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	return time.Since(start)
}

func TestDelay(t *testing.T) {
	h := SSHD(t, SSHDOptions{IPv6: true})
	if d := connectTime(t, h.Address()); d > 50*time.Millisecond {
		t.Fatalf("connect takes %s before any delay", d)
	}
	h.Delay(t, 100*time.Millisecond)
	for _, addr := range []string{h.Address(), h.Address6()} {
		// SYN in, SYN-ACK out: each held 100 ms.
		if d := connectTime(t, addr); d < 200*time.Millisecond || d > 600*time.Millisecond {
			t.Errorf("connect to %s takes %s with 100 ms each way, want about 200 ms", addr, d)
		}
	}
}
