// Package remote runs shell commands on a host over one SSH connection,
// each in its own session, bounded in number and in time.
package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// MaxSessions caps concurrent sessions on one connection: OpenSSH's default
// MaxSessions is 10, and the 11th is refused.
const MaxSessions = 8

// Output is what one command produced.
type Output struct {
	Stdout string
	Stderr string
	Exit   int
	Err    error // it did not run or did not finish
}

// Runner runs commands on one connection.
type Runner struct {
	client  *ssh.Client
	via     string // "", "sudo" or "doas"
	timeout time.Duration
	sem     chan struct{}
}

// New returns a Runner; with sudo, commands run under `sudo -n`.
func New(client *ssh.Client, sudo bool, timeout time.Duration) *Runner {
	r := &Runner{client: client, timeout: timeout, sem: make(chan struct{}, MaxSessions)}
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

// Run runs cmd with sh, bounded twice: by timeout(1) on the host, so nothing
// is left running there, and by a local timer, so a dead connection cannot
// hang the caller.
func (r *Runner) Run(ctx context.Context, cmd string) Output { return r.run(ctx, cmd, nil) }

// RunInput is Run with input on the command's stdin: for secrets, which
// must never be in a command line (every user of the host can read those).
func (r *Runner) RunInput(ctx context.Context, cmd string, input []byte) Output {
	return r.run(ctx, cmd, input)
}

func (r *Runner) run(ctx context.Context, cmd string, input []byte) Output {
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return Output{Err: ctx.Err()}
	}
	defer func() { <-r.sem }()

	s, err := r.client.NewSession()
	if err != nil {
		return Output{Err: fmt.Errorf("opening a session: %w", err)}
	}
	defer s.Close()
	var stdout, stderr strings.Builder
	s.Stdout, s.Stderr = &stdout, &stderr
	if input != nil {
		s.Stdin = bytes.NewReader(input)
	}
	// Whole seconds, at least 1: `timeout 0` would mean no limit at all.
	secs := max(1, int(math.Ceil(r.timeout.Seconds())))
	line := fmt.Sprintf("timeout -k 2 %d sh -c %s", secs, Quote(cmd))
	if r.via != "" {
		line = r.via + " -n " + line
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(line) }()
	timer := time.NewTimer(r.timeout + 5*time.Second)
	defer timer.Stop()
	select {
	case err = <-done:
	case <-timer.C:
		s.Signal(ssh.SIGKILL)
		return Output{Stdout: stdout.String(), Stderr: stderr.String(), Err: fmt.Errorf("no answer within %s", r.timeout)}
	case <-ctx.Done():
		s.Signal(ssh.SIGKILL)
		return Output{Err: ctx.Err()}
	}
	o := Output{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *ssh.ExitError
	switch {
	case errors.As(err, &exit):
		o.Exit = exit.ExitStatus()
		if o.Exit == 124 || o.Exit == 137 {
			o.Err = fmt.Errorf("timed out after %s on the host", r.timeout)
		}
	case err != nil:
		o.Err = err
	}
	return o
}

// Quote quotes s for a POSIX shell.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
