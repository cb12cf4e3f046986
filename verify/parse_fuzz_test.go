package verify

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// seed adds every file of testdata/<dir> to f's corpus.
func seed(f *testing.F, dir string) {
	paths, _ := filepath.Glob(filepath.Join("testdata", dir, "*"))
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(string(b))
		}
	}
}

func FuzzParseSystemctlShow(f *testing.F) {
	seed(f, "systemctl-show")
	f.Add("Id=\n\nId=a=b\r\n=\n")
	f.Add("Id=ssh.service\nNames=ssh.service sshd.service\n")
	f.Fuzz(func(t *testing.T, s string) {
		for id, u := range ParseSystemctlShow(s) {
			if id == "" || (id != u.Id && !slices.Contains(u.Names, id)) {
				t.Fatalf("unit keyed %q has Id %q and Names %q", id, u.Id, u.Names)
			}
		}
	})
}

func FuzzParseSSHDConfig(f *testing.F) {
	seed(f, "sshd-T")
	f.Add("permitrootlogin without-password\nport\n \n")
	f.Fuzz(func(t *testing.T, s string) {
		for k, vs := range ParseSSHDConfig(s) {
			if k == "" || len(vs) == 0 {
				t.Fatalf("key %q with %d values", k, len(vs))
			}
			if k == "permitrootlogin" {
				for _, v := range vs {
					if v == "without-password" {
						t.Fatal("without-password not normalised")
					}
				}
			}
		}
	})
}

func FuzzParseIptablesSave(f *testing.F) {
	seed(f, "iptables-save")
	f.Add("*filter\n:nixos-fw - [0:0]\n-A INPUT -j nixos-fw\n-A nixos-fw ! \n-A nixos-fw -p tcp --dport 5:1 -j ACCEPT\n")
	f.Fuzz(func(t *testing.T, s string) {
		present, open, err := ParseIptablesSave(s)
		if err != nil {
			return
		}
		if !present && (len(open.TCP) > 0 || len(open.UDP) > 0) {
			t.Fatalf("not present but opens %s", open)
		}
		for _, rs := range [][]PortRange{open.TCP, open.UDP} {
			for i, r := range rs {
				if r.From > r.To || r.From < 0 || r.To > 65535 || (i > 0 && rs[i-1].To+1 >= r.From) {
					t.Fatalf("ranges not normalised: %v", rs)
				}
			}
		}
	})
}
