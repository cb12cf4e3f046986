package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/keystone-nix/keystone/internal/hint"
)

// ISOOptions says which installer ISO BuildISO builds.
type ISOOptions struct {
	Flake  string   // keystone's flake or one exporting lib.installerIso; default "."
	Keys   []string // root's authorized_keys lines (checked by the caller); none: the fleet's
	Out    string   // keep the result as OUT/installer-iso (a GC root); "": no link
	System string   // default: this machine's, e.g. x86_64-linux
	Stderr io.Writer
}

// BuildISO builds the installer ISO with nix build and returns its path.
func BuildISO(ctx context.Context, o ISOOptions) (string, error) {
	if o.Flake == "" {
		o.Flake = "."
	}
	if o.System == "" {
		o.System = map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH] + "-linux"
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	nix, err := exec.LookPath("nix")
	if err != nil {
		return "", hint.Errorf("install Nix (https://nixos.org/download), then run keystone iso again", "nix is not installed, so the ISO cannot be built")
	}
	args, err := isoArgs(o)
	if err != nil {
		return "", err
	}
	if o.Out != "" {
		if o.Out, err = filepath.Abs(o.Out); err != nil {
			return "", err
		}
		if err := os.MkdirAll(o.Out, 0o755); err != nil {
			return "", err
		}
	}
	cmd := exec.CommandContext(ctx, nix, args...)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, o.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("nix build of the installer ISO failed: %w", err)
	}
	out := strings.TrimSpace(stdout.String())
	if o.Out != "" {
		out = filepath.Join(o.Out, "installer-iso")
	}
	isos, _ := filepath.Glob(filepath.Join(out, "iso", "*.iso"))
	if len(isos) != 1 {
		return "", fmt.Errorf("nix build made %s, which holds %d files iso/*.iso, not one", out, len(isos))
	}
	return isos[0], nil
}

// isoArgs is nix's command line: the flake's package for the fleet's keys,
// or its lib.installerIso called with the given ones.
func isoArgs(o ISOOptions) ([]string, error) {
	args := []string{"--extra-experimental-features", "nix-command flakes", "build", "--print-out-paths"}
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
