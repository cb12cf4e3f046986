package verify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

var errProbe = errors.New("keystone probe: not a login attempt")

// probeAuthMethods asks the server which login methods it offers, the way a
// password guesser would see them. Each callback runs only when the server
// offers its method, and gives up before sending anything.
func probeAuthMethods(ctx context.Context, _ *Expectations, h Host) Output {
	addr := net.JoinHostPort(h.Addr, strconv.Itoa(h.SSHPort))
	var offered []string
	for _, m := range []struct {
		name string
		auth ssh.AuthMethod
	}{
		{"password", ssh.PasswordCallback(func() (string, error) { return "", errProbe })},
		{"keyboard-interactive", ssh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) { return nil, errProbe })},
	} {
		cfg := &ssh.ClientConfig{
			User: "root",
			Auth: []ssh.AuthMethod{m.auth},
			// Nothing secret is sent, and the pinned key was checked on the
			// main connection.
			HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		}
		c, err := dialBounded(ctx, addr, cfg, cmp.Or(h.Timeout, 10*time.Second))
		if c != nil {
			c.Close()
		}
		switch {
		case errors.Is(err, errProbe):
			offered = append(offered, m.name)
		case err == nil:
			return Output{Err: fmt.Errorf("the server let root in without a key using %s", m.name)}
		case !strings.Contains(err.Error(), "unable to authenticate"):
			return Output{Err: err}
		}
	}
	if len(offered) == 0 {
		offered = []string{"publickey-only"}
	}
	return Output{Stdout: strings.Join(offered, " ")}
}

// dialBounded is ssh.Dial with the handshake bounded too (ssh.Dial's
// Timeout covers only the TCP connect) and ended by ctx.
func dialBounded(ctx context.Context, addr string, cfg *ssh.ClientConfig, timeout time.Duration) (*ssh.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline, _ := dctx.Deadline()
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(dctx, func() { conn.Close() })
	defer stop()
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		// The connection's deadline and the context's timer fire at the
		// same moment: either says the server did not answer in time.
		if (dctx.Err() != nil || isTimeout(err)) && !errors.Is(err, errProbe) {
			return nil, fmt.Errorf("ssh handshake with %s: no answer within %s", addr, timeout)
		}
		return nil, err
	}
	return ssh.NewClient(c, chans, reqs), nil
}

// scanSockets bounds the scan sockets open at once in the whole process,
// so verifying a fleet cannot run out of file descriptors; within that,
// a scan opens as many connects at once as it has ports.
var scanSockets = make(chan struct{}, socketBudget())

// socketBudget is most of the file descriptor limit, which Go raises to
// the hard limit at start.
func socketBudget() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 256
	}
	return int(min(max(lim.Cur*3/4, 256), 16384))
}

// DefaultScanPorts is 1-1024.
func DefaultScanPorts() []int {
	ports := make([]int, 1024)
	for i := range ports {
		ports[i] = i + 1
	}
	return ports
}

// ParsePorts reads a list such as "1-1024,8080,9000-9010".
func ParsePorts(s string) ([]int, error) {
	var ports []int
	for _, part := range strings.Split(s, ",") {
		from, to, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err1 := strconv.Atoi(from)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(to)
		}
		signed := strings.ContainsAny(from+to, "+")
		if err1 != nil || err2 != nil || signed || a < 1 || b > 65535 || a > b {
			return nil, fmt.Errorf("%q is not a port or a range of ports (1-65535)", part)
		}
		for p := a; p <= b; p++ {
			ports = append(ports, p)
		}
	}
	return ports, nil
}
