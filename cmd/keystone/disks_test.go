package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/testhost"
)

// fittingDisks is what lsblk here says fits a 5 GiB layout: an sshd test
// host shares this machine's /dev and /sys, so it sees the same disks.
func fittingDisks(t *testing.T) []string {
	out, err := exec.Command("lsblk", "-J", "-b", "-d", "-o", "PATH,SIZE,TYPE,RM").Output()
	if err != nil {
		t.Fatal(err)
	}
	var l struct {
		Blockdevices []struct {
			Path string
			Size int64
			Type string
			RM   bool
		}
	}
	json.Unmarshal(out, &l)
	var fit []string
	for _, d := range l.Blockdevices {
		if d.Type == "disk" && !d.RM && d.Size >= 5<<30 {
			fit = append(fit, d.Path)
		}
	}
	return fit
}

// TestDisksAndAuto: keystone disks lists a machine's disks by address
// alone, trusting its host key as verify does, and new-host --disk auto
// takes the one that fits, or refuses with the table.
func TestDisksAndAuto(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	kh := filepath.Join(t.TempDir(), "known_hosts")
	reach := []string{"-i", key, "--known-hosts", kh}

	// An unknown host key is refused, then recorded with --accept-new.
	code, _, stderr := keystone(t, append([]string{"disks", "root@" + h.Address()}, reach...)...)
	if code != 2 || !strings.Contains(stderr, "keystone: error: ") {
		t.Errorf("unknown host key: exit %d, %s", code, stderr)
	}
	code, stdout, stderr := keystone(t, append([]string{"disks", "root@" + h.Address(), "--accept-new"}, reach...)...)
	if code != 0 || !strings.HasPrefix(stdout, "DISK") {
		t.Fatalf("disks: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = keystone(t, append([]string{"disks", "root@" + h.Address(), "--format", "json"}, reach...)...)
	var disks []struct {
		Path   string `json:"path"`
		Kernel string `json:"kernel"`
		Size   int64  `json:"size"`
	}
	if err := json.Unmarshal([]byte(stdout), &disks); code != 0 || err != nil || len(disks) == 0 || disks[0].Size <= 0 {
		t.Errorf("disks --format json: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}

	dir := t.TempDir()
	pub := filepath.Join(dir, "me.pub")
	os.WriteFile(pub, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644)
	newHost := append([]string{"new-host", "web1", "--vm", "--key", pub, "--target", "root@" + h.Address(), "--disk", "auto",
		"--dir", filepath.Join(dir, "vms")}, reach...)
	fit := fittingDisks(t)
	code, stdout, stderr = keystone(t, newHost...)
	config, _ := os.ReadFile(filepath.Join(dir, "vms/web1/disk-config.nix"))
	switch len(fit) {
	case 1:
		if code != 0 || !strings.Contains(stderr, "keystone: note: --disk auto: ") || !strings.Contains(string(config), `"`+fit[0]+`"`) {
			t.Errorf("--disk auto with one disk (%s): exit %d\n%s%s\n%s", fit[0], code, stdout, stderr, config)
		}
	default:
		if code == 0 || !strings.Contains(stderr, "--disk auto: ") || config != nil {
			t.Errorf("--disk auto with %d disks: exit %d\n%s%s", len(fit), code, stdout, stderr)
		}
	}

	// Nothing fits: the table, the reason, and nothing written.
	code, stdout, stderr = keystone(t, append(newHost, "--swap", "900T", "--force")...)
	if code == 0 || !strings.Contains(stderr, "DISK") || !strings.Contains(stderr, "keystone: error: --disk auto: no disk of the target fits") {
		t.Errorf("nothing fits: exit %d\n%s%s", code, stdout, stderr)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "vms/web1/disk-config.nix")); string(again) != string(config) {
		t.Error("a refused --disk auto changed the host")
	}

	// Without --target there is nothing to read.
	if code, _, stderr = keystone(t, "new-host", "web2", "--vm", "--key", pub, "--disk", "auto", "--dir", filepath.Join(dir, "vms")); code != 64 ||
		!strings.Contains(stderr, "--disk auto reads the disks of --target") {
		t.Errorf("--disk auto without --target: exit %d, %s", code, stderr)
	}
}
