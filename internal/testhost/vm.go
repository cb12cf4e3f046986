package testhost

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// VMGuest is a running guest booted from a VMImage (with vm.Up, which
// forwards 127.0.0.1:Port to its port 22), as a test talks to it: as root,
// with the image's client key, pinning HostKey.
type VMGuest struct {
	Port    int
	Image   *VMImage
	HostKey ssh.PublicKey // the image's, until a test installs another
}

// Guest is the guest on 127.0.0.1:port.
func (img *VMImage) Guest(port int) *VMGuest {
	return &VMGuest{Port: port, Image: img, HostKey: img.HostKey}
}

// Address is 127.0.0.1:Port.
func (g *VMGuest) Address() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(g.Port)) }

// Dial logs in as root; the client is closed when the test ends.
func (g *VMGuest) Dial(t testing.TB) *ssh.Client {
	t.Helper()
	c, err := g.dial()
	if err != nil {
		t.Fatalf("ssh to the VM on %s: %v", g.Address(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (g *VMGuest) dial() (*ssh.Client, error) {
	return ssh.Dial("tcp", g.Address(), &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(g.Image.ClientKey)},
		HostKeyCallback: ssh.FixedHostKey(g.HostKey),
		Timeout:         20 * time.Second,
	})
}

// Run runs a shell command in the guest on a connection of its own and
// returns its stdout; a failure carries stderr.
func (g *VMGuest) Run(t testing.TB, cmd string) (string, error) {
	t.Helper()
	c, err := g.dial()
	if err != nil {
		return "", fmt.Errorf("ssh to the VM on %s: %w", g.Address(), err)
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	var stdout, stderr bytes.Buffer
	s.Stdout, s.Stderr = &stdout, &stderr
	if err := s.Run(cmd); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", cmd, err, stderr.String())
	}
	return stdout.String(), nil
}

// MustRun is Run that fails the test on an error.
func (g *VMGuest) MustRun(t testing.TB, cmd string) string {
	t.Helper()
	out, err := g.Run(t, cmd)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// BootID is the guest kernel's boot ID, new with every boot.
func (g *VMGuest) BootID(t testing.TB) string {
	t.Helper()
	return strings.TrimSpace(g.MustRun(t, "cat /proc/sys/kernel/random/boot_id"))
}

// SSHBanner reports whether sshd in the guest greets on the forwarded port
// (QEMU accepts connections there before anything in the guest listens).
func (g *VMGuest) SSHBanner() bool {
	c, err := net.DialTimeout("tcp4", g.Address(), 2*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	return greets(c, 3*time.Second) == nil
}

// WaitBoot waits up to timeout for a boot other than prevBootID ("" for
// any) to answer SSH, and returns its boot ID.
func (g *VMGuest) WaitBoot(t testing.TB, prevBootID string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if g.SSHBanner() {
			if out, err := g.Run(t, "cat /proc/sys/kernel/random/boot_id"); err == nil {
				if id := strings.TrimSpace(out); id != prevBootID {
					return id
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the VM on %s did not boot again in %v", g.Address(), timeout)
		}
		time.Sleep(time.Second)
	}
}

// NixOSInstallerOSRelease is /etc/os-release of a NixOS 25.11 installer, as
// deploy's pre-flight reads it.
const NixOSInstallerOSRelease = `ANSI_COLOR="0;38;2;126;186;228"
BUG_REPORT_URL="https://github.com/NixOS/nixpkgs/issues"
BUILD_ID="25.11.20251201.8fd9daa"
HOME_URL="https://nixos.org/"
ID=nixos
LOGO="nix-snowflake"
NAME=NixOS
PRETTY_NAME="NixOS 25.11 (Xantusia)"
VARIANT_ID=installer
VERSION="25.11 (Xantusia)"
VERSION_CODENAME=xantusia
VERSION_ID="25.11"
`

// LookLikeInstaller makes the guest's /etc/os-release say it is the NixOS
// installer (until the disk is reinstalled or the overlay thrown away).
func (g *VMGuest) LookLikeInstaller(t testing.TB) {
	t.Helper()
	g.MustRun(t, "rm -f /etc/os-release && cat >/etc/os-release <<'EOF'\n"+NixOSInstallerOSRelease+"EOF\n")
}
