package iso

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/internal/exit"
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

// fakeNix says it is Nix $FAKE_NIX_VERSION, and as nix build records its
// argv and makes what nix build would: a store path holding iso/NAME.iso,
// described by --json, and linked at --out-link. Like Nix before 2.9 it
// knows no --print-out-paths.
const fakeNix = `#!/bin/sh
if [ "$1" = --version ]; then echo "nix (Nix) $FAKE_NIX_VERSION"; exit 0; fi
printf '%s\n' "$@" >"$FAKE_NIX_ARGV"
for a; do
	case $a in --print-out-paths) echo "error: unrecognised flag '--print-out-paths'" >&2; exit 1;; esac
done
if [ -n "$FAKE_NIX_FAIL" ]; then echo "error: $FAKE_NIX_FAIL" >&2; exit 1; fi
out=$FAKE_NIX_STORE/abc-nixos.iso
mkdir -p "$out/iso" && touch "$out/iso/nixos-minimal-25.11-x86_64-linux.iso"
while [ $# -gt 0 ]; do [ "$1" = --out-link ] && ln -sfn "$out" "$2"; shift; done
printf '[{"drvPath":"/nix/store/abc-nixos.iso.drv","outputs":{"out":"%s"}}]\n' "$out"
`

func fakeNixOnPath(t *testing.T, version string) (argv func() string, store string) {
	bin, store := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(bin, "nix"), []byte(fakeNix), 0o755)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	argvFile := filepath.Join(t.TempDir(), "argv")
	t.Setenv("FAKE_NIX_ARGV", argvFile)
	t.Setenv("FAKE_NIX_STORE", store)
	t.Setenv("FAKE_NIX_VERSION", version)
	t.Setenv("FAKE_NIX_FAIL", "")
	return func() string {
		b, _ := os.ReadFile(argvFile)
		return strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", " ")
	}, store
}

func TestBuild(t *testing.T) {
	argv, store := fakeNixOnPath(t, "2.24.9")
	flake := t.TempDir()

	iso, err := Build(context.Background(), Options{Flake: "github:me/fleet", System: "x86_64-linux"})
	if err != nil {
		t.Fatal(err)
	}
	if iso != filepath.Join(store, "abc-nixos.iso/iso/nixos-minimal-25.11-x86_64-linux.iso") {
		t.Errorf("iso = %s", iso)
	}
	if got, want := argv(), "--extra-experimental-features nix-command flakes build --json --no-link github:me/fleet#packages.x86_64-linux.installer-iso"; got != want {
		t.Errorf("argv = %s\nwant %s", got, want)
	}

	out := filepath.Join(t.TempDir(), "out")
	key := `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGQ me@"laptop" ${x}`
	iso, err = Build(context.Background(), Options{Flake: flake, Keys: []string{key}, Out: out, System: "aarch64-linux"})
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

	t.Setenv("PATH", t.TempDir())
	if _, err := Build(context.Background(), Options{}); err == nil || !strings.Contains(err.Error(), "nix is not installed") {
		t.Errorf("no nix: %v", err)
	}
}

// TestBuildRefusals: a Nix too old to build it (Debian's nix-bin is 2.8)
// and an unknown --system are refused before nix build runs, and no --out
// folder is left behind by a refusal or a failed build; one that was there
// stays.
func TestBuildRefusals(t *testing.T) {
	argv, _ := fakeNixOnPath(t, "2.8.0")
	out := filepath.Join(t.TempDir(), "new", "out")
	_, err := Build(context.Background(), Options{Out: out, System: "x86_64-linux"})
	if err == nil || !strings.Contains(err.Error(), "is Nix 2.8.0; building the installer ISO needs Nix 2.18 or later") || argv() != "" {
		t.Errorf("Nix 2.8: %v; nix build ran with %q", err, argv())
	}
	if _, err := os.Stat(filepath.Dir(out)); !os.IsNotExist(err) {
		t.Errorf("--out left behind: %v", err)
	}

	_, err = Build(context.Background(), Options{Out: out, System: "sparc-linux"})
	if exit.Code(err) != exit.Usage || !strings.Contains(err.Error(), `--system "sparc-linux": the installer ISO is built for x86_64-linux and aarch64-linux only`) {
		t.Errorf("--system sparc-linux: %v (exit %d)", err, exit.Code(err))
	}

	t.Setenv("FAKE_NIX_VERSION", "2.31.2")
	t.Setenv("FAKE_NIX_FAIL", "flake has no installer-iso")
	_, err = Build(context.Background(), Options{Out: out, System: "x86_64-linux"})
	if err == nil || !strings.Contains(err.Error(), "nix build of the installer ISO failed") {
		t.Errorf("a failed build: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(out)); !os.IsNotExist(err) {
		t.Errorf("--out left behind after a failed build: %v", err)
	}
	there := t.TempDir()
	os.WriteFile(filepath.Join(there, "mine"), nil, 0o644)
	Build(context.Background(), Options{Out: there, System: "x86_64-linux"})
	if _, err := os.Stat(filepath.Join(there, "mine")); err != nil {
		t.Errorf("a failed build took an --out folder that was there: %v", err)
	}
}

func TestVersion(t *testing.T) {
	for out, want := range map[string]string{
		"nix (Nix) 2.8.0\n":                    "2.8.0",
		"nix (Nix) 2.18.1\n":                   "2.18.1",
		"nix (Lix, like Nix) 2.91.1\n":         "2.91.1",
		"nix (Determinate Nix 3.6.2) 2.29.0\n": "2.29.0",
		"nix (Nix) 2.25.0pre20241101_abc\n":    "2.25.0",
		"nix: command not found":               "",
	} {
		if got, _ := Version(out); got != want {
			t.Errorf("Version(%q) = %q, want %q", out, got, want)
		}
	}
	for _, tc := range []struct {
		a, b string
		want int
	}{{"2.8.0", "2.18", -1}, {"2.18.0", "2.18", 0}, {"2.18.1", "2.18", 1}, {"2.91.1", "2.18", 1}, {"3.0", "2.18", 1}} {
		if got := compareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("compareVersions(%s, %s) = %d", tc.a, tc.b, got)
		}
	}
}

// TestRealNixVersion: what this machine's nix --version prints is read as
// the version that Nix itself reports (builtins.nixVersion).
func TestRealNixVersion(t *testing.T) {
	out, err := exec.Command("nix", "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	got, ok := Version(string(out))
	want, err := nixtest.Run(t, "--eval", "--json", "--expr", "builtins.nixVersion")
	if err != nil {
		t.Fatal(err)
	}
	if !ok || !strings.HasPrefix(strings.Trim(strings.TrimSpace(want), `"`), got) {
		t.Errorf("nix --version %q read as %q; builtins.nixVersion is %s", out, got, want)
	}
}

// TestRealNixBuildJSON: what this machine's nix build --json prints is read
// as the store path it built (a builtin derivation, in a store of its own).
func TestRealNixBuildJSON(t *testing.T) {
	root := t.TempDir()
	t.Cleanup(func() { exec.Command("chmod", "-R", "u+w", root).Run() }) // the store is read-only
	cmd := exec.Command("nix", "--extra-experimental-features", "nix-command flakes", "build", "--store", "local?root="+root,
		"--option", "sandbox", "false", "--option", "build-users-group", "", "--option", "substituters", "",
		"--json", "--no-link", "--impure", "--expr",
		`derivation { name = "iso-json"; system = "builtin"; builder = "builtin:buildenv"; derivations = ""; manifest = builtins.toFile "m" ""; }`)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix build: %v: %s", err, out)
	}
	path, err := builtPath(out)
	if err != nil || !strings.HasPrefix(path, "/nix/store/") || !strings.HasSuffix(path, "-iso-json") {
		t.Fatalf("%q: %v", path, err)
	}
	if _, err := os.Stat(filepath.Join(root, path)); err != nil {
		t.Errorf("nix build made no %s: %v", path, err)
	}
}
