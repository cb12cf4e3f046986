package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/internal/text"
)

// Status is a check's verdict, ordered from best to worst: the worst one
// sets the exit code.
type Status int

const (
	Pass Status = iota
	Skip
	Warn
	Fail
)

var statusNames = [...]string{"PASS", "SKIP", "WARN", "FAIL"}

func (s Status) String() string { return statusNames[s] }

func (s Status) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// Result is one check's verdict with its evidence in one line.
type Result struct {
	Check    string `json:"check"`
	Status   Status `json:"status"`
	Evidence string `json:"evidence"`
}

// Output is what one remote command or local probe produced.
type Output = remote.Output

// Host is what probes see of the host under test besides its expectations.
type Host struct {
	Addr      string // IP or name the verifier reached it at
	SSHPort   int
	ScanPorts []int // nil: DefaultScanPorts
	// RTT is the SSH connection's TCP connect time, a first round-trip
	// sample; 0 if unknown.
	RTT time.Duration
	// Timeout is the limit for each remote command, which bounds the
	// probes too.
	Timeout time.Duration
	// Outs waits for the check's commands and returns what they printed:
	// a probe starts beside them and asks only when it needs them.
	Outs func() []Output
	// System is Options.System.
	System string
	// InitrdPin is Options.InitrdPin.
	InitrdPin string
}

// A Check is data plus a judge, as in goss: what to run on the host
// (Commands) or from the verifier (Probe), and a pure function that turns
// those outputs and the expectations into a Result.
type Check struct {
	Name string
	// Applies says whether the host has anything to check here; the reason
	// is the SKIP evidence.
	Applies func(e *Expectations) (bool, string)
	// Commands are shell commands run on the host, each in its own session.
	Commands func(e *Expectations) []string
	// Probe runs on the verifier, from the start, beside the commands.
	Probe func(ctx context.Context, e *Expectations, h Host) Output
	// Judge sees one Output per command, then the probe's, in order.
	Judge func(e *Expectations, outs []Output) (Status, string)
}

func always(*Expectations) (bool, string) { return true, "" }

// evidence joins parts into one line.
func evidence(parts ...string) string {
	var keep []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			keep = append(keep, p)
		}
	}
	return strings.Join(keep, "; ")
}

// failed reports a command that did not run, or ran and failed, as the
// evidence line for a FAIL; ok is true when the output can be judged.
func failed(what string, o Output) (string, bool) {
	switch {
	case o.Err != nil:
		return fmt.Sprintf("%s: %v", what, o.Err), false
	case o.Exit != 0 && strings.TrimSpace(o.Stdout) == "":
		msg := text.FirstLine(o.Stderr)
		if msg == "" {
			msg = fmt.Sprintf("exit status %d", o.Exit)
		}
		return fmt.Sprintf("%s: %s", what, msg), false
	}
	return "", true
}
