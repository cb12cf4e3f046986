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
		if _, err := ParseExpectations(data); err != nil {
			t.Errorf("%s: %v", f, err)
		}
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
		{`{"hostname": "web1", "mounts": ["home"]}`, `mount point "home"`},
	} {
		_, err := ParseExpectations([]byte(tc.json))
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %v, want %q", tc.json, err, tc.msg)
		}
	}
	if _, err := ParseExpectations([]byte(`{"hostname": "Web_1", "services": ["getty@tty1.service", "systemd-cryptsetup@crypted.service"],
		"zfs": {"pools": ["rpool"], "encryptionRoots": ["rpool/crypt", "rpool/my data"]}, "luks": {"devices": ["crypted"]}}`)); err != nil {
		t.Errorf("valid names refused: %v", err)
	}
}
