package verify

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fixture reads verify/testdata/<dir>/<name>; testdata/README.md says
// where each came from.
func fixture(t testing.TB, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func ports(tcp, udp []PortRange) Ports { return Ports{TCP: tcp, UDP: udp} }

func r(from, to int) PortRange { return PortRange{from, to} }

func p(n int) PortRange { return PortRange{n, n} }

func TestParseSystemctlShow(t *testing.T) {
	tests := []struct {
		file string
		want map[string]UnitState
	}{
		{"healthy.txt", map[string]UnitState{
			"sshd.service":         {Id: "sshd.service", LoadState: "loaded", ActiveState: "active", SubState: "running", Result: "success"},
			"firewall.service":     {Id: "firewall.service", LoadState: "loaded", ActiveState: "active", SubState: "exited", Result: "success"},
			"avahi-daemon.service": {Id: "avahi-daemon.service", LoadState: "loaded", ActiveState: "active", SubState: "running", Result: "success"},
		}},
		{"broken.txt", map[string]UnitState{
			"sshd.service":     {Id: "sshd.service", LoadState: "loaded", ActiveState: "failed", SubState: "failed", Result: "exit-code"},
			"firewall.service": {Id: "firewall.service", LoadState: "loaded", ActiveState: "inactive", SubState: "dead", Result: "success"},
			"nope.service":     {Id: "nope.service", LoadState: "not-found", ActiveState: "inactive", SubState: "dead", Result: "success"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got := ParseSystemctlShow(fixture(t, "systemctl-show", tt.file))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
	// CRLF, no trailing newline, and two Ids without a blank line between.
	got := ParseSystemctlShow("Id=a.service\r\nActiveState=active\r\nId=b.service\nActiveState=failed")
	want := map[string]UnitState{
		"a.service": {Id: "a.service", ActiveState: "active"},
		"b.service": {Id: "b.service", ActiveState: "failed"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := ParseSystemctlShow(""); len(got) != 0 {
		t.Errorf("empty output: got %v", got)
	}
}

func TestParseFailedUnits(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"none.txt", nil},
		{"two.txt", []string{"sshd.service", "zfs-import-tank.service"}},
		{"marker.txt", []string{"sshd.service"}},
	}
	for _, tt := range tests {
		if got := ParseFailedUnits(fixture(t, "systemctl-failed", tt.file)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.file, got, tt.want)
		}
	}
}

func TestParseSystemState(t *testing.T) {
	for in, want := range map[string]struct {
		state string
		ok    bool
	}{
		"running\n":  {"running", true},
		"degraded\n": {"degraded", true},
		"starting":   {"starting", true},
		"offline\n":  {"offline", true},
		"":           {"", false},
		"Failed to connect to bus: No such file or directory\n": {"Failed to connect to bus: No such file or directory", false},
	} {
		if s, ok := ParseSystemState(in); s != want.state || ok != want.ok {
			t.Errorf("%q: got %q %v, want %q %v", in, s, ok, want.state, want.ok)
		}
	}
}

func TestParseSSHDConfig(t *testing.T) {
	tests := []struct {
		file string
		want map[string][]string // keys checked; others may exist
		n    int                 // number of keys
	}{
		{"keyonly.txt", map[string][]string{
			"port":                         {"22", "2222"},
			"listenaddress":                {"0.0.0.0:22", "0.0.0.0:2222", "[::]:22", "[::]:2222"},
			"permitrootlogin":              {"prohibit-password"}, // printed without-password by OpenSSH 9.2
			"passwordauthentication":       {"no"},
			"kbdinteractiveauthentication": {"no"},
			"usepam":                       {"yes"},
			"authorizedkeysfile":           {"%h/.ssh/authorized_keys /etc/ssh/authorized_keys.d/%u"},
			"ipqos":                        {"lowdelay throughput"},
		}, 87},
		{"password.txt", map[string][]string{
			"port":                         {"22"},
			"listenaddress":                {"[::]:22", "0.0.0.0:22"},
			"permitrootlogin":              {"yes"},
			"passwordauthentication":       {"yes"},
			"kbdinteractiveauthentication": {"yes"},
			"usepam":                       {"no"},
		}, 87},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got := ParseSSHDConfig(fixture(t, "sshd-T", tt.file))
			for k, want := range tt.want {
				if !reflect.DeepEqual(got[k], want) {
					t.Errorf("%s: got %q, want %q", k, got[k], want)
				}
			}
			if len(got) != tt.n {
				t.Errorf("got %d keys, want %d", len(got), tt.n)
			}
		})
	}
	// OpenSSH after 10.0 prints prohibit-password; stderr lines mixed in by
	// 2>&1 are skipped.
	got := ParseSSHDConfig("/etc/ssh/sshd_config line 3: Deprecated option UsePrivilegeSeparation\npermitrootlogin prohibit-password\nport 22\nPort 23\n")
	want := map[string][]string{"permitrootlogin": {"prohibit-password"}, "port": {"22"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseIptablesSave(t *testing.T) {
	healthy := ports([]PortRange{p(22)}, []PortRange{p(5353)})
	broken := ports([]PortRange{p(22), r(1000, 2000), p(8080)}, []PortRange{p(5353), r(60000, 61000)})
	tests := []struct {
		file    string
		present bool
		open    Ports
	}{
		{"healthy.v4.txt", true, healthy},
		// The DHCPv6 rule (-d fe80::/64 udp 546) and ICMPv6 are not ports
		// open to everyone.
		{"healthy.v6.txt", true, healthy},
		// eth0's tcp 9000 and udp 9001 are interface-restricted.
		{"broken.v4.txt", true, broken},
		{"broken.v6.txt", true, broken},
		{"disabled.v4.txt", false, Ports{}},
		{"disabled.v6.txt", false, Ports{}},
		// firewall-stop drops the INPUT jump and leaves the chains.
		{"stopped.v4.txt", false, Ports{}},
		{"stopped.v6.txt", false, Ports{}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			present, open, err := ParseIptablesSave(fixture(t, "iptables-save", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if present != tt.present {
				t.Errorf("present = %v, want %v", present, tt.present)
			}
			if !reflect.DeepEqual(open, tt.open.Normalized()) {
				t.Errorf("open = %s %#v, want %s", open, open, tt.open)
			}
		})
	}
}

func TestParseIptablesSaveRules(t *testing.T) {
	const head = "*filter\n:INPUT ACCEPT [0:0]\n:nixos-fw - [0:0]\n-A INPUT -j nixos-fw\n"
	tests := []struct {
		name  string
		rules string
		open  Ports
	}{
		{"no protocol: all ports of both", "-A nixos-fw -j nixos-fw-accept\n", ports([]PortRange{allPorts}, []PortRange{allPorts})},
		{"tcp without port", "-A nixos-fw -p tcp -j ACCEPT\n", ports([]PortRange{allPorts}, nil)},
		{"multiport", "-A nixos-fw -p tcp -m multiport --dports 80,443,8000:8010 -j nixos-fw-accept\n", ports([]PortRange{p(80), p(443), r(8000, 8010)}, nil)},
		{"negated port", "-A nixos-fw -p udp -m udp ! --dport 53 -j nixos-fw-accept\n", ports(nil, []PortRange{r(1, 52), r(54, 65535)})},
		{"open-ended range", "-A nixos-fw -p tcp -m tcp --dport 60000: -j nixos-fw-accept\n", ports([]PortRange{r(60000, 65535)}, nil)},
		{"negated interface is open", "-A nixos-fw ! -i eth0 -p tcp -m tcp --dport 80 -j nixos-fw-accept\n", ports([]PortRange{p(80)}, nil)},
		{"source-restricted", "-A nixos-fw -s 10.0.0.0/8 -p tcp -m tcp --dport 80 -j nixos-fw-accept\n", Ports{}},
		{"ipset-restricted", "-A nixos-fw -p tcp -m set --match-set trusted src -m tcp --dport 80 -j nixos-fw-accept\n", Ports{}},
		{"ctstate NEW", "-A nixos-fw -p tcp -m conntrack --ctstate NEW -m tcp --dport 80 -j nixos-fw-accept\n", ports([]PortRange{p(80)}, nil)},
		{"other target", "-A nixos-fw -p tcp -m tcp --dport 80 -j nixos-fw-log-refuse\n", Ports{}},
		{"icmp", "-A nixos-fw -p icmp -m icmp --icmp-type 8 -j nixos-fw-accept\n", Ports{}},
		{"quoted comment", "-A nixos-fw -p tcp -m tcp --dport 80 -m comment --comment \"web \\\"site\\\"\" -j nixos-fw-accept\n", ports([]PortRange{p(80)}, nil)},
		{"INPUT before the jump counts", "-I INPUT 1 -p tcp -m tcp --dport 25 -j ACCEPT\n", ports([]PortRange{p(25)}, nil)},
		{"mangle ignored", "COMMIT\n*mangle\n:nixos-fw-rpfilter - [0:0]\n-A nixos-fw-rpfilter -p udp -m udp --sport 67 --dport 68 -j ACCEPT\n", Ports{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := head + tt.rules + "COMMIT\n"
			if strings.HasPrefix(tt.rules, "-I INPUT") {
				out = "*filter\n:nixos-fw - [0:0]\n" + tt.rules + "-A INPUT -j nixos-fw\nCOMMIT\n"
			}
			present, open, err := ParseIptablesSave(out)
			if err != nil {
				t.Fatal(err)
			}
			if !present {
				t.Error("not present")
			}
			if !reflect.DeepEqual(open, tt.open.Normalized()) {
				t.Errorf("open = %s, want %s", open, tt.open)
			}
		})
	}
	for _, bad := range []string{
		"Chain INPUT (policy ACCEPT)\ntarget prot opt source destination\n", // iptables -L, not -save
		head + "-A nixos-fw -p tcp -m tcp --dport 99999 -j nixos-fw-accept\nCOMMIT\n",
		head + "-A nixos-fw -p tcp -m comment --comment \"open -j nixos-fw-accept\n",
	} {
		if _, _, err := ParseIptablesSave(bad); err == nil {
			t.Errorf("no error for %q", bad)
		}
	}
}

func TestParseNftJSON(t *testing.T) {
	tests := []struct {
		file    string
		present bool
		open    Ports
	}{
		{"healthy.json", true, ports([]PortRange{p(22)}, []PortRange{p(5353)})},
		// eth0's 9000/9001 are interface-restricted; 8888 is in temp-ports
		// (nixos-firewall-tool open tcp 8888).
		{"broken.json", true, ports([]PortRange{p(22), r(1000, 2000), p(8080), p(8888)}, []PortRange{p(5353), r(60000, 61000)})},
		{"disabled.json", false, Ports{}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			present, open, err := ParseNftJSON([]byte(fixture(t, "nft", tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			if present != tt.present {
				t.Errorf("present = %v, want %v", present, tt.present)
			}
			if !reflect.DeepEqual(open, tt.open.Normalized()) {
				t.Errorf("open = %s, want %s", open, tt.open)
			}
		})
	}
	// Another table alone is not the NixOS firewall.
	other := `{"nftables": [{"metainfo": {"json_schema_version": 1}}, {"table": {"family": "inet", "name": "filter", "handle": 1}},
		{"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}]}`
	if present, _, err := ParseNftJSON([]byte(other)); err != nil || present {
		t.Errorf("other table: present %v, err %v", present, err)
	}
	for _, bad := range []string{"", "table inet nixos-fw {", `{"foo": 1}`} {
		if _, _, err := ParseNftJSON([]byte(bad)); err == nil {
			t.Errorf("no error for %q", bad)
		}
	}
}

func TestParseNftRules(t *testing.T) {
	const pre = `{"nftables": [{"table": {"family": "inet", "name": "nixos-fw"}},
		{"chain": {"family": "inet", "table": "nixos-fw", "name": "input", "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
		{"rule": {"family": "inet", "table": "nixos-fw", "chain": "input", "expr": [`
	const post = `]}}]}`
	tests := []struct {
		name string
		expr string
		open Ports
	}{
		{"accept all", `{"accept": null}`, ports([]PortRange{allPorts}, []PortRange{allPorts})},
		{"l4proto tcp", `{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"accept": null}`, ports([]PortRange{allPorts}, nil)},
		{"th dport", `{"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 53}}, {"accept": null}`, ports([]PortRange{p(53)}, []PortRange{p(53)})},
		{"not dport", `{"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [22]}}}, {"accept": null}`, ports([]PortRange{r(1, 21), r(23, 65535)}, nil)},
		{"saddr", `{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}}, {"accept": null}`, Ports{}},
		{"ct established", `{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}`, Ports{}},
		{"drop", `{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}}, {"drop": null}`, Ports{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			present, open, err := ParseNftJSON([]byte(pre + tt.expr + post))
			if err != nil {
				t.Fatal(err)
			}
			if !present {
				t.Error("not present")
			}
			if !reflect.DeepEqual(open, tt.open.Normalized()) {
				t.Errorf("open = %s, want %s", open, tt.open)
			}
		})
	}
}

func TestPorts(t *testing.T) {
	a := ports([]PortRange{p(8080), p(22), r(1000, 2000), r(1500, 2500), p(2501)}, nil)
	if got, want := a.String(), "tcp 22,1000-2501,8080 udp none"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if !a.Equal(ports([]PortRange{r(1000, 2501), p(22), p(8080)}, []PortRange{})) {
		t.Error("equal sets differ")
	}
	if a.Equal(ports([]PortRange{p(22)}, nil)) {
		t.Error("different sets are equal")
	}
}

func TestParseSS(t *testing.T) {
	plain := []Listener{
		{Proto: "udp", Addr: "0.0.0.0", Port: 5353},
		{Proto: "udp", Addr: "*", Port: 5353},
		{Proto: "tcp", Addr: "127.0.0.1", Port: 8080},
		{Proto: "tcp", Addr: "0.0.0.0", Port: 22},
		{Proto: "tcp", Addr: "::1", Port: 9090},
		{Proto: "tcp", Addr: "::", Port: 22},
	}
	withProc := make([]Listener, len(plain))
	copy(withProc, plain)
	for i, name := range []string{"nc", "nc", "nc", "sshd", "nc", "sshd"} {
		withProc[i].Process = name
	}
	tests := []struct {
		file string
		want []Listener
	}{
		{"plain.txt", plain},
		{"process.txt", withProc},
		{"header.txt", withProc},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseSS(fixture(t, "ss", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
	// A socket bound to a device, as systemd-resolved's and dhcpcd's are.
	got, err := ParseSS("udp   UNCONN 0      0      127.0.0.53%lo:53        0.0.0.0:*\nudp UNCONN 0 0 [fe80::1]%eth0:546 [::]:*\n")
	want := []Listener{{Proto: "udp", Addr: "127.0.0.53", Iface: "lo", Port: 53}, {Proto: "udp", Addr: "fe80::1", Iface: "eth0", Port: 546}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v %v, want %+v", got, err, want)
	}
	if _, err := ParseSS("tcp LISTEN 0 128 0.0.0.0:ssh 0.0.0.0:*\n"); err == nil {
		t.Error("no error for a service name (ss without -n)")
	}
}

func TestParseZpoolStatusJSON(t *testing.T) {
	tests := []struct {
		file     string
		want     []Pool
		problems [][]string
	}{
		{"json-flat-healthy.json", []Pool{{Name: "rpool", State: "ONLINE", Errors: "No known data errors", Vdevs: []Vdev{
			{Name: "nvme0n1p3", Type: "disk", State: "ONLINE", Parent: "mirror-0", Path: "/dev/nvme0n1p3"},
			{Name: "nvme1n1p3", Type: "disk", State: "ONLINE", Parent: "mirror-0", Path: "/dev/nvme1n1p3"},
			{Name: "mirror-0", Type: "mirror", State: "ONLINE", Parent: "rpool"},
			{Name: "rpool", Type: "root", State: "ONLINE"},
		}}}, [][]string{nil}},
		{"json-flat-problems.json", []Pool{{Name: "tank", State: "ONLINE", Errors: "No known data errors", Vdevs: []Vdev{
			{Name: "vda3", Type: "disk", State: "ONLINE", Checksum: 3, Parent: "tank", Path: "/dev/vda3"},
			{Name: "tank", Type: "root", State: "ONLINE"},
			{Name: "vdb1", Type: "disk", State: "UNAVAIL", Path: "/dev/vdb1"},
		}}}, [][]string{{"vdev vda3 has 3 checksum errors", "vdev vdb1 is UNAVAIL"}}},
		{"json-nested-degraded.json", []Pool{{Name: "tank", State: "DEGRADED", Errors: "2 data errors, use '-v' for a list", Vdevs: []Vdev{
			{Name: "tank", Type: "root", State: "DEGRADED"},
			{Name: "mirror-0", Type: "mirror", State: "DEGRADED", Parent: "tank"},
			{Name: "sda", Type: "disk", State: "ONLINE", Parent: "mirror-0", Path: "/dev/sda1"},
			{Name: "1527839927278881561", Type: "disk", State: "UNAVAIL", Parent: "mirror-0", Path: "/dev/sdb1"},
			{Name: "nvme0n1p4", Type: "disk", State: "ONLINE", Write: 1228, Path: "/dev/nvme0n1p4"},
			{Name: "sdc1", Type: "disk", State: "AVAIL", Path: "/dev/sdc1"},
		}}}, [][]string{{"pool is DEGRADED", "vdev mirror-0 is DEGRADED", "vdev 1527839927278881561 (/dev/sdb1) is UNAVAIL",
			"vdev nvme0n1p4 has 1228 write errors", "errors: 2 data errors, use '-v' for a list"}}},
	}
	// The vdev trees of the mirror and raidz fixtures (testdata/README.md):
	// the data vdev, how many disks it has, and what is wrong.
	for _, tc := range []struct {
		file     string
		vdev     string
		disks    int
		problems []string
	}{
		{"json-flat-healthy.json", "mirror", 2, nil},
		{"json-nested-degraded.json", "mirror", 2, []string{"pool is DEGRADED", "vdev mirror-0 is DEGRADED", "vdev 1527839927278881561 (/dev/sdb1) is UNAVAIL",
			"vdev nvme0n1p4 has 1228 write errors", "errors: 2 data errors, use '-v' for a list"}},
		{"json-man-mirror-healthy.json", "mirror", 2, nil},
		{"json-man-mirror-degraded.json", "mirror", 2, []string{"pool is DEGRADED", "vdev mirror-0 is DEGRADED",
			"vdev 17880913061695450307 (/dev/disk/by-partuuid/db017360-d8e9-4163-961b-144ca75293a3) is UNAVAIL"}},
		{"json-man-raidz1-healthy.json", "raidz1", 3, nil},
		{"json-man-raidz1-degraded.json", "raidz1", 3, []string{"pool is DEGRADED", "vdev raidz1-0 is DEGRADED",
			"vdev 1527839927278881561 (/dev/disk/by-partuuid/97cd98fb-8fb8-4ac4-bc84-bd8950a7ace7) is UNAVAIL"}},
		{"json-flat-problems.json", "single", 1, []string{"vdev vda3 has 3 checksum errors", "vdev vdb1 is UNAVAIL"}},
	} {
		pools, err := ParseZpoolStatusJSON([]byte(fixture(t, "zpool-status", tc.file)))
		if err != nil || len(pools) != 1 {
			t.Fatalf("%s: %v %v", tc.file, pools, err)
		}
		vdev, disks, ok := pools[0].Topology()
		if !ok || vdev != tc.vdev || disks != tc.disks {
			t.Errorf("%s: topology %s of %d (%v), want %s of %d", tc.file, vdev, disks, ok, tc.vdev, tc.disks)
		}
		if got := pools[0].Problems(); !reflect.DeepEqual(got, tc.problems) {
			t.Errorf("%s: problems %q, want %q", tc.file, got, tc.problems)
		}
	}
	if _, _, ok := (Pool{Name: "rpool", Vdevs: []Vdev{{Name: "rpool", Type: "root"}, {Name: "mirror-0", Type: "mirror"}}}).Topology(); ok {
		t.Error("a tree without parents (the text form) has a topology")
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseZpoolStatusJSON([]byte(fixture(t, "zpool-status", tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			for i, pool := range got {
				if i < len(tt.problems) && !reflect.DeepEqual(pool.Problems(), tt.problems[i]) {
					t.Errorf("%s problems %q, want %q", pool.Name, pool.Problems(), tt.problems[i])
				}
			}
		})
	}
	if _, err := ParseZpoolStatusJSON([]byte("  pool: tank\n")); err == nil {
		t.Error("no error for text")
	}
}

func TestParseZpoolStatus(t *testing.T) {
	healthy := Pool{Name: "rpool", State: "ONLINE", Errors: "No known data errors", Vdevs: []Vdev{
		{Name: "rpool", Type: "root", State: "ONLINE"},
		{Name: "mirror-0", Type: "mirror", State: "ONLINE"},
		{Name: "nvme0n1p3", State: "ONLINE"},
		{Name: "nvme1n1p3", State: "ONLINE"},
	}}
	onlineBad := Pool{Name: "tank", State: "ONLINE", Errors: "No known data errors", Vdevs: []Vdev{
		{Name: "tank", Type: "root", State: "ONLINE"},
		{Name: "vda3", State: "ONLINE", Checksum: 3},
		{Name: "vdb1", State: "UNAVAIL"},
	}}
	tests := []struct {
		file     string
		want     []Pool
		problems [][]string
	}{
		{"text-healthy.txt", []Pool{healthy}, [][]string{nil}},
		{"text-degraded.txt", []Pool{{Name: "tank", State: "DEGRADED", Errors: "2 data errors, use '-v' for a list", Vdevs: []Vdev{
			{Name: "tank", Type: "root", State: "DEGRADED"},
			{Name: "mirror-0", Type: "mirror", State: "DEGRADED"},
			{Name: "sda", State: "ONLINE"},
			{Name: "1527839927278881561", State: "UNAVAIL"},
			{Name: "nvme0n1p4", State: "ONLINE", Write: 1228},
			{Name: "nvme0n1p5", State: "ONLINE"},
			{Name: "sdc1", State: "AVAIL"},
		}}}, [][]string{{"pool is DEGRADED", "vdev mirror-0 is DEGRADED", "vdev 1527839927278881561 is UNAVAIL",
			"vdev nvme0n1p4 has 1228 write errors", "errors: 2 data errors, use '-v' for a list"}}},
		{"text-two-pools.txt", []Pool{healthy, onlineBad}, [][]string{nil, {"vdev vda3 has 3 checksum errors", "vdev vdb1 is UNAVAIL"}}},
		{"text-none.txt", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseZpoolStatus(fixture(t, "zpool-status", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			for i, pool := range got {
				if !reflect.DeepEqual(pool.Problems(), tt.problems[i]) {
					t.Errorf("%s problems %q, want %q", pool.Name, pool.Problems(), tt.problems[i])
				}
			}
		})
	}
	// Colour codes (ZFS_COLOR) are stripped.
	colored := strings.ReplaceAll(fixture(t, "zpool-status", "text-healthy.txt"), "ONLINE", "\x1b[0;32mONLINE\x1b[0m")
	if got, err := ParseZpoolStatus(colored); err != nil || !reflect.DeepEqual(got, []Pool{healthy}) {
		t.Errorf("coloured: got %+v %v", got, err)
	}
}

func TestParseZfsGet(t *testing.T) {
	healthy := []Dataset{
		{Name: "rpool/crypt", Encryption: "aes-256-gcm", KeyStatus: "available", EncryptionRoot: "rpool/crypt"},
		{Name: "rpool/crypt/home", Encryption: "aes-256-gcm", KeyStatus: "available", EncryptionRoot: "rpool/crypt"},
		{Name: "rpool/crypt/nix", Encryption: "aes-256-gcm", KeyStatus: "available", EncryptionRoot: "rpool/crypt"},
	}
	broken := []Dataset{
		{Name: "rpool/crypt", Encryption: "aes-256-gcm", KeyStatus: "unavailable", EncryptionRoot: "rpool/crypt"},
		{Name: "rpool/crypt/home", Encryption: "aes-256-gcm", KeyStatus: "unavailable", EncryptionRoot: "rpool/crypt"},
		{Name: "rpool/crypt/plain", Encryption: "off", KeyStatus: "-", EncryptionRoot: "-"},
	}
	for file, want := range map[string][]Dataset{"text-healthy.txt": healthy, "text-broken-source.txt": broken} {
		got, err := ParseZfsGet(fixture(t, "zfs-get", file))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v\nwant %+v", file, got, want)
		}
	}
	got, err := ParseZfsGetJSON([]byte(fixture(t, "zfs-get", "json-broken.json")))
	want := []Dataset{broken[0], broken[1], {Name: "rpool/plain", Encryption: "off", KeyStatus: "-", EncryptionRoot: "-"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("json: got %+v %v\nwant %+v", got, err, want)
	}
	// Without -H: a header and space-aligned columns.
	got, err = ParseZfsGet("NAME   PROPERTY    VALUE        SOURCE\nrpool  encryption  off          default\nrpool  keystatus   -            -\n")
	if want := []Dataset{{Name: "rpool", Encryption: "off", KeyStatus: "-"}}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("no -H: got %+v %v", got, err)
	}
	if _, err := ParseZfsGet("cannot open 'nope': dataset does not exist\n"); err == nil {
		t.Error("no error for an error message")
	}
}

func TestParseCryptsetupStatus(t *testing.T) {
	tests := []struct {
		file, name string
		want       CryptStatus
	}{
		{"luks2-in-use.txt", "cryptroot", CryptStatus{Name: "cryptroot", Active: true, InUse: true, Type: "LUKS2", Cipher: "aes-xts-plain64", KeyBits: 512, Device: "/dev/nvme0n1p2", Mode: "read/write"}},
		{"luks1-active-old.txt", "cryptdata", CryptStatus{Name: "cryptdata", Active: true, Type: "LUKS1", Cipher: "aes-xts-plain64", KeyBits: 256, Device: "/dev/sdb1", Mode: "read/write"}},
		{"inactive.txt", "cryptroot", CryptStatus{Name: "cryptroot"}},
		{"suspended.txt", "cryptroot", CryptStatus{Name: "cryptroot", Active: true, InUse: true, Type: "LUKS2", Cipher: "aes-xts-plain64", KeyBits: 512, Device: "/dev/vda2", Mode: "read/write (suspended)"}},
	}
	for _, tt := range tests {
		got, err := ParseCryptsetupStatus(tt.name, fixture(t, "cryptsetup-status", tt.file))
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		if got != tt.want {
			t.Errorf("%s: got %+v\nwant %+v", tt.file, got, tt.want)
		}
	}
	if _, err := ParseCryptsetupStatus("cryptdata", fixture(t, "cryptsetup-status", "luks2-in-use.txt")); err == nil {
		t.Error("no error for another device's status")
	}
	if _, err := ParseCryptsetupStatus("x", "Cannot initialize device-mapper. Is dm_mod kernel module loaded?\n"); err == nil {
		t.Error("no error for an error message")
	}
}

func TestParseFindmntJSON(t *testing.T) {
	sub := []Mount{
		{"/mnt/ks-fix", "tmpfs", "tmpfs"},
		{"/mnt/ks-fix/boot", "tmpfs", "tmpfs"},
		{"/mnt/ks-fix/nix", "tmpfs", "tmpfs"},
		{"/mnt/ks-fix/with space", "tmpfs", "tmpfs"},
		{"/mnt/ks-fix/full", "tmpfs", "tmpfs"},
	}
	tests := []struct {
		file string
		want []Mount
	}{
		{"root.json", []Mount{{"/", "/dev/vda", "ext4"}}},
		{"tree.json", sub},
		{"list.json", sub},
		{"none.json", nil},
	}
	for _, tt := range tests {
		got, err := ParseFindmntJSON([]byte(fixture(t, "findmnt", tt.file)))
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.file, got, tt.want)
		}
	}
	if _, err := ParseFindmntJSON([]byte("TARGET SOURCE FSTYPE\n/ /dev/vda ext4\n")); err == nil {
		t.Error("no error for text")
	}
}

func TestParseDf(t *testing.T) {
	want := []Usage{
		{"/mnt/ks-fix", 0},
		{"/mnt/ks-fix/boot", 0},
		{"/mnt/ks-fix/nix", 32},
		{"/mnt/ks-fix/with space", 0},
		{"/mnt/ks-fix/full", 93},
	}
	for _, file := range []string{"P.txt", "P-B1.txt", "output.txt"} {
		got, err := ParseDf(fixture(t, "df", file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, want %+v", file, got, want)
		}
	}
	// A file system without a size prints "-".
	got, err := ParseDf("Filesystem 1024-blocks Used Available Capacity Mounted on\nportal 0 0 0 - /run/user/1000/doc\n/dev/vda 100 95 5 95% /\n")
	if want := []Usage{{"/", 95}}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v %v, want %+v", got, err, want)
	}
	for _, bad := range []string{"", "df: /nope: No such file or directory\n", "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda 100 95 5 lots /\n"} {
		if _, err := ParseDf(bad); err == nil {
			t.Errorf("no error for %q", bad)
		}
	}
}

func TestParseOSRelease(t *testing.T) {
	tests := []struct {
		file string
		want map[string]string // keys checked
		n    int
	}{
		{"debian12.txt", map[string]string{"ID": "debian", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)", "VERSION_ID": "12", "VARIANT_ID": ""}, 9},
		{"nixos-25.11.txt", map[string]string{"ID": "nixos", "NAME": "NixOS", "PRETTY_NAME": "NixOS 25.11 (Xantusia)", "VERSION_ID": "25.11", "VARIANT_ID": "", "ID_LIKE": ""}, 23},
		{"nixos-25.11-installer.txt", map[string]string{"ID": "nixos", "VARIANT_ID": "installer"}, 23},
	}
	for _, tt := range tests {
		got := ParseOSRelease(fixture(t, "os-release", tt.file))
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q", tt.file, k, got[k], v)
			}
		}
		if len(got) != tt.n {
			t.Errorf("%s: %d keys, want %d", tt.file, len(got), tt.n)
		}
	}
	got := ParseOSRelease("# comment\nA=\"say \\\"hi\\\" \\$HOME \\\\\"\nB='single'\n\nC=plain\n")
	want := map[string]string{"A": `say "hi" $HOME \`, "B": "single", "C": "plain"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseAvahiResolve(t *testing.T) {
	tests := []struct {
		file string
		addr string
		ok   bool
	}{
		{"ok.stdout", "192.0.2.10", true},
		{"fail.stdout", "", false},     // stderr: Failed to resolve host name 'missing.local': Timeout reached
		{"nodaemon.stdout", "", false}, // stderr: Failed to create client object: Daemon not running
		{"fail.stderr", "", false},     // stdout and stderr mixed by 2>&1
	}
	for _, tt := range tests {
		addr, ok := ParseAvahiResolve(fixture(t, "avahi-resolve", tt.file))
		if addr != tt.addr || ok != tt.ok {
			t.Errorf("%s: got %q %v, want %q %v", tt.file, addr, ok, tt.addr, tt.ok)
		}
	}
	if msg := fixture(t, "avahi-resolve", "fail.stderr"); !strings.HasPrefix(msg, "Failed to resolve host name 'missing.local': Timeout reached") {
		t.Errorf("fixture fail.stderr is %q", msg)
	}
}
