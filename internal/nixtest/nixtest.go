// Package nixtest runs Debian's nix-instantiate for tests, offline and
// without touching /nix/store.
package nixtest

import (
	"bytes"
	"os/exec"
	"testing"
)

// Run runs nix-instantiate with args against a store that keeps nothing and
// returns stdout, or the error with stderr.
func Run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	nix, err := exec.LookPath("nix-instantiate")
	if err != nil {
		t.Fatalf("nix-instantiate is not installed (apt-get install nix-bin; scripts/test does it): %v", err)
	}
	cmd := exec.Command(nix, append([]string{"--store", "dummy://"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &Error{err, stderr.String()}
	}
	return stdout.String(), nil
}

// Error is a failed nix-instantiate run.
type Error struct {
	Err    error
	Stderr string
}

func (e *Error) Error() string { return e.Err.Error() + ": " + e.Stderr }

// Parse fails t unless file parses as Nix.
func Parse(t testing.TB, file string) {
	t.Helper()
	if _, err := Run(t, "--parse", file); err != nil {
		t.Errorf("%s does not parse: %v", file, err)
	}
}
