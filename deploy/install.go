// Package deploy installs a host with nixos-anywhere and does what
// nixos-anywhere leaves to luck: read-only pre-flight checks, a typed
// confirmation, a host key generated here and pinned, a bounded run, and a
// bounded wait for the new system.
package deploy

import (
	"strconv"

	"github.com/keystone-nix/keystone/internal/target"
)

// SecretPath is where nixos-anywhere uploads the disk secret and where the
// rendered layouts read it (disk-config.nix).
const SecretPath = "/tmp/secret.key"

// Install is one nixos-anywhere run.
type Install struct {
	Flake          string
	Name           string
	Target         target.Target
	Identity       string // -i; "" leaves it to ssh-agent
	BuildOn        string // auto, local or remote
	ExtraFiles     string // folder copied to the new root: the host key
	DiskSecret     string // local file uploaded as SecretPath; "" for none
	HardwareConfig string // where nixos-facter writes facter.json; "" for none
	Extra          []string
}

// Argv is nixos-anywhere's arguments, without the program name. It is run
// directly, never through a shell.
func (in Install) Argv() []string {
	argv := []string{
		"--flake", in.Flake + "#" + in.Name,
		"--target-host", in.Target.User + "@" + in.Target.Host,
	}
	if in.Target.Port != 22 {
		port := strconv.Itoa(in.Target.Port)
		// nixos-anywhere goes back to port 22 after kexec unless told.
		argv = append(argv, "-p", port, "--post-kexec-ssh-port", port)
	}
	if in.Identity != "" {
		argv = append(argv, "-i", in.Identity)
	}
	if in.BuildOn != "" {
		argv = append(argv, "--build-on", in.BuildOn)
	}
	if in.ExtraFiles != "" {
		argv = append(argv, "--extra-files", in.ExtraFiles)
	}
	if in.DiskSecret != "" {
		argv = append(argv, "--disk-encryption-keys", SecretPath, in.DiskSecret)
	}
	if in.HardwareConfig != "" {
		argv = append(argv, "--generate-hardware-config", "nixos-facter", in.HardwareConfig)
	}
	return append(argv, in.Extra...)
}
