package vm

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/internal/nixtest"
)

func TestNixString(t *testing.T) {
	for _, s := range []string{"", "plain", `a "quoted" \ back\slash`, "${builtins.abort \"x\"}", "$${x} $ {", "tab\there\nnewline\r", "ünï ☃", `["ssh-ed25519 AAAA me@\"x\" ${y}"]`} {
		out, err := nixtest.Run(t, "--eval", "--strict", "--json", "--expr", nixString(s))
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		var got string
		if err := json.Unmarshal([]byte(out), &got); err != nil || got != s {
			t.Errorf("nixString(%q) evaluates to %q (%v)", s, got, err)
		}
	}
}

func FuzzNixString(f *testing.F) {
	f.Add(`${x}\"`)
	f.Fuzz(func(t *testing.T, s string) {
		if !strings.Contains(s, "$") && !strings.Contains(s, `\`) {
			return // keep the fuzzing to what could break out
		}
		out, err := nixtest.Run(t, "--eval", "--strict", "--json", "--expr", nixString(s))
		if err != nil {
			return // invalid UTF-8 and NUL are not Nix strings at all
		}
		var got string
		if json.Unmarshal([]byte(out), &got) == nil && got != s && strings.ToValidUTF8(s, "") == s && !strings.ContainsRune(s, 0) {
			t.Errorf("nixString(%q) evaluates to %q", s, got)
		}
	})
}

// fakeNixBuild records its argv and makes what nix build would: a store
// path holding iso/NAME.iso, printed, and linked at --out-link.
const fakeNixBuild = `#!/bin/sh
printf '%s\n' "$@" >"$FAKE_NIX_ARGV"
out=$FAKE_NIX_STORE/abc-nixos.iso
mkdir -p "$out/iso" && touch "$out/iso/nixos-minimal-25.11-x86_64-linux.iso"
while [ $# -gt 0 ]; do [ "$1" = --out-link ] && ln -sfn "$out" "$2"; shift; done
echo "$out"
`

func TestBuildISO(t *testing.T) {
	bin, store := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(bin, "nix"), []byte(fakeNixBuild), 0o755)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	argvFile := filepath.Join(t.TempDir(), "argv")
	t.Setenv("FAKE_NIX_ARGV", argvFile)
	t.Setenv("FAKE_NIX_STORE", store)
	flake := t.TempDir()
	argv := func() string {
		b, _ := os.ReadFile(argvFile)
		return strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", " ")
	}

	iso, err := BuildISO(context.Background(), ISOOptions{Flake: "github:me/fleet", System: "x86_64-linux"})
	if err != nil {
		t.Fatal(err)
	}
	if iso != filepath.Join(store, "abc-nixos.iso/iso/nixos-minimal-25.11-x86_64-linux.iso") {
		t.Errorf("iso = %s", iso)
	}
	if got, want := argv(), "--extra-experimental-features nix-command flakes build --print-out-paths --no-link github:me/fleet#packages.x86_64-linux.installer-iso"; got != want {
		t.Errorf("argv = %s\nwant %s", got, want)
	}

	out := filepath.Join(t.TempDir(), "out")
	key := `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGQ me@"laptop" ${x}`
	iso, err = BuildISO(context.Background(), ISOOptions{Flake: flake, Keys: []string{key}, Out: out, System: "aarch64-linux"})
	if err != nil {
		t.Fatal(err)
	}
	if iso != filepath.Join(out, "installer-iso/iso/nixos-minimal-25.11-x86_64-linux.iso") {
		t.Errorf("iso = %s", iso)
	}
	got := argv()
	if !strings.Contains(got, "--out-link "+filepath.Join(out, "installer-iso")+" --impure --expr ") {
		t.Fatalf("argv = %s", got)
	}
	// The expression, with a stand-in getFlake, gives the key back intact.
	expr := got[strings.Index(got, "--expr ")+len("--expr "):]
	expr = strings.Replace(expr, "builtins.getFlake", `(ref: { lib.installerIso = a: { config.system.build.isoImage = a // { inherit ref; }; }; })`, 1)
	res, err := nixtest.Run(t, "--eval", "--strict", "--json", "--expr", expr)
	if err != nil {
		t.Fatal(err)
	}
	var call struct {
		Ref, System string
		Keys        []string
	}
	json.Unmarshal([]byte(res), &call)
	if call.Ref != flake || call.System != "aarch64-linux" || len(call.Keys) != 1 || call.Keys[0] != key {
		t.Errorf("installerIso called with %s", res)
	}

	os.WriteFile(filepath.Join(bin, "nix"), []byte("#!/bin/sh\necho 'error: boom' >&2\nexit 1\n"), 0o755)
	if _, err := BuildISO(context.Background(), ISOOptions{}); err == nil {
		t.Error("a failed nix build: no error")
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := BuildISO(context.Background(), ISOOptions{}); err == nil || !strings.Contains(err.Error(), "nix is not installed") {
		t.Errorf("no nix: %v", err)
	}
}
