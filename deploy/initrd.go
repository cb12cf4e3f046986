package deploy

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/remote"
)

// InitrdKey is the initrd sshd's own ed25519 host key (keystone.unlock.ssh):
// never the main key, which it would expose, unencrypted in the initrd on
// the ESP. Its private half goes to the new system with the main key's.
type InitrdKey struct {
	Public ssh.PublicKey
	Path   string // on the host, keystone.unlock.ssh.hostKey
}

// CheckInitrdKeyPath refuses a keystone.unlock.ssh.hostKey deploy cannot
// place: relative, not clean, or the main host key's own path.
func CheckInitrdKeyPath(p string) error {
	switch {
	case !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/":
		return hint.Errorf("write it as an absolute path string, such as \"/etc/ssh/initrd_ssh_host_ed25519_key\"",
			"keystone.unlock.ssh.hostKey %q is not a clean absolute path", p)
	case p == "/etc/ssh/ssh_host_ed25519_key":
		return hint.Errorf("leave keystone.unlock.ssh.hostKey at its default",
			"keystone.unlock.ssh.hostKey is the main host key, which the initrd would leave unencrypted on the ESP")
	}
	return nil
}

// AddInitrdKey makes the initrd's key in the extra-files tree at p (0600).
func (k *HostKey) AddInitrdKey(p, comment string) (*InitrdKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, err
	}
	key := &InitrdKey{Path: p}
	if key.Public, err = ssh.NewPublicKey(pub); err != nil {
		return nil, err
	}
	full := filepath.Join(k.ExtraFiles, filepath.FromSlash(p))
	// Folders as on any root (see write): nixos-anywhere tars their modes.
	var dirs []string
	for d := filepath.Dir(full); d != k.ExtraFiles && strings.HasPrefix(d, k.ExtraFiles); d = filepath.Dir(d) {
		dirs = append(dirs, d)
	}
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return nil, err
	}
	for _, d := range dirs {
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(full, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// Line is the public key as one line, like ssh-keygen's .pub.
func (k *InitrdKey) Line(comment string) []byte {
	line := ssh.MarshalAuthorizedKey(k.Public)
	return append(line[:len(line)-1], []byte(" "+comment+"\n")...)
}

// NIC is the network card the target is reached through, as its kernel
// names it.
type NIC struct {
	Interface string // such as eth0; "" when not found
	Driver    string // /sys/class/net/IF/device/driver; "" for a virtual one
	Module    string // the driver's module; "" when built into the kernel
}

// nicScript finds the interface the SSH connection came in on (the route
// back to the client) and its driver. It runs as the login user: sudo
// would drop SSH_CONNECTION, and /sys is readable by all.
const nicScript = `set -- $SSH_CONNECTION
dev=$(ip -o route get "$1" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p')
echo "interface=$dev"
d=/sys/class/net/$dev/device/driver
[ -n "$dev" ] && [ -e "$d" ] && echo "driver=$(basename "$(readlink -f "$d")")"
[ -n "$dev" ] && [ -e "$d/module" ] && echo "module=$(basename "$(readlink -f "$d/module")")"
exit 0`

// ReadNIC reads the NIC the connection came in on.
func ReadNIC(ctx context.Context, r *remote.Runner) (NIC, error) {
	out := r.As("").Run(ctx, nicScript)
	if out.Err != nil {
		return NIC{}, fmt.Errorf("reading its network card: %w", out.Err)
	}
	var n NIC
	for _, line := range strings.Split(out.Stdout, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "interface":
			n.Interface = v
		case "driver":
			n.Driver = v
		case "module":
			n.Module = v
		}
	}
	return n, nil
}

// JudgeNIC refuses a host whose initrd would come up without the driver
// of the card it is reached through: its sshd would never be reachable.
// A virtual interface (no device) needs nothing.
func JudgeNIC(n NIC, u fleet.Keystone, hardwareConfig bool) *Refusal {
	// A driver built into the running kernel has no module link; NixOS's
	// kernel may still build it as a module, so its name is asked for.
	module := cmp.Or(n.Module, n.Driver)
	if !u.Unlock.SSH.Enable || module == "" || hardwareConfig {
		// --hardware-config: nixpkgs' hardware.facter adds the report's
		// network drivers to the initrd itself.
		return nil
	}
	norm := func(s string) string { return strings.ReplaceAll(s, "-", "_") }
	if slices.ContainsFunc(u.Unlock.SSH.InitrdModules, func(m string) bool { return norm(m) == norm(module) }) {
		return nil
	}
	return &Refusal{
		What: fmt.Sprintf("the initrd would have no driver for %s, the card this host is reached through (%s): keystone unlock could never reach it", n.Interface, module),
		Hint: fmt.Sprintf("add keystone.unlock.ssh.networkModules = [ %q ]; to configuration.nix, or deploy with --hardware-config", module),
	}
}
