// Package exit carries an exit status inside an error, so that the flows
// below cmd can say how a command ends without knowing about the CLI.
package exit

import "errors"

// Statuses every command shares; commands add their own between 2 and 63.
const (
	OK     = 0
	Failed = 1
	Usage  = 64 // sysexits' EX_USAGE: 2 and up mean things to verify and deploy
)

// Error is an error that sets the exit status.
type Error struct {
	Err  error
	Code int
}

func (e Error) Error() string { return e.Err.Error() }
func (e Error) Unwrap() error { return e.Err }

// ExitCode is the status the command ends with.
func (e Error) ExitCode() int { return e.Code }

// With gives err the exit status code.
func With(code int, err error) error {
	if err == nil {
		return nil
	}
	return Error{err, code}
}

// UsageError marks err as a bad command line.
func UsageError(err error) error { return With(Usage, err) }

// Reported is an error already shown (in a report, one line a host): the
// command prints nothing more, and only its status counts.
var Reported = errors.New("")

// Code is the exit status err asks for: its own, else 1; 0 for nil.
func Code(err error) int {
	if err == nil {
		return OK
	}
	var c interface{ ExitCode() int }
	if errors.As(err, &c) {
		return c.ExitCode()
	}
	return Failed
}

// Worst is the highest status among errs; 0 when none failed.
func Worst(errs []error) int {
	code := OK
	for _, err := range errs {
		code = max(code, Code(err))
	}
	return code
}
