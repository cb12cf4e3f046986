package verify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The scan times a silent port out the way nmap does: after the smoothed
// round-trip time plus four times its variation (RFC 6298), never less
// than scanFloor, and asks it again before calling it filtered. A fixed
// timeout shorter than the path's round trip would turn open ports into
// silence, which for a security check is the wrong way to fail.
const (
	scanFloor     = 50 * time.Millisecond
	scanCeiling   = 10 * time.Second
	scanFirst     = time.Second // before any sample, as nmap's initial RTT timeout
	scanAttempts  = 3
	lossyAttempts = 6 // once a port has answered only when asked again, as nmap -T4
	lastAttemptBy = 2 // the last attempt waits this many timeouts
)

// rttEstimator is TCP's smoothed RTT and its variation, fed by every
// answer (SYN-ACK or RST) the scan gets.
type rttEstimator struct {
	mu           sync.Mutex
	srtt, rttvar time.Duration
	samples      int
}

func (r *rttEstimator) sample(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.samples == 0 {
		r.srtt, r.rttvar = d, d/2
	} else {
		r.rttvar = (3*r.rttvar + (r.srtt - d).Abs()) / 4
		r.srtt = (7*r.srtt + d) / 8
	}
	r.samples++
}

func (r *rttEstimator) timeout() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.samples == 0 {
		return scanFirst
	}
	return min(max(r.srtt+4*r.rttvar, scanFloor), scanCeiling)
}

// portState is what one connect found.
type portState int

const (
	silent   portState = iota // no answer in time: ask again, then filtered
	open                      // SYN-ACK
	answered                  // RST (closed) or an ICMP error (rejected)
)

// probePort connects once, feeding est with the round trip when an answer
// comes.
func probePort(ctx context.Context, addr string, timeout time.Duration, est *rttEstimator) (portState, error) {
	scanSockets <- struct{}{}
	defer func() { <-scanSockets }()
	start := time.Now()
	c, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
	took := time.Since(start)
	switch {
	case err == nil:
		c.Close()
		est.sample(took)
		return open, nil
	case errors.Is(err, syscall.ECONNREFUSED):
		est.sample(took)
		return answered, err
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EACCES),
		errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EADDRNOTAVAIL):
		return answered, err
	}
	return silent, err
}

// scanAddr connects to every port of ip at once and returns the open
// ones. Each port is asked again on its own when it stays silent, with a
// timeout from what the estimate has learnt since, so that no round waits
// for the slowest port of the one before.
func scanAddr(ctx context.Context, ip string, ports []int, est *rttEstimator) ([]int, error) {
	var (
		mu      sync.Mutex
		openOut []int
		wg      sync.WaitGroup
		lossy   atomic.Bool // a port answered only when asked again: packets get lost
	)
	for _, p := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := net.JoinHostPort(ip, strconv.Itoa(p))
			for attempt := 0; ; attempt++ {
				last := attempt == scanAttempts-1 && !lossy.Load() || attempt == lossyAttempts-1
				timeout := est.timeout()
				if last {
					timeout *= lastAttemptBy
				}
				state, _ := probePort(ctx, addr, timeout, est)
				if state != silent && attempt > 0 {
					lossy.Store(true)
				}
				if state == open {
					mu.Lock()
					openOut = append(openOut, p)
					mu.Unlock()
				}
				if state != silent || last || ctx.Err() != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	slices.Sort(openOut)
	return openOut, nil
}

// reach says whether the verifier can reach ip at all, asking its SSH
// port: a connect or a refusal is an answer.
func reach(ctx context.Context, ip string, port int, est *rttEstimator) error {
	timeout := max(est.timeout()*lastAttemptBy, 2*time.Second)
	var last error
	for range scanAttempts - 1 {
		state, err := probePort(ctx, net.JoinHostPort(ip, strconv.Itoa(port)), timeout, est)
		switch {
		case state == open || errors.Is(err, syscall.ECONNREFUSED):
			return nil
		case state == answered:
			return unwrapOpErr(err)
		}
		last = err
	}
	if last != nil && !isTimeout(last) {
		return unwrapOpErr(last)
	}
	return fmt.Errorf("no answer within %s", timeout)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func unwrapOpErr(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// scanPorts is what the scan asks: the ports to scan (DefaultScanPorts
// without a choice), the SSH port, the expected ones and every port the
// host's ss shows listening on an address others can reach, so the scan
// and the firewall check look at the same ports.
func scanPorts(e *Expectations, h Host, listening []Listener) []int {
	ports := h.ScanPorts
	if ports == nil {
		ports = DefaultScanPorts()
	}
	set := map[int]bool{h.SSHPort: true}
	for _, p := range ports {
		set[p] = true
	}
	for _, p := range expectedTCP(e, "") {
		set[p] = true
	}
	for _, l := range listening {
		if l.Proto != "udp" && !loopbackListener(l) {
			set[l.Port] = true
		}
	}
	out := make([]int, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func loopbackListener(l Listener) bool {
	if l.Iface == "lo" {
		return true
	}
	ip := net.ParseIP(l.Addr)
	return ip != nil && ip.IsLoopback()
}

// scanProbe scans the address the host was reached at and each of its
// global or unique-local IPv6 addresses (from ip -j addr, the check's
// second command) that the verifier can reach. Each line of Stdout is
// "open ADDR PORTS" or "unreachable ADDR WHY"; Stderr says what was
// scanned. The check's first command is ss -Htln.
func scanProbe(ctx context.Context, e *Expectations, h Host) Output {
	var listening []Listener
	var addrs []HostAddr
	if len(h.Outs) > 0 && h.Outs[0].Err == nil {
		listening, _ = ParseSS(h.Outs[0].Stdout)
	}
	if len(h.Outs) > 1 && h.Outs[1].Err == nil {
		addrs, _ = ParseIPAddrJSON([]byte(h.Outs[1].Stdout))
	}
	ports := scanPorts(e, h, listening)
	est := &rttEstimator{}
	if h.RTT > 0 {
		est.sample(h.RTT)
	}
	start := time.Now()
	targets := []string{h.Addr}
	seen := map[string]bool{}
	if ip := net.ParseIP(h.Addr); ip != nil {
		seen[ip.String()] = true
	}
	var lines []string
	for _, ip := range globalIPv6(addrs) {
		if seen[ip.String()] {
			continue
		}
		seen[ip.String()] = true
		if err := reach(ctx, ip.String(), h.SSHPort, est); err != nil {
			lines = append(lines, fmt.Sprintf("unreachable %s %v", ip, err))
			continue
		}
		targets = append(targets, ip.String())
	}
	if est.samples == 0 {
		reach(ctx, h.Addr, h.SSHPort, est) // a first sample: its SSH port answers
	}
	results := make([][]int, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, ip := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = scanAddr(ctx, ip, ports, est)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Output{Err: err}
	}
	for i, ip := range targets {
		lines = append(lines, fmt.Sprintf("open %s %s", ip, joinInts(results[i])))
	}
	slices.SortStableFunc(lines, func(a, b string) int { return strings.Compare(b[:1], a[:1]) }) // open lines first
	return Output{
		Stdout: strings.Join(lines, "\n"),
		Stderr: fmt.Sprintf("%d ports scanned at %s in %s, timeout %s", len(ports), strings.Join(targets, " and "),
			time.Since(start).Round(10*time.Millisecond), est.timeout().Round(time.Millisecond)),
	}
}
