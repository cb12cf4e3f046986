package switcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/nixeval"
)

// nixArgs turn on what keystone uses of Nix, whatever its configuration.
var nixArgs = []string{"--extra-experimental-features", "nix-command flakes"}

// nixCmd runs nix with args; its progress goes to progress, its answer is
// the returned stdout.
func nixCmd(ctx context.Context, progress io.Writer, env []string, args ...string) ([]byte, error) {
	nix, err := exec.LookPath("nix")
	if err != nil {
		return nil, hint.Errorf("run it through `nix run`, or install Nix", "nix is not installed, so nothing can be built or copied")
	}
	cmd := exec.CommandContext(ctx, nix, append(append([]string{}, nixArgs...), args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if progress != nil {
		cmd.Stderr = io.MultiWriter(&stderr, progress)
	}
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("nix %s: %v: %s", args[0], err, lastLines(stderr.String(), 3))
	}
	return stdout.Bytes(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// attr is the host's toplevel as an installable of its flake.
func attr(h *fleet.Host) string {
	return h.Flake + "#nixosConfigurations." + nixeval.Quote(h.Name) + ".config.system.build.toplevel"
}

// buildLocal builds the host's system here and returns its out path.
// (Nix 2.8, Debian's, has --json but not --print-out-paths.)
func buildLocal(ctx context.Context, h *fleet.Host, progress io.Writer) (string, error) {
	out, err := nixCmd(ctx, progress, nil, "build", "--no-link", "--json", attr(h))
	if err != nil {
		return "", err
	}
	var built []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(out, &built); err != nil || len(built) != 1 || built[0].Outputs["out"] == "" {
		return "", fmt.Errorf("nix build printed no out path: %q", out)
	}
	return built[0].Outputs["out"], nil
}

// drvPath is the derivation of the host's system, for a build on the host.
func drvPath(ctx context.Context, h *fleet.Host) (string, error) {
	out, err := nixCmd(ctx, nil, nil, "eval", "--raw", attr(h)+".drvPath")
	return strings.TrimSpace(string(out)), err
}

// storePath is a store path as keystone passes it to a shell on the host:
// nothing in it needs quoting, which the pattern makes sure of.
var storePathRE = regexp.MustCompile(`^/nix/store/[0-9a-df-np-sv-z]{32}-[[:alnum:]+._?=-]+$`)

// pathInfo is one store path of a closure.
type pathInfo struct {
	Path    string `json:"path"`
	NarSize int64  `json:"narSize"`
}

// closure lists the store paths p needs, each with its size; for a .drv,
// what building it needs (nix takes a .drv for its outputs without
// --derivation).
func closure(ctx context.Context, p string) ([]pathInfo, error) {
	out, err := nixCmd(ctx, nil, nil, append([]string{"path-info", "--json", "--recursive"}, asDerivation(p)...)...)
	if err != nil {
		return nil, err
	}
	var infos []pathInfo
	if err := json.Unmarshal(out, &infos); err != nil {
		return nil, fmt.Errorf("reading nix path-info of %s: %w", p, err)
	}
	for _, i := range infos {
		if !storePathRE.MatchString(i.Path) {
			return nil, fmt.Errorf("nix path-info gave %q, not a store path", i.Path)
		}
	}
	return infos, nil
}

// asDerivation is p as the last arguments of a nix command, which takes
// a .drv as itself only with --derivation.
func asDerivation(p string) []string {
	if strings.HasSuffix(p, ".drv") {
		return []string{"--derivation", p}
	}
	return []string{p}
}

// systemFacts is what keystone reads of a built system before copying it.
type systemFacts struct {
	Kernel, Initrd string // where its kernel and initrd links point; "" without
	Inhibitors     string // its switch-inhibitors file; "" without
}

// readSystem reads a system in the local store: `nix store ls --long`
// prints "MODE SIZE ./NAME[ -> TARGET]" a line.
func readSystem(ctx context.Context, p string) (systemFacts, error) {
	var f systemFacts
	out, err := nixCmd(ctx, nil, nil, "store", "ls", "--long", p)
	if err != nil {
		return f, err
	}
	for _, l := range strings.Split(string(out), "\n") {
		entry, target, _ := strings.Cut(l, " -> ")
		fields := strings.Fields(entry)
		if len(fields) == 0 {
			continue
		}
		switch strings.TrimPrefix(fields[len(fields)-1], "./") {
		case "kernel":
			f.Kernel = target
		case "initrd":
			f.Initrd = target
		case "switch-inhibitors":
			inh, err := nixCmd(ctx, nil, nil, "store", "cat", p+"/switch-inhibitors")
			if err != nil {
				return f, err
			}
			f.Inhibitors = strings.ReplaceAll(string(inh), "\n", "")
		}
	}
	return f, nil
}

// diffClosures is nix store diff-closures of the running and the new
// system, short, when the running one is in the local store too; "" when
// it is not.
func diffClosures(ctx context.Context, old, new string) string {
	if _, err := nixCmd(ctx, nil, nil, "path-info", old); err != nil {
		return ""
	}
	out, err := nixCmd(ctx, nil, nil, "store", "diff-closures", old, new)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// sshAlias is the name the host goes by for nix copy's ssh: HostName says
// where it really is, and HostKeyAlias makes the pin the only key
// known_hosts can match, for any address and port.
const sshAlias = "keystone-switch-target"

// copyOptions is how `nix copy` reaches the host through OpenSSH, pinned:
// a known_hosts file that holds only the pin, no other known_hosts, no
// prompt, no multiplexed connection of the user's. It returns the store
// URI, NIX_SSHOPTS, and a cleanup.
func copyOptions(h *fleet.Host) (uri, sshOpts string, cleanup func(), err error) {
	cleanup = func() {}
	if h.HostKeys.Pinned == nil {
		return "", "", cleanup, hint.Errorf("deploy pins it in "+h.PinFile+"; an installed host without one: write its ssh_host_ed25519_key.pub there, after checking it on the console",
			"no pinned host key: switch copies only to a host whose key is pinned")
	}
	dir, err := os.MkdirTemp("", "keystone-switch-")
	if err != nil {
		return "", "", cleanup, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	kh := filepath.Join(dir, "known_hosts")
	line := sshAlias + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(h.HostKeys.Pinned))) + "\n"
	if err := os.WriteFile(kh, []byte(line), 0o600); err != nil {
		return "", "", cleanup, err
	}
	opts := []string{
		"-o", "HostName=" + h.Target.Host, "-p", strconv.Itoa(h.Target.Port),
		"-o", "HostKeyAlias=" + sshAlias, "-o", "UserKnownHostsFile=" + kh, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no",
		"-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "ConnectTimeout=10",
	}
	for _, id := range h.Identities {
		opts = append(opts, "-i", id)
	}
	for _, o := range opts {
		// Nix splits NIX_SSHOPTS at white space.
		if strings.ContainsAny(o, " \t\n") {
			cleanup()
			return "", "", func() {}, hint.Errorf("move it to a path without spaces", "%q has white space, which NIX_SSHOPTS cannot carry to nix copy's ssh", o)
		}
	}
	uri = "ssh://" + h.Target.User + "@" + sshAlias
	if h.Target.User != "root" {
		uri += "?remote-program=sudo%20-n%20nix-store"
	}
	return uri, strings.Join(opts, " "), cleanup, nil
}

// copyClosure copies p and what it needs to the host with nix copy, over
// the pinned ssh.
func copyClosure(ctx context.Context, h *fleet.Host, p string, progress io.Writer) error {
	uri, opts, cleanup, err := copyOptions(h)
	defer cleanup()
	if err != nil {
		return err
	}
	// --no-check-sigs: the paths were built here, unsigned; the host takes
	// them from its root over the pinned connection, as nixos-rebuild's
	// nix-copy-closure does.
	_, err = nixCmd(ctx, progress, []string{"NIX_SSHOPTS=" + opts}, append([]string{"copy", "--no-check-sigs", "--to", uri}, asDerivation(p)...)...)
	if err != nil && strings.Contains(err.Error(), "Host key verification failed") {
		return errors.Join(err, fmt.Errorf("the host's key is not the one pinned in %s", h.PinFile))
	}
	return err
}
