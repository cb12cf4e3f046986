package verify

import (
	"errors"
	"strings"
	"testing"
)

func nixosExpect() *Expectations {
	return &Expectations{
		Hostname: "test-server",
		Services: []string{"sshd.service", "avahi-daemon.service", "systemd-resolved.service", "firewall.service"},
		Firewall: &Firewall{Enable: true, Backend: "iptables", TCP: []int{22}, UDP: []int{5353}},
		SSHD:     &SSHD{Ports: []int{22}, PermitRootLogin: "prohibit-password"},
		ZFS:      &ZFS{Pools: []string{"rpool"}, EncryptionRoots: []string{"rpool/crypt"}},
		LUKS:     &LUKS{Devices: []string{"cryptroot"}},
		Mounts:   []string{"/", "/boot"},
		MDNS:     &MDNS{Publish: true},
	}
}

func mirror2(e *Expectations) {
	e.ZFS.Pools = []string{"tank"}
	e.ZFS.Topology = map[string]Topology{"tank": {"mirror", 2}}
}

func raidz1of3(e *Expectations) {
	e.ZFS.Pools = []string{"tank"}
	e.ZFS.Topology = map[string]Topology{"tank": {"raidz1", 3}}
}

// TestJudges feeds each check's judge real or upstream-documented outputs
// (testdata/README.md says where each came from).
func TestJudges(t *testing.T) {
	out := func(s string) Output { return Output{Stdout: s} }
	for _, tc := range []struct {
		name   string
		check  Check
		edit   func(e *Expectations)
		outs   []Output
		status Status
		says   string
	}{
		{"installer", installerCheck, nil, []Output{out(fixture(t, "os-release", "nixos-25.11-installer.txt"))}, Fail, "still the NixOS installer"},
		{"installed", installerCheck, nil, []Output{out(fixture(t, "os-release", "nixos-25.11.txt"))}, Pass, "NixOS"},
		{"hostname", hostnameCheck, nil, []Output{out("web1\n")}, Fail, `hostname is "web1", want "test-server"`},
		{"degraded", bootCheck, nil, []Output{{Stdout: "degraded\n", Exit: 1}, out(fixture(t, "systemctl-failed", "two.txt"))}, Fail, "degraded: failed units"},
		{"no systemd", bootCheck, nil, []Output{{Stderr: "System has not been booted with systemd as init system (PID 1).", Exit: 1}, out("")}, Fail, "not been booted with systemd"},
		{"starting", bootCheck, nil, []Output{{Stdout: "starting\n", Exit: 1}, out("")}, Warn, "still booting"},
		{"services down", servicesCheck, nil, []Output{out(fixture(t, "systemctl-show", "broken.txt"))}, Fail, "sshd.service failed (failed)"},
		{"services up", servicesCheck, func(e *Expectations) {
			e.Services = []string{"sshd.service", "avahi-daemon.service", "firewall.service"}
		}, []Output{out(fixture(t, "systemctl-show", "healthy.txt"))}, Pass, "firewall (exited)"},
		{"unknown unit", servicesCheck, func(e *Expectations) { e.Services = []string{"nope.service"} },
			[]Output{out("Id=nope.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\n")}, Fail, "nope.service not found"},
		{"sshd key only", sshdCheck, func(e *Expectations) { e.SSHD.Ports = []int{2222, 22} }, []Output{out(fixture(t, "sshd-T", "keyonly.txt")), out("publickey-only")}, Pass, "permitrootlogin prohibit-password"},
		{"sshd passwords", sshdCheck, nil, []Output{out(fixture(t, "sshd-T", "password.txt")), out("password keyboard-interactive")}, Fail, "the server offers password login"},
		{"old sshd says without-password", sshdCheck, nil,
			[]Output{out("port 22\npermitrootlogin without-password\npasswordauthentication no\nkbdinteractiveauthentication no\n"), out("publickey-only")}, Pass, ""},
		{"iptables healthy", firewallCheck, nil, []Output{out(fixture(t, "iptables-save", "healthy.v4.txt")), out(fixture(t, "iptables-save", "healthy.v6.txt"))}, Pass, "iptables opens tcp 22 udp 5353"},
		{"iptables extra port", firewallCheck, nil, []Output{out(fixture(t, "iptables-save", "broken.v4.txt")), out("")}, Fail, "want tcp 22 udp 5353"},
		{"iptables stopped", firewallCheck, nil, []Output{out(fixture(t, "iptables-save", "stopped.v4.txt")), out("")}, Fail, "the firewall is not running"},
		{"nft healthy", firewallCheck, func(e *Expectations) { e.Firewall.Backend = "nftables" }, []Output{out(fixture(t, "nft", "healthy.json"))}, Pass, "nixos-fw opens"},
		{"nft disabled", firewallCheck, func(e *Expectations) { e.Firewall.Backend = "nftables" }, []Output{out(fixture(t, "nft", "disabled.json"))}, Fail, "not running"},
		{"exposure extra", exposureCheck, nil, []Output{{Stdout: "22,8080", Stderr: "1025 ports scanned"}}, Fail, "open TCP ports 8080, only 22 expected"},
		{"exposure initrd port open", exposureCheck, func(e *Expectations) { e.Unlock = &Unlock{Port: 2222, HostKey: "/k"} },
			[]Output{{Stdout: "22,2222", Stderr: "1026 ports scanned"}}, Fail, "open TCP ports 2222, only 22 expected (2222 is the initrd's SSH port, which must be closed once the system runs)"},
		{"exposure missing", exposureCheck, nil, []Output{{Stdout: "none", Stderr: "1025 ports scanned"}}, Warn, "nothing answers"},
		{"zfs healthy", zfsCheck, nil, []Output{out(fixture(t, "zpool-status", "json-flat-healthy.json")), out(fixture(t, "zfs-get", "text-healthy.txt"))}, Pass, "encrypted (aes-256-gcm, key available)"},
		{"zfs degraded", zfsCheck, nil, []Output{out(fixture(t, "zpool-status", "text-degraded.txt")), out(fixture(t, "zfs-get", "text-healthy.txt"))}, Fail, "pool rpool"},
		{"zfs key unavailable", zfsCheck, nil, []Output{out(fixture(t, "zpool-status", "text-healthy.txt")), out(fixture(t, "zfs-get", "text-broken-source.txt"))}, Fail, "key is unavailable"},
		{"zfs mirror healthy", zfsCheck, mirror2, []Output{out(fixture(t, "zpool-status", "json-man-mirror-healthy.json")), out(fixture(t, "zfs-get", "text-healthy.txt"))}, Pass, "tank ONLINE (mirror of 2 disks)"},
		{"zfs mirror degraded", zfsCheck, mirror2, []Output{out(fixture(t, "zpool-status", "json-man-mirror-degraded.json")), out(fixture(t, "zfs-get", "text-healthy.txt"))},
			Fail, "pool tank: pool is DEGRADED, vdev mirror-0 is DEGRADED, vdev 17880913061695450307 (/dev/disk/by-partuuid/db017360-d8e9-4163-961b-144ca75293a3) is UNAVAIL"},
		{"zfs raidz1 healthy", zfsCheck, raidz1of3, []Output{out(fixture(t, "zpool-status", "json-man-raidz1-healthy.json")), out(fixture(t, "zfs-get", "text-healthy.txt"))}, Pass, "tank ONLINE (raidz1 of 3 disks)"},
		{"zfs raidz1 degraded", zfsCheck, raidz1of3, []Output{out(fixture(t, "zpool-status", "json-man-raidz1-degraded.json")), out(fixture(t, "zfs-get", "text-healthy.txt"))},
			Fail, "vdev 1527839927278881561 (/dev/disk/by-partuuid/97cd98fb-8fb8-4ac4-bc84-bd8950a7ace7) is UNAVAIL"},
		{"zfs raidz1 where a mirror was made", zfsCheck, mirror2, []Output{out(fixture(t, "zpool-status", "json-man-raidz1-healthy.json")), out(fixture(t, "zfs-get", "text-healthy.txt"))},
			Fail, "pool tank: is raidz1 of 3 disks, want mirror of 2 disks"},
		{"zfs one disk where a mirror was made", zfsCheck, func(e *Expectations) {
			e.ZFS.Pools = []string{"tank"}
			e.ZFS.Topology = map[string]Topology{"tank": {"mirror", 2}}
		},
			[]Output{out(fixture(t, "zpool-status", "json-flat-problems.json")), out(fixture(t, "zfs-get", "text-healthy.txt"))}, Fail, "is one disk, want mirror of 2 disks"},
		{"zfs text: no tree", zfsCheck, func(e *Expectations) { e.ZFS.Topology = map[string]Topology{"rpool": {"mirror", 2}} },
			[]Output{out(fixture(t, "zpool-status", "text-healthy.txt")), out(fixture(t, "zfs-get", "text-healthy.txt"))}, Pass, "layout not compared"},
		{"zfs child unencrypted", zfsCheck, nil, []Output{out(fixture(t, "zpool-status", "text-healthy.txt")),
			out("rpool/crypt\tencryption\taes-256-gcm\nrpool/crypt\tkeystatus\tavailable\nrpool/crypt/tmp\tencryption\toff\nrpool/crypt/tmp\tkeystatus\t-\n")},
			Fail, "rpool/crypt/tmp has encryption=off"},
		{"luks open, root on it", luksCheck, nil, []Output{out(`{"filesystems": [{"target": "/", "source": "/dev/mapper/cryptroot", "fstype": "ext4"}]}`),
			out(fixture(t, "cryptsetup-status", "luks2-in-use.txt"))}, Pass, "cryptroot open"},
		{"luks root elsewhere", luksCheck, nil, []Output{out(fixture(t, "findmnt", "root.json")), out(fixture(t, "cryptsetup-status", "luks2-in-use.txt"))}, Fail, "/ is mounted from /dev/vda, not from dm-crypt"},
		{"luks closed", luksCheck, nil, []Output{out(`{"filesystems": [{"target": "/", "source": "/dev/mapper/cryptroot", "fstype": "ext4"}]}`),
			{Stdout: fixture(t, "cryptsetup-status", "inactive.txt"), Exit: 4}}, Fail, "cryptroot is not open"},
		{"mounts full", mountsCheck, func(e *Expectations) { e.Mounts = []string{"/"} }, []Output{out(fixture(t, "findmnt", "root.json")),
			out("Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda 100 95 5 95% /\n")}, Fail, "/ is 95% full"},
		{"mount missing", mountsCheck, nil, []Output{out(fixture(t, "findmnt", "root.json")), out("")}, Fail, "/boot is not mounted"},
		{"mdns elsewhere", mdnsCheck, nil, []Output{out(fixture(t, "avahi-resolve", "ok.stdout")), {Err: errNotOnLink}}, Skip, "no multicast query"},
		{"mdns not published", mdnsCheck, func(e *Expectations) { e.MDNS.Publish = false }, []Output{out(""), {Err: errNotOnLink}}, Skip, "does not publish"},
		{"mdns avahi down", mdnsCheck, nil, []Output{{Stderr: "avahi-daemon is not running", Exit: 3}, {Err: errors.New("no mDNS answer")}}, Fail, "avahi-daemon is not running"},
	} {
		e := nixosExpect()
		if tc.edit != nil {
			tc.edit(e)
		}
		status, ev := tc.check.Judge(e, tc.outs)
		if status != tc.status || !strings.Contains(ev, tc.says) {
			t.Errorf("%s: %s %q, want %s with %q", tc.name, status, ev, tc.status, tc.says)
		}
		if strings.Contains(ev, "\n") {
			t.Errorf("%s: evidence spans lines: %q", tc.name, ev)
		}
	}
}

func TestMDNSMessages(t *testing.T) {
	q := mdnsQuery(7, "web1.local", typeA)
	// A response that repeats the question and answers with a compressed
	// name pointing at it, as avahi does.
	resp := append([]byte(nil), q...)
	resp[2] = 0x84 // response, authoritative
	resp[7] = 1    // one answer
	resp = append(resp, 0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 120, 0, 4, 192, 0, 2, 10)
	ips := mdnsAnswers(resp, "web1.local", typeA)
	if len(ips) != 1 || ips[0].String() != "192.0.2.10" {
		t.Errorf("answers %v", ips)
	}
	if got := mdnsAnswers(resp, "other.local", typeA); len(got) != 0 {
		t.Errorf("an answer for another name was taken: %v", got)
	}
	for i := range resp {
		mdnsAnswers(resp[:i], "web1.local", typeA) // truncated: no panic
	}
	if got := mdnsAnswers(q, "web1.local", typeA); len(got) != 0 {
		t.Errorf("a query was read as an answer")
	}
}

func FuzzMDNSAnswers(f *testing.F) {
	f.Add(mdnsQuery(1, "a.local", typeA))
	f.Add([]byte{0, 0, 0x84, 0, 0, 0, 0, 1, 0xC0, 12, 0xC0, 8})
	f.Fuzz(func(t *testing.T, msg []byte) {
		mdnsAnswers(msg, "a.local", typeA)
	})
}

func TestParsePorts(t *testing.T) {
	got, err := ParsePorts("1-3,22, 8080")
	if err != nil || len(got) != 5 || got[3] != 22 || got[4] != 8080 {
		t.Errorf("ParsePorts = %v, %v", got, err)
	}
	for _, bad := range []string{"", "0", "65536", "5-3", "a", "1-", "-5", "+22", "1-+5"} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q) accepted", bad)
		}
	}
}
