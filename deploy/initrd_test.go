package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/fleet"
)

func TestCheckInitrdKeyPath(t *testing.T) {
	for p, want := range map[string]string{
		"/etc/ssh/initrd_ssh_host_ed25519_key": "",
		"/etc/secrets/initrd/key":              "",
		"etc/ssh/key":                          "is not a clean absolute path",
		"/etc/ssh/../key":                      "is not a clean absolute path",
		"/":                                    "is not a clean absolute path",
		"/etc/ssh/ssh_host_ed25519_key":        "is the main host key",
	} {
		err := CheckInitrdKeyPath(p)
		if (want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", p, err, want)
		}
	}
}

func TestJudgeNIC(t *testing.T) {
	var on fleet.Keystone
	on.Unlock.SSH.Enable = true
	on.Unlock.SSH.InitrdModules = []string{"nvme", "mlx5_core"}
	off := fleet.Keystone{}
	for _, tc := range []struct {
		name     string
		nic      NIC
		cfg      fleet.Keystone
		hardware bool
		refused  bool
	}{
		{"module missing", NIC{"eth0", "igb", "igb"}, on, false, true},
		{"module there, dashes and underscores alike", NIC{"eth0", "mlx5_core", "mlx5-core"}, on, false, false},
		{"built into this kernel: the driver's name is asked for", NIC{"eth0", "e1000e", ""}, on, false, true},
		{"a virtual interface", NIC{"br0", "", ""}, on, false, false},
		{"no initrd ssh", NIC{"eth0", "igb", "igb"}, off, false, false},
		{"facter adds it", NIC{"eth0", "igb", "igb"}, on, true, false},
	} {
		r := JudgeNIC(tc.nic, tc.cfg, tc.hardware)
		if (r != nil) != tc.refused {
			t.Errorf("%s: %+v, refused %v", tc.name, r, tc.refused)
		}
	}
}

func TestAddInitrdKey(t *testing.T) {
	k, err := NewHostKey("root@web1")
	if err != nil {
		t.Fatal(err)
	}
	defer k.Remove()
	ik, err := k.AddInitrdKey("/etc/secrets/initrd/ssh_host_ed25519_key", "root@web1-initrd")
	if err != nil {
		t.Fatal(err)
	}
	if string(ik.Public.Marshal()) == string(k.Public.Marshal()) {
		t.Error("the initrd key is the main key")
	}
	for p, mode := range map[string]os.FileMode{
		"etc/secrets":        0o755,
		"etc/secrets/initrd": 0o755,
		"etc/secrets/initrd/ssh_host_ed25519_key": 0o600,
	} {
		fi, err := os.Stat(filepath.Join(k.ExtraFiles, p))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, %v; want mode %o", p, fi.Mode(), err, mode)
		}
	}
}
