package verify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/text"
)

// Options says how to reach and check one host.
type Options struct {
	Name    string // the host's name in the flake, for reports
	SSH     sshx.Options
	Wait    time.Duration // keep trying to connect, and wait while the host boots
	Timeout time.Duration // for each remote command
	Checks  []Check       // default All()
	// ScanPorts is what the exposure check scans besides the expected
	// ports; nil means DefaultScanPorts.
	ScanPorts []int
	// System is the out path of the flake's
	// nixosConfigurations.NAME.config.system.build.toplevel, which the
	// system check compares with the host's /run/current-system; "" skips
	// that check ("not asked (--drift)").
	System string
	// InitrdPin is the pinned public key of the initrd's sshd
	// (vms/NAME/ssh_initrd_host_ed25519_key.pub), which the initrd
	// check compares with the key on the host; "" when there is none.
	InitrdPin string
}

// Report is everything verify found about one host.
type Report struct {
	Host      string        `json:"host"`
	Target    string        `json:"target"`
	Connected bool          `json:"connected"`
	Error     string        `json:"error"` // why it could not connect, or lost the connection; "" when neither
	Results   []Result      `json:"results"`
	Duration  time.Duration `json:"-"`
	// Done holds, per check that ran, when its verdict was in, counted
	// from the start of Run (the connection included).
	Done map[string]time.Duration `json:"-"`
	Err  error                    `json:"-"`

	notChecked bool // its config could not be read: exit 3
}

// NotChecked is the report of a host whose expectations or target could
// not be worked out, so nothing was checked.
func NotChecked(host string, err error) Report {
	return Report{Host: host, Error: "not checked: " + err.Error(), Err: err, notChecked: true}
}

// Exit codes: 0 all pass (WARN and SKIP allowed), 1 a check failed,
// 2 cannot connect, authenticate, trust the host key or become root,
// 3 nothing was checked.
const (
	ExitPass          = 0
	ExitFail          = 1
	ExitCannotReach   = 2
	ExitNotChecked    = 3
	pollInterval      = 2 * time.Second
	defaultCmdTimeout = 30 * time.Second
)

// ExitCode is the report's exit status.
func (r Report) ExitCode() int {
	if r.notChecked {
		return ExitNotChecked
	}
	if !r.Connected || r.Error != "" {
		return ExitCannotReach
	}
	for _, res := range r.Results {
		if res.Status == Fail {
			return ExitFail
		}
	}
	return ExitPass
}

// Run verifies one host over one SSH connection.
func Run(ctx context.Context, e *Expectations, o Options) Report {
	start := time.Now()
	rep := Report{Host: o.Name, Target: o.SSH.User + "@" + o.SSH.Addr}
	if o.SSH.Timeout == 0 && o.Timeout > 0 {
		o.SSH.Timeout = o.Timeout // --timeout bounds the connect too
	}
	if o.Timeout == 0 {
		o.Timeout = defaultCmdTimeout
	}
	if o.Checks == nil {
		o.Checks = All()
	}
	deadline := time.Now().Add(o.Wait)
	client, err := dialWait(ctx, o.SSH, deadline)
	if err != nil {
		rep.Err, rep.Error = err, err.Error()
		rep.Duration = time.Since(start)
		return rep
	}
	defer client.Close()
	rep.Connected = true
	rep.Results = append(rep.Results, Result{Check: "ssh", Status: Pass, Evidence: fmt.Sprintf("%s, key auth, host key %s",
		rep.Target, ssh.FingerprintSHA256(client.HostKey))})

	r := runner{remote.New(client, o.SSH.User != "root", o.Timeout), &sharedRuns{m: map[string]*sharedRun{}}}
	lost := func() error { return cmp.Or(client.Lost(), r.Lost()) }
	if o.SSH.User != "root" {
		// Every check reads as root; without it each would FAIL for the
		// same reason, which is a login problem, not twelve host problems.
		if err := r.canBeRoot(ctx); err != nil {
			if l := lost(); l != nil {
				err = l
			}
			rep.Err, rep.Error = err, err.Error()
			rep.Duration = time.Since(start)
			return rep
		}
	}
	if o.Wait > 0 {
		r.waitForBoot(ctx, deadline)
	}
	host := Host{Addr: hostOf(o.SSH.Addr), SSHPort: portOf(o.SSH.Addr), ScanPorts: o.ScanPorts,
		RTT: client.RTT, Timeout: o.Timeout, System: o.System, InitrdPin: o.InitrdPin}
	results := make([]Result, len(o.Checks))
	done := make([]time.Duration, len(o.Checks))
	var wg sync.WaitGroup
	for i, c := range o.Checks {
		if ok, why := c.Applies(e); !ok {
			results[i] = Result{Check: c.Name, Status: Skip, Evidence: why}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = r.check(ctx, c, e, host)
			done[i] = time.Since(start)
		}()
	}
	wg.Wait()
	rep.Results = append(rep.Results, results...)
	rep.Done = map[string]time.Duration{}
	for i, c := range o.Checks {
		if done[i] > 0 {
			rep.Done[c.Name] = done[i]
		}
	}
	// A session that failed may mean the whole connection went away: ask
	// the server, which answers at once while the connection lives.
	r.Alive(cmp.Or(o.SSH.Timeout, sshx.DefaultTimeout))
	if err := lost(); err != nil {
		rep.Err, rep.Error = err, err.Error()
	} else if ctx.Err() != nil {
		rep.Err = errors.New("interrupted before the checks finished")
		rep.Error = rep.Err.Error()
	}
	rep.Duration = time.Since(start)
	return rep
}

// connectTimeout is one attempt's limit when Options leaves it zero; a
// variable for tests.
var connectTimeout = sshx.DefaultTimeout

// dialWait dials until it works or the deadline passes: a host that was
// just installed is still rebooting, or still the installer.
func dialWait(ctx context.Context, o sshx.Options, deadline time.Time) (*sshx.Client, error) {
	for {
		// Each attempt gets its usual time, or what is left of --wait if
		// less: a silent host cannot hold one attempt past the deadline.
		attempt := o
		if left := time.Until(deadline); left > 0 {
			attempt.Timeout = max(min(left, cmp.Or(o.Timeout, connectTimeout)), time.Second)
		}
		c, err := sshx.Dial(ctx, attempt)
		if err == nil {
			return c, nil
		}
		if time.Now().Add(pollInterval).After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(pollInterval):
		}
	}
}

type runner struct {
	*remote.Runner
	runs *sharedRuns
}

// sharedRuns runs each command once per connection: checks that read the
// same output (the ruleset, for firewall and ipv6) share one run of it.
type sharedRuns struct {
	mu sync.Mutex
	m  map[string]*sharedRun
}

type sharedRun struct {
	done chan struct{}
	out  Output
}

func (r runner) shared(ctx context.Context, cmd string) Output {
	r.runs.mu.Lock()
	s, running := r.runs.m[cmd]
	if !running {
		s = &sharedRun{done: make(chan struct{})}
		r.runs.m[cmd] = s
	}
	r.runs.mu.Unlock()
	if running {
		<-s.done
		return s.out
	}
	s.out = r.Run(ctx, cmd)
	close(s.done)
	return s.out
}

func (r runner) canBeRoot(ctx context.Context) error {
	o := r.Run(ctx, "id -u")
	switch {
	case o.Err != nil:
		return fmt.Errorf("sudo -n id -u: %w", o.Err)
	case o.Exit != 0 || strings.TrimSpace(o.Stdout) != "0":
		return hint.Errorf("give the user passwordless sudo, or verify as root@",
			"cannot run commands as root with sudo -n: %s", cmp.Or(text.FirstLine(o.Stderr), fmt.Sprintf("exit status %d", o.Exit)))
	}
	return nil
}

func (r runner) check(ctx context.Context, c Check, e *Expectations, h Host) Result {
	var cmds []string
	if c.Commands != nil {
		cmds = c.Commands(e)
	}
	outs := make([]Output, len(cmds), len(cmds)+1)
	var wg sync.WaitGroup
	for i, cmd := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = r.shared(ctx, cmd)
		}()
	}
	// The probe (a scan, an mDNS query) needs no session: it starts now.
	var probe chan Output
	if c.Probe != nil {
		probe = make(chan Output, 1)
		h.Outs = func() []Output { wg.Wait(); return outs }
		go func() { probe <- c.Probe(ctx, e, h) }()
	}
	wg.Wait()
	var probed Output
	if probe != nil {
		probed = <-probe
	}
	for _, o := range outs {
		switch {
		case errors.Is(o.Err, remote.ErrLost):
			// The connection error says it once for the whole report.
			return Result{Check: c.Name, Status: Skip, Evidence: notRun}
		case errors.Is(o.Err, context.Canceled):
			return Result{Check: c.Name, Status: Skip, Evidence: notRunInterrupted}
		}
	}
	if probe != nil {
		outs = append(outs, probed)
	}
	status, ev := c.Judge(e, outs)
	return Result{Check: c.Name, Status: status, Evidence: capEvidence(text.OneLine(ev) + cutNote(cmds, outs))}
}

// waitForBoot waits while systemd says the host is still starting.
func (r runner) waitForBoot(ctx context.Context, deadline time.Time) {
	for time.Now().Before(deadline) {
		state := strings.TrimSpace(r.Run(ctx, "systemctl is-system-running").Stdout)
		if state != "starting" && state != "initializing" {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pollInterval):
		}
	}
}

var shellQuote = remote.Quote

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 22
	}
	n, _ := strconv.Atoi(p)
	return n
}

// notRun is the evidence of a check whose commands could not run because
// the connection was lost (docs/verify-json.md).
const notRun = "not run: the connection was lost"

// notRunInterrupted is the evidence of a check stopped by Ctrl-C or
// SIGTERM.
const notRunInterrupted = "not run: interrupted"

// maxEvidence caps one evidence line: it is shown in a table and written
// twice in JUnit, for every host.
const maxEvidence = 4096

func capEvidence(s string) string {
	if len(s) <= maxEvidence {
		return s
	}
	cut := maxEvidence
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf(" … (cut at %d of %d bytes)", cut, len(s))
}

// cutNote says which commands' output passed remote.MaxOutput, and how
// often the server refused a session before it opened.
func cutNote(cmds []string, outs []Output) string {
	var notes []string
	retries := 0
	for i, o := range outs {
		retries += o.Retries
		if o.Cut {
			what := "a probe"
			if i < len(cmds) {
				what = strings.Fields(cmds[i] + " ?")[0]
			}
			notes = append(notes, fmt.Sprintf("the output of %s was cut at %d MiB", what, remote.MaxOutput>>20))
		}
	}
	if retries > 0 {
		times := fmt.Sprintf("%d times", retries)
		if retries == 1 {
			times = "once"
		}
		notes = append(notes, "the server refused a session "+times+" before it opened")
	}
	if len(notes) == 0 {
		return ""
	}
	return " (" + strings.Join(notes, "; ") + ")"
}
