// Package hint attaches a next step to an error, for the
// "keystone: hint: …" line the CLI prints under "keystone: error: …".
package hint

import (
	"errors"
	"fmt"
)

type withHint struct {
	err  error
	hint string
}

func (e *withHint) Error() string { return e.err.Error() }
func (e *withHint) Unwrap() error { return e.err }

// Errorf returns an error whose message is format and args and whose hint is h.
func Errorf(h, format string, args ...any) error {
	return &withHint{fmt.Errorf(format, args...), h}
}

// Wrap gives err the hint h.
func Wrap(err error, h string) error {
	if err == nil {
		return nil
	}
	return &withHint{err, h}
}

// Of returns the outermost hint in err's chain, or "".
func Of(err error) string {
	var w *withHint
	if errors.As(err, &w) {
		return w.hint
	}
	return ""
}
