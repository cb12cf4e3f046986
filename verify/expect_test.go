package verify

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Whatever nix/expectations.nix makes of the fake configs is accepted.
func TestParseExpectationsTakesWhatNixMakes(t *testing.T) {
	files, _ := filepath.Glob("../nix/testdata/expectations/*.json")
	if len(files) == 0 {
		t.Fatal("no expectations goldens in ../nix/testdata/expectations")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// Strictly: every key the module writes is one verify knows.
		if _, err := ParseExpectationsFile(data); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// A newer module may add keys: from the flake they are left alone, from a
// hand-written --expect file they are typos and refused.
func TestParseExpectationsTakesNewKeysFromTheFlake(t *testing.T) {
	data := []byte(`{"hostname": "web1", "someFutureKey": 1, "sshd": {"ports": [22], "permitRootLogin": "no", "futureSetting": true}}`)
	if _, err := ParseExpectations(data); err != nil {
		t.Errorf("from the flake: %v", err)
	}
	if _, err := ParseExpectationsFile(data); err == nil || !strings.Contains(err.Error(), `unknown key "someFutureKey"`) {
		t.Errorf("from a file: %v", err)
	}
}

func TestParseExpectationsRefuses(t *testing.T) {
	for _, tc := range []struct{ json, msg string }{
		{`{`, "reading expectations"},
		{`{"hostname": 3}`, "reading expectations"},
		{`{}`, "no hostname"},
		{`{"hostname": "web1\u001b[2J"}`, `hostname "web1\x1b[2J" is not a host name`},
		{`{"hostname": "web1\nFAKE"}`, "is not a host name"},
		{`{"hostname": "-web1"}`, "is not a host name"},
		{`{"hostname": "web1", "services": ["--help"]}`, `service "--help" is not a valid name`},
		{`{"hostname": "web1", "services": ["sshd.service; id"]}`, "is not a valid name"},
		{`{"hostname": "web1", "firewall": {"enable": true, "backend": "pf"}}`, "is not iptables, nftables or firewalld"},
		{`{"hostname": "web1", "firewall": {"enable": true, "backend": "nftables", "tcp": [0]}}`, "firewall tcp port 0"},
		{`{"hostname": "web1", "firewall": {"enable": true, "backend": "nftables", "udp": [70000]}}`, "firewall udp port 70000"},
		{`{"hostname": "web1", "sshd": {"ports": [-1], "permitRootLogin": "no"}}`, "sshd port -1"},
		{`{"hostname": "web1", "sshd": {"ports": [22]}}`, `permitRootLogin "" is not one of`},
		{`{"hostname": "web1", "zfs": {"pools": ["-Hroot"]}}`, `zfs pool "-Hroot"`},
		{`{"hostname": "web1", "zfs": {"pools": ["rpool"], "encryptionRoots": ["rpool/../x\n"]}}`, "zfs encryption root"},
		{`{"hostname": "web1", "luks": {"devices": ["--help"]}}`, `luks device "--help"`},
		{`{"hostname": "web1", "zfs": {"pools": ["rpool"], "topology": {"tank": {"vdev": "mirror", "disks": 2}}}}`, `zfs topology of "tank", which is not among the pools`},
		{`{"hostname": "web1", "zfs": {"pools": ["rpool"], "topology": {"rpool": {"vdev": "raid10", "disks": 4}}}}`, `vdev "raid10" is not one of single, stripe, mirror`},
		{`{"hostname": "web1", "zfs": {"pools": ["rpool"], "topology": {"rpool": {"vdev": "single", "disks": 2}}}}`, "2 disks for a single"},
		{`{"hostname": "web1", "zfs": {"pools": ["rpool"], "topology": {"rpool": {"vdev": "mirror", "disks": 0}}}}`, "0 disks for a mirror"},
		{`{"hostname": "web1", "zfs": {"pools": ["rpool"], "topology": {"rpool": {"vdev": "mirror", "disk": 2}}}}`, `unknown key "zfs.topology.rpool.disk" (known in zfs.topology.rpool: vdev, disks)`},
		{`{"hostname": "web1", "mounts": ["home"]}`, `mount point "home"`},
		{`{"hostname": "web1", "sshdd": {}}`, `unknown key "sshdd" (known at the top level: hostname, services, firewall, sshd,`},
		{`{"hostname": "web1", "service": ["sshd.service"]}`, `unknown key "service"`},
		{`{"Hostname": "web1"}`, `unknown key "Hostname"`},
		{`{"hostname": "web1", "SSHD": {"ports": [22], "permitRootLogin": "no"}}`, `unknown key "SSHD"`},
		{`{"hostname": "web1", "firewall": {"enable": true, "backend": "nftables", "tcpp": [22]}}`, `unknown key "firewall.tcpp" (known in firewall: enable, backend`},
		{`{"hostname": "web1", "sshd": {"ports": [22], "permitRootLogin": "no", "passwordauthentication": true}}`, `unknown key "sshd.passwordauthentication"`},
	} {
		_, err := ParseExpectationsFile([]byte(tc.json))
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %v, want %q", tc.json, err, tc.msg)
		}
	}
	if _, err := ParseExpectations([]byte(`{"hostname": "Web_1", "services": ["getty@tty1.service", "systemd-cryptsetup@crypted.service"],
		"zfs": {"pools": ["rpool"], "encryptionRoots": ["rpool/crypt", "rpool/my data"], "topology": {"rpool": {"vdev": "raidz2", "disks": 4}}}, "luks": {"devices": ["crypted"]}}`)); err != nil {
		t.Errorf("valid names refused: %v", err)
	}
}
