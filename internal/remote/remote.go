// Package remote runs shell commands on a host over one SSH connection,
// each in its own session, bounded in number, in time and in size.
package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// MaxSessions caps concurrent sessions on one connection: OpenSSH's default
// MaxSessions is 10, and the 11th is refused.
const MaxSessions = 8

// MaxOutput caps what one command may return on stdout and on stderr:
// past it the command is stopped and its output marked cut, so a host
// cannot fill the verifier's memory or its report.
const MaxOutput = 1 << 20

// grace is how long past its timeout a command may take to report its
// exit: the host's timeout(1) kills it 2 s after the timeout, so an answer
// later than this means the connection, not the command, is stuck.
const grace = 5 * time.Second

// ErrLost is the class of every error of a command that could not run, or
// finish, because the connection went away or stopped answering.
var ErrLost = errors.New("connection lost")

type lostError struct{ msg string }

func (e lostError) Error() string        { return e.msg }
func (e lostError) Is(target error) bool { return target == ErrLost }

// Output is what one command produced.
type Output struct {
	Stdout string
	Stderr string
	Exit   int
	Err    error // it did not run or did not finish
	// Cut says the output passed MaxOutput: the command was stopped and
	// Stdout and Stderr hold what came before.
	Cut bool
	// Retries is how many times the server refused to open the session
	// (a slot not yet freed) before it opened.
	Retries int
}

// Conn is the connection a Runner uses: an *ssh.Client, or anything
// wrapping one (sshx.Client).
type Conn interface {
	NewSession() (*ssh.Session, error)
	SendRequest(name string, wantReply bool, payload []byte) (bool, []byte, error)
	RemoteAddr() net.Addr
	Close() error
}

// Runner runs commands on one connection.
type Runner struct {
	conn    Conn
	via     string // "", "sudo" or "doas"
	timeout time.Duration
	*shared
}

// shared is what every Runner on one connection shares (see As).
type shared struct {
	sem  chan struct{}
	mu   sync.Mutex
	lost error
}

// New returns a Runner; with sudo, commands run under `sudo -n`.
func New(conn Conn, sudo bool, timeout time.Duration) *Runner {
	r := &Runner{conn: conn, timeout: timeout, shared: &shared{sem: make(chan struct{}, MaxSessions)}}
	if sudo {
		r.via = "sudo"
	}
	return r
}

// As returns a Runner on the same connection, sharing its session cap,
// whose commands run under `via -n`: "sudo" or "doas" (which takes -n
// too), or as the login user for "".
func (r *Runner) As(via string) *Runner {
	c := *r
	c.via = via
	return &c
}

// Via names what commands run under: "", "sudo" or "doas".
func (r *Runner) Via() string { return r.via }

// Lost is why the connection was given up on (wrapping ErrLost), or nil.
func (r *Runner) Lost() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lost
}

// giveUp records why the connection is useless and closes it, so that
// every other command waiting on it ends at once.
func (r *Runner) giveUp(why string) {
	r.mu.Lock()
	if r.lost == nil {
		r.lost = lostError{fmt.Sprintf("the connection to %s %s", r.conn.RemoteAddr(), why)}
	}
	r.mu.Unlock()
	r.conn.Close()
}

// Alive asks the server for a sign of life, waiting at most wait; a
// connection that gives none is given up on.
func (r *Runner) Alive(wait time.Duration) error {
	if err := r.Lost(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := r.conn.SendRequest("keepalive@openssh.com", true, nil)
		done <- err
	}()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			r.giveUp("was lost")
		}
	case <-timer.C:
		r.giveUp(fmt.Sprintf("stopped answering (no answer to a keepalive within %s)", wait))
	}
	return r.Lost()
}

// Run runs cmd with sh, bounded twice: by timeout(1) on the host, so nothing
// is left running there, and by a local timer that also covers opening the
// session, so a dead connection cannot hang the caller.
func (r *Runner) Run(ctx context.Context, cmd string) Output { return r.start(ctx, cmd, nil) }

// RunInput is Run with input on the command's stdin: for secrets, which
// must never be in a command line (every user of the host can read those).
func (r *Runner) RunInput(ctx context.Context, cmd string, input []byte) Output {
	return r.start(ctx, cmd, input)
}

// RunSecret runs command with "$f" naming a file that holds secret, sent on
// stdin and kept on the host only in a private file /run/NAME.XXXXXX (a
// tmpfs) for as long as the command runs: never in a command line, an
// environment or a log. For the commands that read a secret only from a
// file (systemd-cryptenroll) or whose stdin is the terminal's.
func (r *Runner) RunSecret(ctx context.Context, name, command string, secret []byte) Output {
	script := `set -eu
umask 077
f=$(mktemp /run/` + name + `.XXXXXX)
trap 'rm -f "$f"' EXIT
cat > "$f"
` + command
	return r.RunInput(ctx, script, secret)
}

func (r *Runner) start(ctx context.Context, cmd string, input []byte) Output {
	if err := r.Lost(); err != nil {
		return Output{Err: err}
	}
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return Output{Err: ctx.Err()}
	}
	defer func() { <-r.sem }()
	if err := r.Lost(); err != nil {
		return Output{Err: err}
	}

	// Whole seconds, at least 1: `timeout 0` would mean no limit at all.
	secs := max(1, int(math.Ceil(r.timeout.Seconds())))
	line := fmt.Sprintf("timeout -k 2 %d sh -c %s", secs, Quote(cmd))
	if r.via != "" {
		line = r.via + " -n " + line
	}
	deadline := time.Now().Add(r.timeout + grace)
	c := &call{}
	done := make(chan Output, 1)
	go func() { done <- r.run(c, line, input, deadline) }()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case o := <-done:
		if o.Err != nil && !o.Cut && !errors.Is(o.Err, ErrLost) {
			var exit *ssh.ExitError
			if !errors.As(o.Err, &exit) && r.Alive(grace) != nil {
				o.Err = r.Lost()
			}
		}
		return o
	case <-timer.C:
		c.stop()
		// A live connection answers a keepalive at once: then only this
		// command is stuck.
		if err := r.Alive(2 * time.Second); err != nil {
			return Output{Err: err}
		}
		return Output{Err: fmt.Errorf("no answer within %s", r.timeout)}
	case <-ctx.Done():
		c.stop()
		return Output{Err: ctx.Err()}
	}
}

// call is one command's session, once it is open, so that it can be
// stopped from outside.
type call struct {
	mu      sync.Mutex
	s       *ssh.Session
	stopped bool
}

func (c *call) set(s *ssh.Session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s = s
	return !c.stopped
}

func (c *call) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	if c.s != nil {
		c.s.Signal(ssh.SIGKILL)
		c.s.Close()
	}
}

func (r *Runner) run(c *call, line string, input []byte, deadline time.Time) Output {
	s, retries, err := r.openSession(deadline)
	if err != nil {
		return Output{Err: err, Retries: retries}
	}
	defer s.Close()
	if !c.set(s) {
		return Output{Err: errors.New("stopped"), Retries: retries}
	}
	var cut sync.Once
	onCut := func() { cut.Do(func() { s.Signal(ssh.SIGKILL); s.Close() }) }
	stdout, stderr := &capped{max: MaxOutput, onCut: onCut}, &capped{max: MaxOutput, onCut: onCut}
	s.Stdout, s.Stderr = stdout, stderr
	if input != nil {
		s.Stdin = bytes.NewReader(input)
	}
	err = s.Run(line)
	o := Output{Stdout: stdout.String(), Stderr: stderr.String(), Retries: retries, Cut: stdout.cut || stderr.cut}
	var exit *ssh.ExitError
	switch {
	case errors.As(err, &exit):
		o.Exit = exit.ExitStatus()
		if (o.Exit == 124 || o.Exit == 137) && !o.Cut {
			o.Err = fmt.Errorf("timed out after %s on the host", r.timeout)
		}
	case o.Cut:
		// Stopped by us: what was read is the answer.
	case err != nil:
		o.Err = err
	}
	return o
}

// openSession opens a session, retrying with a short backoff while the
// server refuses it: OpenSSH says "open failed" when a slot that was just
// closed is not yet free again.
func (r *Runner) openSession(deadline time.Time) (*ssh.Session, int, error) {
	backoff := 20 * time.Millisecond
	for retries := 0; ; retries++ {
		s, err := r.conn.NewSession()
		if err == nil {
			return s, retries, nil
		}
		var refused *ssh.OpenChannelError
		if !errors.As(err, &refused) || (refused.Reason != ssh.ConnectionFailed && refused.Reason != ssh.ResourceShortage) ||
			time.Now().Add(backoff+time.Second).After(deadline) {
			if retries > 0 {
				return nil, retries, fmt.Errorf("opening a session (refused %d times): %w", retries+1, err)
			}
			return nil, retries, fmt.Errorf("opening a session: %w", err)
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// capped keeps the first max bytes written to it and calls onCut once
// when more come.
type capped struct {
	b     strings.Builder
	max   int
	cut   bool
	onCut func()
}

func (w *capped) Write(p []byte) (int, error) {
	if w.cut {
		return len(p), nil
	}
	if room := w.max - w.b.Len(); len(p) > room {
		w.b.Write(p[:room])
		w.cut = true
		w.onCut()
		return len(p), nil
	}
	return w.b.Write(p)
}

func (w *capped) String() string { return w.b.String() }

// Quote quotes s for a POSIX shell.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
