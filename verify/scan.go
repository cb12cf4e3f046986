package verify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The scan times a silent port out the way nmap does: after the smoothed
// round-trip time plus four times its variation (RFC 6298), never less
// than scanFloor, and asks it again before calling it filtered: once, or
// up to five times when some port answered only when asked again. A fixed
// timeout shorter than the path's round trip would turn open ports into
// silence, which for a security check is the wrong way to fail.
const (
	scanFloor     = 50 * time.Millisecond
	scanCeiling   = 10 * time.Second
	scanFirst     = time.Second // before any sample, as nmap's initial RTT timeout
	scanAttempts  = 2           // as nmap: one retransmission, more once the path shows loss
	lossyAttempts = 6           // once a port has answered only when asked again, as nmap -T4
	lastAttemptBy = 2           // the last attempt waits this many timeouts
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
// comes. It asks the kernel, not a timer race, whether the handshake
// completed: on a busy verifier the answer may be noticed late, and a
// late notice must not turn an open port into silence.
func probePort(ctx context.Context, addr string, timeout time.Duration, est *rttEstimator) (portState, time.Duration, error) {
	sa, family, err := sockaddr(addr)
	if err != nil {
		return answered, 0, err
	}
	scanSockets <- struct{}{}
	defer func() { <-scanSockets }()
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return answered, 0, err
	}
	start := time.Now()
	if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		took := time.Since(start)
		state, err := classify(err, took, est)
		return state, took, err
	}
	f := os.NewFile(uintptr(fd), "scan") // non-blocking: the runtime's poller waits on it
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return answered, 0, err
	}
	f.SetWriteDeadline(start.Add(timeout))
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Now()) })
	defer stop()
	var result error
	connected := false
	var kernelRTT time.Duration
	check := func(fd uintptr) bool {
		if soErr, _ := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR); soErr != 0 {
			result = unix.Errno(soErr)
			return true
		}
		_, perr := unix.Getpeername(int(fd))
		connected = perr == nil
		if connected {
			// The kernel's own measure of the handshake: what the path
			// takes, without the time this process took to notice.
			if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil && info.Rtt > 0 {
				kernelRTT = time.Duration(info.Rtt) * time.Microsecond
			}
		}
		return connected
	}
	if werr := rc.Write(check); werr != nil {
		// The deadline passed: the kernel may still have the answer.
		rc.Control(func(fd uintptr) { check(fd) })
	}
	took := time.Since(start)
	switch {
	case connected:
		rtt := cmp.Or(kernelRTT, took)
		est.sample(rtt)
		return open, rtt, nil
	case result != nil:
		state, err := classify(result, took, est)
		return state, took, err
	}
	return silent, 0, nil
}

// classify turns a connect error into a port state: a refusal (RST) is an
// answer with a round trip, an ICMP error an answer without one.
func classify(err error, took time.Duration, est *rttEstimator) (portState, error) {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		est.sample(took)
		return answered, err
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EACCES),
		errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.ENETDOWN):
		return answered, err
	}
	return silent, err
}

// sockaddr reads "IP:port" (an IPv6 one may carry a %zone).
func sockaddr(addr string) (unix.Sockaddr, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return nil, 0, err
	}
	host, zone, _ := strings.Cut(host, "%")
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return nil, 0, fmt.Errorf("%q is not an IP address", host)
	case ip.To4() != nil:
		sa := &unix.SockaddrInet4{Port: port}
		copy(sa.Addr[:], ip.To4())
		return sa, unix.AF_INET, nil
	}
	sa := &unix.SockaddrInet6{Port: port}
	copy(sa.Addr[:], ip.To16())
	if zone != "" {
		ifc, err := net.InterfaceByName(zone)
		if err != nil {
			return nil, 0, err
		}
		sa.ZoneId = uint32(ifc.Index)
	}
	return sa, unix.AF_INET6, nil
}

// reach says whether the verifier can reach ip at all, asking its SSH
// port: a connect or a refusal is an answer.
func reach(ctx context.Context, ip string, port int, est *rttEstimator) error {
	timeout := max(est.timeout()*lastAttemptBy, 2*time.Second)
	var last error
	for range 2 {
		state, _, err := probePort(ctx, net.JoinHostPort(ip, strconv.Itoa(port)), timeout, est)
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
	if e.Unlock != nil {
		set[e.Unlock.Port] = true // the initrd's: closed once the system runs
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
//
// The scan of the address SSH reached starts at once, beside the checks'
// commands: the well-known range and the expected ports first, then the
// ports ss says listen outside them, and the IPv6 addresses, once the
// commands are in.
func scanProbe(ctx context.Context, e *Expectations, h Host) Output {
	if ip := net.ParseIP(h.Addr); ip != nil && ip.IsLoopback() {
		// A port forward (a VM's user-mode network, an ssh -L): a scan of
		// loopback would judge this machine's ports, not the host's.
		return Output{Stdout: loopbackForward}
	}
	est := &rttEstimator{}
	if h.RTT > 0 {
		est.sample(h.RTT)
	}
	start := time.Now()
	first := h.Addr
	if net.ParseIP(strings.SplitN(first, "%", 2)[0]) == nil {
		// A name: scan the address it has now, as SSH reached it.
		ips, err := net.DefaultResolver.LookupIP(ctx, "ip", first)
		if err != nil || len(ips) == 0 {
			return Output{Err: fmt.Errorf("resolving %s: %v", first, err)}
		}
		first = ips[0].String()
	}
	if est.samples == 0 {
		reach(ctx, first, h.SSHPort, est) // a first sample: its SSH port answers
	}

	type scan struct {
		ip   string
		open []int
		err  error
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var scans []*scan
	launch := func(ip string, ports []int) {
		s := &scan{ip: ip}
		mu.Lock()
		scans = append(scans, s)
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.open, s.err = scanAddr(ctx, ip, ports, est)
		}()
	}
	early := scanPorts(e, h, nil)
	launch(first, early)

	var listening []Listener
	var addrs []HostAddr
	if outs := h.Outs(); len(outs) > 1 {
		if outs[0].Err == nil {
			listening, _ = ParseSS(outs[0].Stdout)
		}
		if outs[1].Err == nil {
			addrs, _ = ParseIPAddrJSON([]byte(outs[1].Stdout))
		}
	}
	ports := scanPorts(e, h, listening)
	if late := slices.DeleteFunc(slices.Clone(ports), func(p int) bool { _, found := slices.BinarySearch(early, p); return found }); len(late) > 0 {
		launch(first, late)
	}
	targets := []string{first}
	seen := map[string]bool{}
	if ip := net.ParseIP(first); ip != nil {
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
		launch(ip.String(), ports)
	}
	wg.Wait()
	open := map[string][]int{}
	var errs []error
	for _, s := range scans {
		open[s.ip] = append(open[s.ip], s.open...)
		errs = append(errs, s.err)
	}
	if err := errors.Join(errs...); err != nil {
		return Output{Err: err}
	}
	for _, ip := range targets {
		slices.Sort(open[ip])
		lines = append(lines, fmt.Sprintf("open %s %s", ip, joinInts(open[ip])))
	}
	slices.SortStableFunc(lines, func(a, b string) int { return strings.Compare(b[:1], a[:1]) }) // open lines first
	return Output{
		Stdout: strings.Join(lines, "\n"),
		Stderr: fmt.Sprintf("%d ports scanned at %s in %s, timeout %s", len(ports), strings.Join(targets, " and "),
			time.Since(start).Round(10*time.Millisecond), est.timeout().Round(time.Millisecond)),
	}
}
