// Package iso builds keystone's NixOS installer ISO with nix build.
package iso

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
)

// Options says which installer ISO Build builds.
type Options struct {
	Flake  string   // keystone's flake or one exporting lib.installerIso; default "."
	Keys   []string // root's authorized_keys lines (checked by the caller); none: the fleet's
	Out    string   // keep the result as OUT/installer-iso (a GC root); "": no link
	System string   // default: this machine's, e.g. x86_64-linux
	Stderr io.Writer
}

// Systems are those the flake has packages.<system>.installer-iso for
// (flake.nix's eachSystem).
var Systems = []string{"x86_64-linux", "aarch64-linux"}

// MinNix is the oldest Nix the build can work with: what nixpkgs
// nixos-25.11 asks for in lib/minver.nix ("2.18.0"); older ones stop in its
// evaluation, and before 2.4 there are no flakes at all.
const MinNix = "2.18"

// Build builds the installer ISO with nix build and returns its path.
// Nothing is left behind when it fails: not the --out folder, if it made it.
func Build(ctx context.Context, o Options) (_ string, err error) {
	if o.Flake == "" {
		o.Flake = "."
	}
	if o.System == "" {
		o.System = map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH] + "-linux"
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if !slices.Contains(Systems, o.System) {
		return "", exit.UsageError(hint.Errorf("--system takes "+strings.Join(Systems, " or "),
			"--system %q: the installer ISO is built for %s only", o.System, strings.Join(Systems, " and ")))
	}
	nix, err := exec.LookPath("nix")
	if err != nil {
		return "", hint.Errorf("install Nix (https://nixos.org/download), then run keystone iso again", "nix is not installed, so the ISO cannot be built")
	}
	if err := checkVersion(ctx, nix); err != nil {
		return "", err
	}
	args, err := isoArgs(o)
	if err != nil {
		return "", err
	}
	if o.Out != "" {
		if o.Out, err = filepath.Abs(o.Out); err != nil {
			return "", err
		}
		var made string
		if made, err = mkdirAll(o.Out); err != nil {
			return "", err
		}
		defer func() {
			if err != nil && made != "" {
				os.RemoveAll(made) // it was not there before: nothing of the user's is in it
			}
		}()
	}
	cmd := exec.CommandContext(ctx, nix, args...)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, o.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("nix build of the installer ISO failed: %w", err)
	}
	out, err := builtPath(stdout.Bytes())
	if err != nil {
		return "", err
	}
	if o.Out != "" {
		out = filepath.Join(o.Out, "installer-iso")
	}
	isos, _ := filepath.Glob(filepath.Join(out, "iso", "*.iso"))
	if len(isos) != 1 {
		return "", fmt.Errorf("nix build made %s, which holds %d files iso/*.iso, not one", out, len(isos))
	}
	return isos[0], nil
}

// builtPath is the one output of what nix build --json printed:
// [{"drvPath": …, "outputs": {"out": PATH}}] from Nix 2.8 on.
func builtPath(stdout []byte) (string, error) {
	var built []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if json.Unmarshal(stdout, &built) != nil || len(built) != 1 || built[0].Outputs["out"] == "" {
		return "", fmt.Errorf("nix build printed %q, not the one store path of the ISO", strings.TrimSpace(string(stdout)))
	}
	return built[0].Outputs["out"], nil
}

// mkdirAll makes dir and returns the topmost folder it made, "" if dir
// was there already.
func mkdirAll(dir string) (string, error) {
	top := ""
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		top = d
		if filepath.Dir(d) == d {
			break
		}
	}
	return top, os.MkdirAll(dir, 0o755)
}

// checkVersion refuses a Nix older than MinNix, up front: Debian's nix-bin
// is 2.8, whose failures come late and read as nix's own.
func checkVersion(ctx context.Context, nix string) error {
	out, err := exec.CommandContext(ctx, nix, "--version").Output()
	if err != nil {
		return fmt.Errorf("%s --version: %w", nix, err)
	}
	v, ok := Version(string(out))
	if !ok {
		return fmt.Errorf("%s --version printed %q, which names no version", nix, strings.TrimSpace(string(out)))
	}
	if compareVersions(v, MinNix) < 0 {
		return hint.Errorf("install a newer Nix (https://nixos.org/download), or run keystone iso on a machine that has one",
			"%s is Nix %s; building the installer ISO needs Nix %s or later (what nixpkgs nixos-25.11 evaluates with)", nix, v, MinNix)
	}
	return nil
}

// nixVersion is the version at the end of nix --version's line: "nix (Nix)
// 2.8.0", "nix (Lix, like Nix) 2.91.1", "nix (Determinate Nix 3.6.2) 2.29.0".
var nixVersion = regexp.MustCompile(`(?m)^nix \(.*\) ([0-9]+(\.[0-9]+)+)\S*$`)

// Version is the Nix version in what nix --version printed.
func Version(out string) (string, bool) {
	m := nixVersion.FindStringSubmatch(strings.TrimSpace(out))
	if m == nil {
		return "", false
	}
	return m[1], true
}

// compareVersions compares dotted numbers: -1, 0 or 1.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// isoArgs is nix's command line: the flake's package for the fleet's keys,
// or its lib.installerIso called with the given ones. --json, not
// --print-out-paths (Nix 2.9), says where the result is.
func isoArgs(o Options) ([]string, error) {
	args := []string{"--extra-experimental-features", "nix-command flakes", "build", "--json"}
	if o.Out != "" {
		args = append(args, "--out-link", filepath.Join(o.Out, "installer-iso"))
	} else {
		args = append(args, "--no-link")
	}
	if len(o.Keys) == 0 {
		return append(args, o.Flake+"#packages."+o.System+".installer-iso"), nil
	}
	ref := o.Flake
	if st, err := os.Stat(ref); err == nil && st.IsDir() {
		// getFlake takes no relative paths.
		if ref, err = filepath.Abs(ref); err != nil {
			return nil, err
		}
	}
	keys, err := json.Marshal(o.Keys)
	if err != nil {
		return nil, err
	}
	expr := fmt.Sprintf("((builtins.getFlake %s).lib.installerIso { system = %s; keys = builtins.fromJSON %s; }).config.system.build.isoImage",
		nixString(ref), nixString(o.System), nixString(string(keys)))
	return append(args, "--impure", "--expr", expr), nil
}

// nixString quotes s as a Nix string literal.
func nixString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "${", `\${`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}
