package generate

import (
	"errors"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/keystone-nix/keystone/internal/nixeval"
)

// Str is a user-supplied string headed for a Nix file. Templates print it
// through String, so every user string lands as a quoted, escaped Nix
// literal and a template cannot emit one raw by accident.
type Str string

func (s Str) String() string { return Quote(string(s)) }

// Quote renders s as a double-quoted Nix string literal that evaluates to s
// byte for byte. Nix strings cannot hold NUL: CheckNix rejects it first.
func Quote(s string) string { return nixeval.Quote(s) }

// CheckNix reports whether s can be written as a Nix string.
func CheckNix(s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New("contains a NUL byte, which a Nix string cannot hold")
	}
	return nil
}

// CheckText accepts what a one-line user string (a key comment, a device
// name) may hold: valid UTF-8 and no control characters but tab. NixOS
// options such as authorizedKeys.keys are single-line strings, and a control
// character in one is at best a paste accident.
func CheckText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("is not valid UTF-8")
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r != '\t' && unicode.IsControl(r) }) {
		return errors.New("contains a control character")
	}
	if strings.ContainsFunc(s, func(r rune) bool { return unicode.Is(unicode.Bidi_Control, r) }) {
		// U+202E and friends make text read differently from what it is.
		return errors.New("contains a bidirectional control character")
	}
	return nil
}

var pathLiteral = regexp.MustCompile(`^[a-zA-Z0-9._+-]+(/[a-zA-Z0-9._+-]+)*$`)

// Path is a slash-separated path relative to the flake root. It prints as a
// Nix path literal when the characters allow one, else as ./. plus a string.
type Path string

func (p Path) String() string {
	if pathLiteral.MatchString(string(p)) {
		return "./" + string(p)
	}
	return "(./. + " + Quote("/"+string(p)) + ")"
}
