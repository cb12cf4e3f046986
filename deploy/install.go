// Package deploy installs a host with nixos-anywhere and does what
// nixos-anywhere leaves to luck: read-only pre-flight checks, a typed
// confirmation, a host key generated here and pinned, a bounded run, and a
// bounded wait for the new system.
package deploy

import (
	"cmp"
	"strconv"
	"strings"

	"github.com/keystone-nix/keystone/internal/target"
)

// SecretPath is where nixos-anywhere uploads the disk secret and where the
// rendered layouts read it (disk-config.nix).
const SecretPath = "/tmp/secret.key"

// KexecSSHPort is where the sshd of nixos-anywhere's kexec image listens.
const KexecSSHPort = 22

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

	// PostKexecPort is the port nixos-anywhere reaches the kexec
	// installer's sshd at. The flow sets it from
	// keystone.deploy.postKexecSSHPort (a NAT forward in front of the
	// host); 0 means KexecSSHPort, the image's own, whatever -p is.
	PostKexecPort int
	// HostAddr is the address pre-flight reached the target at: the IP
	// of its SSH connection. The flow sets it, so nixos-anywhere goes
	// where pre-flight looked even where Target.Host is a name that
	// resolves elsewhere later or that ~/.ssh/config maps to another
	// host. "" uses Target.Host.
	HostAddr string
}

// Host is where nixos-anywhere connects to: HostAddr, or Target.Host.
func (in Install) Host() string { return cmp.Or(in.HostAddr, in.Target.Host) }

// Argv is nixos-anywhere's arguments, without the program name. It is run
// directly, never through a shell.
func (in Install) Argv() []string {
	host := in.Host()
	dest := host
	if strings.Contains(host, ":") {
		// nixos-anywhere builds its nix store URIs from --target-host
		// ("ssh://$sshConnection?…", "ssh-ng://…"), and Nix (2.31 on
		// nixos-25.11) parses an IPv6 host there only in brackets; it
		// strips them again before it runs ssh.
		dest = "[" + host + "]"
	}
	argv := []string{
		"--flake", in.Flake + "#" + in.Name,
		"--target-host", in.Target.User + "@" + dest,
		// Always: without -p, ssh takes ~/.ssh/config's Port; and
		// nixos-anywhere switches ports after kexec only by rewriting
		// the value after -p (runKexec).
		"-p", strconv.Itoa(in.Target.Port),
		"--post-kexec-ssh-port", strconv.Itoa(cmp.Or(in.PostKexecPort, KexecSSHPort)),
		// ssh keeps the first value it gets for an option, and the
		// command line comes before ~/.ssh/config: no HostName there
		// sends ssh elsewhere. ssh also reads a bracketed --target-host
		// as a name to resolve, which this replaces. ssh expands % in
		// HostName: an IPv6 zone (fe80::1%eth0) needs it doubled.
		"--ssh-option", "HostName=" + strings.ReplaceAll(host, "%", "%%"),
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
