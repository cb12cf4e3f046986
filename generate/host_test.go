package generate

import (
	"reflect"
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/internal/hint"
)

// wantErr fails t unless err's message contains msg and its hint contains h.
func wantErr(t *testing.T, what string, err error, msg, h string) {
	t.Helper()
	switch {
	case msg == "" && err != nil:
		t.Errorf("%s: unexpected error: %v", what, err)
	case msg == "":
	case err == nil:
		t.Errorf("%s: no error, want one containing %q", what, msg)
	case !strings.Contains(err.Error(), msg):
		t.Errorf("%s: error %q, want it to contain %q", what, err, msg)
	case !strings.Contains(hint.Of(err), h):
		t.Errorf("%s: hint %q, want it to contain %q", what, hint.Of(err), h)
	}
}

func TestCheckName(t *testing.T) {
	for _, tc := range []struct{ name, msg, hint string }{
		{"web1", "", ""},
		{"a", "", ""},
		{"0", "", ""},
		{"test-server", "", ""},
		{strings.Repeat("a", 63), "", ""},
		{"", "a host name is required", "new-host NAME"},
		{strings.Repeat("a", 64), "64 characters long; the limit is 63", "1 to 63"},
		{"-web", "not a valid RFC 1123 label", "not starting or ending with '-'"},
		{"web-", "not a valid RFC 1123 label", "not starting or ending with '-'"},
		{"Web1", "has upper-case letters", "use web1"},
		{"web_1", "not a valid RFC 1123 label", "a-z, 0-9 and '-'"},
		{"web.example", "not a valid RFC 1123 label", ""},
		{`web"1`, "not a valid RFC 1123 label", ""},
		{"wéb", "not a valid RFC 1123 label", ""},
	} {
		wantErr(t, tc.name, CheckName(tc.name), tc.msg, tc.hint)
	}
}

func TestCheckHostID(t *testing.T) {
	for _, tc := range []struct{ id, want, msg string }{
		{"", "", ""},
		{"deadBEEF", "deadbeef", ""},
		{"0123abcd", "0123abcd", ""},
		{"deadbee", "", "not 8 hex digits"},
		{"deadbeef0", "", "not 8 hex digits"},
		{"xyzxyzxy", "", "not 8 hex digits"},
		{"00000000", "", `means "no host id" to ZFS`},
	} {
		got, err := CheckHostID(tc.id, "web1")
		wantErr(t, tc.id, err, tc.msg, "")
		if tc.want != "" && got != tc.want {
			t.Errorf("CheckHostID(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}
	a, _ := CheckHostID("", "web1")
	b, _ := CheckHostID("", "web1")
	c, _ := CheckHostID("", "web2")
	if a != b || a == c || !hexID.MatchString(a) {
		t.Errorf("derived host ids: web1 %q twice %q, web2 %q: want stable, distinct, 8 hex digits", a, b, c)
	}
}

func TestCheckSwap(t *testing.T) {
	for _, tc := range []struct{ in, want, msg string }{
		{"", "", ""},
		{"0", "", ""},
		{"8G", "8G", ""},
		{"512m", "512M", ""},
		{"1T", "1T", ""},
		{"8", "", "is not a size"},
		{"8GB", "", "is not a size"},
		{"-1G", "", "is not a size"},
		{"08G", "", "is not a size"},
		{"100%", "", "is not a size"},
		{`8G"; x = "`, "", "is not a size"},
	} {
		got, err := CheckSwap(tc.in)
		wantErr(t, tc.in, err, tc.msg, "")
		if err == nil && got != tc.want {
			t.Errorf("CheckSwap(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCheckDisk(t *testing.T) {
	for _, tc := range []struct {
		disk      string
		vm        bool
		want      string
		msg, hint string
	}{
		{"/dev/disk/by-id/nvme-Samsung_SSD_980_S64D", false, "/dev/disk/by-id/nvme-Samsung_SSD_980_S64D", "", ""},
		{"/dev/disk/by-path/pci-0000:00:1f.2-ata-1", false, "/dev/disk/by-path/pci-0000:00:1f.2-ata-1", "", ""},
		{"/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", true, "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", "", ""},
		{"", true, "/dev/vda", "", ""},
		{"/dev/vda", true, "/dev/vda", "", ""},
		{"/dev/sdb", true, "/dev/sdb", "", ""},
		{"/dev/nvme0n1", true, "/dev/nvme0n1", "", ""},
		{"/dev/xvda", true, "/dev/xvda", "", ""},
		{"/dev/mmcblk0", true, "/dev/mmcblk0", "", ""},
		{"", false, "", "--disk is required for a physical host", "--vm"},
		{"/dev/sda", false, "", "kernel name that can change between boots", "/dev/disk/by-id/"},
		{"/dev/nvme0n1", false, "", "kernel name", "by-id"},
		{"/dev/vda", false, "", "kernel name", "--vm"},
		{"/dev/mmcblk0", false, "", "kernel name", ""},
		{"/dev/sda1", true, "", "is a partition", "whole disk"},
		{"/dev/nvme0n1p2", true, "", "is a partition", ""},
		{"/dev/disk/by-id/ata-X-part1", false, "", "is a partition", ""},
		{"/dev/disk/by-uuid/1234-ABCD", false, "", "names a filesystem or partition", "by-id"},
		{"/dev/disk/by-partlabel/disk-main-root", true, "", "names a filesystem or partition", ""},
		{"dev/sda", true, "", "not a clean absolute path under /dev", ""},
		{"/tmp/disk.img", true, "", "not a clean absolute path under /dev", ""},
		{"/dev/../etc/passwd", true, "", "not a clean absolute path", ""},
		{"/dev/disk/by-id/", false, "", "not a clean absolute path", ""},
		{"/dev/disk/by-id/a b", false, "", "contains a space, a control character", ""},
		{"/dev/disk/by-id/a\nb", false, "", "contains a space, a control character", ""},
		{"/dev/disk/by-id/\xc2", false, "", "invalid UTF-8", ""},
		{"/dev/mapper/root", true, "", "not a whole-disk device keystone knows", "by-id"},
		{"/dev/loop0", true, "", "not a whole-disk device", ""},
		{"/dev/disk/by-id/a/b", false, "", "not a whole-disk device", ""},
	} {
		got, err := CheckDisk(tc.disk, tc.vm)
		wantErr(t, tc.disk, err, tc.msg, tc.hint)
		if err == nil && got != tc.want {
			t.Errorf("CheckDisk(%q, %v) = %q, want %q", tc.disk, tc.vm, got, tc.want)
		}
	}
}

func TestNewHostDefaultsAndChoices(t *testing.T) {
	key := testKeys(t).ed25519
	h, _, err := NewHost(Options{Name: "web1", VM: true, Keys: []string{key}})
	if err != nil {
		t.Fatal(err)
	}
	if h.Layout != "zfs-encrypted" || h.System != "x86_64-linux" || !reflect.DeepEqual(h.Disks, []string{"/dev/vda"}) || h.Topology != "single" || h.Target != nil || h.Swap != "" || h.InitrdNIC != "virtio_net" {
		t.Errorf("defaults: %+v", h)
	}
	for _, tc := range []struct {
		o         Options
		msg, hint string
	}{
		{Options{Name: "web1", VM: true, Keys: []string{key}, Layout: "btrfs"}, `--layout "btrfs" is not supported`, "zfs-encrypted, luks, ext4"},
		{Options{Name: "web1", VM: true, Keys: []string{key}, System: "riscv64-linux"}, `--system "riscv64-linux" is not supported`, "x86_64-linux, aarch64-linux"},
		{Options{Name: "web1", VM: true, Keys: []string{key}, Target: "root@"}, "the host is missing", "[USER@]HOST[:PORT]"},
		{Options{Name: "web1", VM: true}, "at least one --key is required", "--key"},
		{Options{Name: "web1", VM: true, Keys: []string{key}, HostID: "x"}, "not 8 hex digits", ""},
		{Options{Name: "web1", VM: true, Keys: []string{key}, Swap: "lots"}, "is not a size", ""},
		{Options{Name: "WEB1", VM: true, Keys: []string{key}}, "upper-case", ""},
		{Options{Name: "web1", VM: true, Keys: []string{key}, InitrdNIC: "igb; rm"}, `--initrd-nic "igb; rm" is not a kernel module name`, "lspci -k"},
		{Options{Name: "web1", VM: true, Keys: []string{key}, Layout: "ext4", InitrdNIC: "igb"}, "--initrd-nic is for the encrypted layouts", "--layout zfs-encrypted or luks"},
	} {
		_, _, err := NewHost(tc.o)
		wantErr(t, tc.msg, err, tc.msg, tc.hint)
	}
}

// TestDisksAndTopology: several disks make a pool whose topology defaults
// by their number (and is said in a note); what does not fit is refused
// with one line saying why.
func TestDisksAndTopology(t *testing.T) {
	key := testKeys(t).ed25519
	id := func(n int) []string {
		var d []string
		for i := 1; i <= n; i++ {
			d = append(d, "/dev/disk/by-id/ata-DISK_"+string(rune('0'+i)))
		}
		return d
	}
	for _, tc := range []struct {
		disks     []string
		topology  string
		layout    string
		vm        bool
		want      string // the topology chosen
		note      string
		warning   string
		msg, hint string
	}{
		{disks: id(1), want: "single"},
		{disks: id(2), want: "mirror", note: "--topology mirror (the default for two disks): either disk can fail"},
		{disks: id(3), want: "raidz1", note: "--topology raidz1 (the default for 3 disks): any one disk can fail"},
		{disks: id(5), want: "raidz1", note: "the default for 5 disks"},
		{disks: id(3), topology: "mirror", want: "mirror"},
		{disks: id(4), topology: "raidz2", want: "raidz2"},
		{disks: id(2), topology: "stripe", want: "stripe", warning: "one failed disk loses the whole pool"},
		{disks: []string{"/dev/vda", "/dev/vdb"}, vm: true, want: "mirror", note: "mirror"},
		{disks: id(2), topology: "raidz2", msg: "--topology raidz2 needs at least 4 disks, got 2", hint: "--topology mirror"},
		{disks: id(2), topology: "raidz1", msg: "--topology raidz1 needs at least 3 disks, got 2"},
		{disks: id(1), topology: "mirror", msg: "--topology mirror needs at least 2 disks, got 1"},
		{disks: id(1), topology: "stripe", msg: "--topology stripe needs at least 2 disks, got 1"},
		{disks: id(2), topology: "single", msg: "--topology single takes one disk, got 2"},
		{disks: id(2), topology: "raid10", msg: `--topology "raid10" is not supported`, hint: "single, mirror, raidz1, raidz2, stripe"},
		{disks: append(id(2), id(1)...), msg: "--disk /dev/disk/by-id/ata-DISK_1 is given twice", hint: "once"},
		{disks: []string{"/dev/vda", "/dev/vda"}, vm: true, msg: "--disk /dev/vda is given twice"},
		{disks: []string{"/dev/sda", "/dev/sdb"}, msg: "--disk /dev/sda is a kernel name", hint: "--vm"},
		{disks: append(id(1), "auto"), msg: "--disk auto chooses one disk"},
		{disks: id(2), layout: "luks", msg: "--layout luks takes one disk, got 2", hint: "zfs-encrypted"},
		{disks: id(1), layout: "ext4", topology: "mirror", msg: "--topology mirror needs --layout zfs-encrypted"},
	} {
		name := strings.Join(tc.disks, " ") + " " + tc.topology
		h, notes, err := NewHost(Options{Name: "web1", Disks: tc.disks, Topology: tc.topology, Layout: tc.layout, VM: tc.vm, Keys: []string{key}})
		wantErr(t, name, err, tc.msg, tc.hint)
		if err != nil {
			continue
		}
		if h.Topology != tc.want || !reflect.DeepEqual(h.Disks, tc.disks) {
			t.Errorf("%s: topology %q disks %v, want %q", name, h.Topology, h.Disks, tc.want)
		}
		if got := strings.Join(notes, "; "); (tc.note == "") != (got == "") || !strings.Contains(got, tc.note) {
			t.Errorf("%s: notes %q, want %q", name, got, tc.note)
		}
		if got := strings.Join(h.Warnings, "; "); (tc.warning == "") != (got == "") || !strings.Contains(got, tc.warning) {
			t.Errorf("%s: warnings %q, want %q", name, got, tc.warning)
		}
	}
}
