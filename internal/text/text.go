// Package text tidies strings that came from users or hosts before they
// reach a terminal.
package text

import "strings"

// OneLine keeps s on one line and free of terminal escapes: control
// characters (C0, DEL and C1, which holds the one-byte CSI) become '?'.
// Errors quote what the user typed and evidence quotes what the host said.
func OneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

// FirstLine is s's first non-blank line, trimmed, passing over lines
// that say nothing about the command: what sshd and the shell print
// before it runs.
func FirstLine(s string) string {
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		if line != "" && !isNoise(line) {
			return line
		}
	}
	return ""
}

func isNoise(line string) bool {
	return strings.HasPrefix(line, "Could not chdir to home directory ") || // sshd, for a user without a home
		strings.Contains(line, "warning: setlocale: ") || // bash, for a locale the host lacks
		strings.HasPrefix(line, "perl: warning: ")
}
