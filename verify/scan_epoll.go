package verify

import (
	"context"
	"net"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// One scan is one goroutine with an epoll set of connecting sockets, not a
// goroutine and a poller registration per port: a fleet scans many hosts
// at once, and what each connect costs here is what a fleet waits for.

// inflight is one connect in progress.
type inflight struct {
	port     int
	attempt  int
	start    time.Time
	deadline time.Time
	timeout  time.Duration
}

// scanAddr connects to every port of ip, as many at once as the socket
// budget allows, and returns the open ones. A silent port is asked again,
// on its own, with the timeout the estimate gives by then.
func scanAddr(ctx context.Context, ip string, ports []int, est *rttEstimator) ([]int, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	defer unix.Close(ep)
	type retry struct{ port, attempt int }
	queue := make([]retry, 0, len(ports))
	for _, p := range ports {
		queue = append(queue, retry{port: p})
	}
	var (
		found   []int
		lossy   bool // a port answered a retry in less than the timeout before: packets get lost
		flying  = map[int]*inflight{}
		befores = map[int]time.Duration{}
		events  = make([]unix.EpollEvent, 256)
	)
	release := func(fd int) {
		unix.Close(fd)
		delete(flying, fd)
		<-scanSockets
	}
	// done handles an answer or a timeout of the connect on fd.
	done := func(fd int, expired bool) {
		f := flying[fd]
		state, rtt := connectState(fd, f, est)
		release(fd)
		if state != silent && f.attempt > 0 && rtt > 0 && rtt < befores[f.port] {
			lossy = true
		}
		switch {
		case state == open:
			found = append(found, f.port)
		case state == silent && expired:
			last := f.attempt >= scanAttempts-1 && !lossy || f.attempt >= lossyAttempts-1
			if !last {
				befores[f.port] = f.timeout
				queue = append(queue, retry{port: f.port, attempt: f.attempt + 1})
			}
		}
	}
	for len(queue) > 0 || len(flying) > 0 {
		if err := ctx.Err(); err != nil {
			for fd := range flying {
				release(fd)
			}
			return nil, err
		}
		// Start what the budget allows; wait for a slot only when nothing
		// is in flight to wait for instead.
	start:
		for len(queue) > 0 {
			if len(flying) == 0 {
				select {
				case scanSockets <- struct{}{}:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			} else {
				select {
				case scanSockets <- struct{}{}:
				default:
					break start
				}
			}
			r := queue[0]
			queue = queue[1:]
			if !startConnect(ep, ip, r.port, r.attempt, est, flying) {
				<-scanSockets
			}
		}
		// Wait for answers until the nearest deadline.
		now := time.Now()
		wait := 10 * time.Millisecond
		for _, f := range flying {
			wait = min(wait, max(f.deadline.Sub(now), 0))
		}
		n, err := unix.EpollWait(ep, events, int(wait.Milliseconds()))
		if err != nil && err != unix.EINTR {
			return nil, err
		}
		for _, ev := range events[:max(n, 0)] {
			if _, ok := flying[int(ev.Fd)]; ok {
				done(int(ev.Fd), false)
			}
		}
		now = time.Now()
		for fd, f := range flying {
			if !now.Before(f.deadline) {
				done(fd, true)
			}
		}
	}
	slices.Sort(found)
	return found, nil
}

// startConnect opens a socket to ip:port and adds it to the epoll set; it
// reports false when nothing is in flight for it (the socket could not be
// made, or the connect failed at once, which for a scan is an answer).
func startConnect(ep int, ip string, port, attempt int, est *rttEstimator, flying map[int]*inflight) bool {
	sa, family, err := sockaddr(net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	timeout := est.timeout()
	last := attempt >= scanAttempts-1
	if last {
		timeout *= lastAttemptBy
	}
	start := time.Now()
	if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		classify(err, time.Since(start), est)
		return false
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLOUT, Fd: int32(fd)}); err != nil {
		unix.Close(fd)
		return false
	}
	flying[fd] = &inflight{port: port, attempt: attempt, start: start, deadline: start.Add(timeout), timeout: timeout}
	return true
}

// connectState asks the kernel how the connect on fd went: connected,
// refused or unreachable, or still waiting (silent).
func connectState(fd int, f *inflight, est *rttEstimator) (portState, time.Duration) {
	took := time.Since(f.start)
	if soErr, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); soErr != 0 {
		state, _ := classify(unix.Errno(soErr), took, est)
		return state, took
	}
	if _, err := unix.Getpeername(fd); err != nil {
		return silent, 0
	}
	rtt := took
	if info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil && info.Rtt > 0 {
		rtt = time.Duration(info.Rtt) * time.Microsecond
	}
	est.sample(rtt)
	return open, rtt
}
