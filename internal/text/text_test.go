package text

import "testing"

func TestOneLine(t *testing.T) {
	if got := OneLine("web1\x1b[2J\nevil\u009b\t✓"); got != "web1?[2J?evil??✓" {
		t.Errorf("OneLine = %q", got)
	}
}

func TestFirstLine(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "\n  a b \nc": "a b", "x": "x",
		"Could not chdir to home directory /nonexistent: No such file or directory\nsudo: not found\n": "sudo: not found",
		"bash: warning: setlocale: LC_ALL: cannot change locale (de_DE.UTF-8)\nzpool: not found":       "zpool: not found",
	} {
		if got := FirstLine(in); got != want {
			t.Errorf("FirstLine(%q) = %q, want %q", in, got, want)
		}
	}
}
