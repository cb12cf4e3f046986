// Package nixeval reads values out of a flake with `nix eval --json`.
package nixeval

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/keystone-nix/keystone/internal/hint"
)

// JSON evaluates flake#attr (through apply, a Nix function, when not "")
// and returns the JSON nix prints.
func JSON(ctx context.Context, flake, attr, apply string) ([]byte, error) {
	nix, err := exec.LookPath("nix")
	if err != nil {
		return nil, hint.Errorf("run it through `nix run`, install Nix, or pass the values directly (see --help)",
			"nix is not installed, so %s#%s cannot be read", flake, attr)
	}
	args := []string{"--extra-experimental-features", "nix-command flakes", "eval", "--json", flake + "#" + attr}
	if apply != "" {
		args = append(args, "--apply", apply)
	}
	cmd := exec.CommandContext(ctx, nix, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			return nil, err
		}
		return nil, &Error{fmt.Sprintf("nix eval %s#%s failed: %s", flake, attr, lastError(stderr.String()))}
	}
	return stdout.Bytes(), nil
}

// lastError picks nix's "error: …" line out of its trace.
func lastError(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, "error:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "error:"))
		}
	}
	if len(lines) > 0 {
		return lines[len(lines)-1]
	}
	return "no output"
}

// Error is an evaluation that nix ran and that failed.
type Error struct{ msg string }

func (e *Error) Error() string { return e.msg }

// Failed says whether err is an evaluation nix ran and failed, rather than
// a nix that is missing or could not start.
func Failed(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// Quote renders s as a double-quoted Nix string literal that evaluates to s
// byte for byte (generate's FuzzQuote checks it with the real Nix). Nix
// strings cannot hold NUL.
func Quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\', '$':
			// Escaping every '$' (not only "${") keeps "$${" and a trailing
			// '$' unambiguous too.
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
