package nix_test

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/internal/testhost"
)

// pkgEval is what TestPackageBuild reads of nix/package.nix: its source's
// files (through the lib.fileset stand-in) and the attributes gomod2nix's
// buildGoApplication acts on.
type pkgEval struct {
	Files             []string `json:"files"`
	SubPackages       []string `json:"subPackages"`
	Ldflags           []string `json:"ldflags"`
	CheckPhase        string   `json:"checkPhase"`
	NativeBuildInputs []string `json:"nativeBuildInputs"`
	NativeCheckInputs []string `json:"nativeCheckInputs"`
}

// evalPackage evaluates root/nix/package.nix as callPackage would, with
// every input it asks for a string of its own name, buildGoApplication
// returning its arguments, and testdata/fileset.nix as lib.fileset.
func evalPackage(t *testing.T, root string) pkgEval {
	t.Helper()
	standin, err := filepath.Abs("testdata/fileset.nix")
	if err != nil {
		t.Fatal(err)
	}
	expr := fmt.Sprintf(`let
		f = import %[1]s/nix/package.nix;
		lib = { fileset = import %[2]s; licenses.mit = "mit"; platforms.linux = [ ]; };
		inputs = builtins.mapAttrs (name: _: name) (builtins.removeAttrs (builtins.functionArgs f) [ "version" ]);
		p = f (inputs // { inherit lib; buildGoApplication = attrs: attrs; });
	in {
		files = p.src.files;
		inherit (p) subPackages ldflags checkPhase nativeBuildInputs;
		nativeCheckInputs = p.nativeCheckInputs or [ ];
	}`, root, standin)
	var got pkgEval
	evalJSON(t, expr, &got)
	return got
}

// TestPackageSource: the package's source follows the tree. A new Go
// package, and what the build embeds and the tests read, are in it with
// no edit of package.nix; hosts, docs, CI and the flake's Nix files are not.
func TestPackageSource(t *testing.T) {
	tree := t.TempDir()
	pkg, err := os.ReadFile(filepath.Join(repoRoot(t), "nix/package.nix"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"nix/package.nix":                 string(pkg),
		"go.mod":                          "module example.com/k\n",
		"go.sum":                          "",
		"gomod2nix.toml":                  "schema = 3\n",
		"cmd/keystone/main.go":            "package main\n",
		"newpkg/doc.go":                   "package newpkg\n", // added after package.nix was written
		"newpkg/run.sh":                   "",                 // embedded, as switch/supervisor.sh
		"newpkg/testdata/golden.txt":      "x",
		"newpkg/deeper/testdata/a/b.json": "{}",
		"newpkg/notes.md":                 "",
		"templates/a.nix.tmpl":            "",
		"examples/demo/id_ed25519.pub":    "",
		"examples/consumer/flake.nix":     "{ }",
		"nix/lib.nix":                     "{ }",
		"nix/x_test.go":                   "package nix_test\n",
		"vms/web1/configuration.nix":      "{ }",
		"vms/web1/gen.go":                 "package web1\n",
		"vms/testdata/x":                  "",
		"docs/options.md":                 "",
		"README.md":                       "",
		".ci/run":                         "",
		"flake.nix":                       "{ }",
		"flake.lock":                      "{ }",
		"scripts/test":                    "",
	}
	for name, body := range files {
		p := filepath.Join(tree, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := evalPackage(t, tree).Files
	want := []string{
		"cmd/keystone/main.go",
		"examples/demo/id_ed25519.pub",
		"go.mod",
		"go.sum",
		"newpkg/deeper/testdata/a/b.json",
		"newpkg/doc.go",
		"newpkg/run.sh",
		"newpkg/testdata/golden.txt",
		"nix/x_test.go",
		"templates/a.nix.tmpl",
	}
	if !slices.Equal(got, want) {
		t.Errorf("source files\n got %q\nwant %q", got, want)
	}
}

// stdenvPackages is what nixpkgs' stdenv puts on every build's PATH
// (pkgs/stdenv/generic/common-path.nix, and stdenv.cc), as Debian's
// packages hold it.
var stdenvPackages = []string{"coreutils", "findutils", "diffutils", "sed", "grep", "gawk", "tar",
	"gzip", "bzip2", "make", "bash", "patch", "xz-utils", "file", "gcc", "binutils"}

// inputPackages: the Debian packages with the commands of each nixpkgs
// package that nix/package.nix or gomod2nix's builder (builder/default.nix
// at 7f8d743, :319-323: rsync and go before the package's own
// nativeBuildInputs) puts on PATH. go is the one Go on this machine.
var inputPackages = map[string][]string{
	"rsync":       {"rsync"},
	"makeWrapper": nil, // a setup hook: it adds no command
	"nix":         {"nix-bin"},
	"git":         {"git"},
	"openssh":     {"openssh-client", "openssh-server"}, // nixpkgs' openssh has both
	"qemu":        {"qemu-utils", "qemu-system-x86"},
	"swtpm":       {"swtpm"},
}

// sandboxPath makes a folder of links to exactly the commands a Nix build
// of the package would have on PATH.
func sandboxPath(t *testing.T, dir string, inputs []string) {
	t.Helper()
	debs := slices.Clone(stdenvPackages)
	for _, in := range append([]string{"rsync"}, inputs...) {
		p, ok := inputPackages[in]
		if !ok {
			t.Fatalf("nix/package.nix uses %q, which TestPackageBuild cannot map to Debian's commands: add it to inputPackages", in)
		}
		debs = append(debs, p...)
	}
	os.MkdirAll(dir, 0o755)
	for _, deb := range debs {
		out, err := exec.Command("dpkg", "-L", deb).Output()
		if err != nil {
			t.Fatalf("Debian package %s is not installed (apt-get install %s; scripts/test installs it)", deb, deb)
		}
		for _, f := range strings.Fields(string(out)) {
			if d := filepath.Dir(f); d != "/usr/bin" && d != "/bin" && d != "/usr/sbin" && d != "/sbin" {
				continue
			}
			if st, err := os.Stat(f); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
				continue
			}
			os.Symlink(f, filepath.Join(dir, filepath.Base(f)))
		}
	}
	// stdenv's bash is also its sh.
	os.Symlink("/bin/bash", filepath.Join(dir, "sh"))
	goroot := runtime.GOROOT()
	for _, c := range []string{"go", "gofmt"} {
		os.Symlink(filepath.Join(goroot, "bin", c), filepath.Join(dir, c))
	}
}

// TestPackageBuild builds the package as Nix will: the files of
// package.nix's source (computed by the lib.fileset stand-in) copied into
// an empty folder, the modules vendored (gomod2nix's vendorEnv), then
// gomod2nix's buildPhase for subPackages and package.nix's own checkPhase,
// as an unprivileged user in a network namespace with only loopback, with
// the sandbox's HOME and a PATH of only what stdenv and the package's
// inputs give.
func TestPackageBuild(t *testing.T) {
	testhost.SkipInNixBuild(t, "it builds the package itself")
	testhost.RequireRoot(t)
	root := repoRoot(t)
	tree := trackedTree(t, root)
	got := evalPackage(t, tree)
	if strings.Contains(got.CheckPhase, "-skip") || strings.Contains(got.CheckPhase, "-run") {
		t.Errorf("checkPhase picks tests by name; a test the sandbox cannot run skips itself:\n%s", got.CheckPhase)
	}

	top := t.TempDir()
	os.Chmod(top, 0o755)
	os.Chmod(filepath.Dir(top), 0o755)   // go test's folder for the test's temporary folders
	build := filepath.Join(top, "build") // NIX_BUILD_TOP
	src := filepath.Join(build, "source")
	for _, f := range got.Files {
		copyFile(t, filepath.Join(root, f), filepath.Join(src, f))
	}
	// gomod2nix's vendorEnv comes from gomod2nix.toml, not from src (whose
	// freshness internal/gomod2nix checks): vendor the whole tree and copy it in.
	vendor := exec.Command("go", "mod", "vendor", "-o", filepath.Join(src, "vendor"))
	vendor.Dir = tree
	vendor.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOTOOLCHAIN=local")
	if out, err := vendor.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor (the modules gomod2nix.toml pins, from this machine's module cache): %v\n%s", err, out)
	}
	bin := filepath.Join(top, "bin")
	sandboxPath(t, bin, append(got.NativeBuildInputs, got.NativeCheckInputs...))

	// Go's build cache only saves time; it is kept between runs so the
	// package's tests do not build the standard library every time.
	cache := filepath.Join(testhost.CacheDir(), "go-build-sandbox")
	os.MkdirAll(cache, 0o755)
	script := fmt.Sprintf(`set -euo pipefail
runHook() { :; }
cd source
# gomod2nix builder/default.nix:325-340 (GOFLAGS keeps -trimpath: package.nix
# replaces the checkPhase that would drop it)
export GO111MODULE=on GOFLAGS="-mod=vendor -trimpath" GOPATH=$TMPDIR/go GOSUMDB=off GOPROXY=off
# :421-424
for pkg in %s; do
  echo "Building subPackage $pkg"
  go install -ldflags=%q -v -p "$NIX_BUILD_CORES" "$pkg"
done
# package.nix's checkPhase
%s
`, strings.Join(prefixEach("./", got.SubPackages), " "), strings.Join(got.Ldflags, " "), got.CheckPhase)
	if err := os.WriteFile(filepath.Join(build, "builder.sh"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "-R", "nobody:nogroup", top, cache).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v\n%s", err, out)
	}
	env := []string{
		"PATH=" + bin,
		"HOME=/homeless-shelter",
		"NIX_BUILD_TOP=" + build, "TMPDIR=" + build, "TMP=" + build, "TEMP=" + build, "TEMPDIR=" + build,
		"NIX_BUILD_CORES=2", "NIX_STORE=/nix/store",
		"out=" + filepath.Join(top, "out"),
		"TERM=xterm-256color",
		"GOCACHE=" + cache, "GOTOOLCHAIN=local",
	}
	cmd := exec.Command("unshare", "--net", "--fork", "sh", "-c",
		`ip link set lo up && cd "$1" && shift && exec setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"`,
		"sh", build, "env", "-i")
	cmd.Args = append(cmd.Args, env...)
	cmd.Args = append(cmd.Args, filepath.Join(bin, "bash"), "builder.sh")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the package does not build as Nix builds it: %v\n%s", err, tail(string(out), 60))
	}
	keystone := filepath.Join(build, "go/bin/keystone")
	if _, err := os.Stat(keystone); err != nil {
		t.Fatalf("no keystone binary after the build: %v\n%s", err, tail(string(out), 30))
	}
	if !strings.Contains(string(out), "\nok ") {
		t.Errorf("the checkPhase ran no tests:\n%s", tail(string(out), 30))
	}
	t.Logf("%s", tail(string(out), 40))
}

// trackedTree copies what a flake of this checkout holds (git's tracked and
// added files, as Nix copies a git flake) to a new folder.
func trackedTree(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files in %s: %v", root, err)
	}
	tree := t.TempDir()
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		if _, err := os.Lstat(filepath.Join(root, f)); err != nil {
			continue // deleted, not yet staged
		}
		copyFile(t, filepath.Join(root, f), filepath.Join(tree, f))
	}
	return tree
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	st, err := os.Lstat(from)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(to), 0o755)
	if st.Mode()&fs.ModeSymlink != 0 {
		l, _ := os.Readlink(from)
		if err := os.Symlink(l, to); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, st.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
}

func prefixEach(p string, s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = p + v
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
