package generate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/internal/nixtest"
)

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `""`},
		{"web1", `"web1"`},
		{`a"b`, `"a\"b"`},
		{`a\b`, `"a\\b"`},
		{"${x}", `"\${x}"`},
		{"$$", `"\$\$"`},
		{"a\nb\tc\rd", `"a\nb\tc\rd"`},
		{"''", `"''"`},
	} {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// FuzzQuote checks with the real Nix that every string CheckNix accepts
// comes back byte for byte from its quoted literal.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{
		"", `"`, `\`, "${", "${x}", "$${x}", "$", "\\${", "''", "''${", "'''", "\n", "\r\n", "\t",
		"ünïcødé ✓", "\xff\xfe", `key" ; x = import /etc/passwd; "`, "a\\\"b", "}", "#", "/*",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckNix(s) != nil {
			if !strings.Contains(s, "\x00") {
				t.Fatalf("CheckNix refused %q, which has no NUL", s)
			}
			return
		}
		// Not t.TempDir: a fuzz test's name holds '#', which ends a Nix path.
		dir, err := os.MkdirTemp("", "quote")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		raw := filepath.Join(dir, "raw")
		if err := os.WriteFile(raw, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		expr := "builtins.readFile " + raw + " == " + Quote(s)
		out, err := nixtest.Run(t, "--eval", "--expr", expr)
		if err != nil {
			t.Fatalf("Quote(%q) = %s: %v", s, Quote(s), err)
		}
		if strings.TrimSpace(out) != "true" {
			t.Fatalf("Quote(%q) = %s evaluates to something else", s, Quote(s))
		}
	})
}

func TestPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"vms/web1/configuration.nix", "./vms/web1/configuration.nix"},
		{"../fleet/vms/a/configuration.nix", "./../fleet/vms/a/configuration.nix"},
		{"my hosts/a/configuration.nix", `(./. + "/my hosts/a/configuration.nix")`},
		{"x${y}/a", `(./. + "/x\${y}/a")`},
	} {
		if got := Path(tc.in).String(); got != tc.want {
			t.Errorf("Path(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
