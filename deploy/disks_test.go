package deploy

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/internal/hint"
)

func readFixture(t *testing.T, name, links string) []Disk {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	disks, err := parseDisks(data, links)
	if err != nil {
		t.Fatal(err)
	}
	return disks
}

func TestParseDisks(t *testing.T) {
	for _, name := range []string{"lsblk-docker-vm.json", "lsblk-docker-vm-mountpoint.json"} {
		disks := readFixture(t, name, "")
		if len(disks) != 2 {
			t.Fatalf("%s: %+v", name, disks)
		}
		vda := disks[1]
		want := Disk{Path: "/dev/vda", Resolved: "/dev/vda", Size: 274877906944, Transport: "virtio", System: true, Type: "disk", MajMin: "254:0"}
		if vda.Path != want.Path || vda.Stable || vda.Resolved != want.Resolved || vda.Size != want.Size || vda.Transport != want.Transport ||
			!vda.System || vda.BootMedium || vda.Removable || vda.Type != "disk" || vda.MajMin != want.MajMin {
			t.Errorf("%s: vda %+v", name, vda)
		}
		if isDisk(disks[0]) || !isDisk(vda) {
			t.Errorf("%s: zram0 counts as a disk, or vda does not", name)
		}
	}
	// The installer's medium: /iso and /nix/.ro-store.
	disks := readFixture(t, "lsblk-installer-chroot.json", "/dev/disk/by-id/virtio-abc /dev/vda\n/dev/disk/by-id/virtio-abc-part1 /dev/vda1\n")
	if len(disks) != 3 || !disks[0].BootMedium || !disks[1].BootMedium || disks[2].BootMedium || disks[2].System {
		t.Errorf("boot medium: %+v", disks)
	}
	if d := disks[2]; d.Path != "/dev/disk/by-id/virtio-abc" || !d.Stable || len(d.ByID) != 1 {
		t.Errorf("vda's stable name: %+v", d)
	}
	// Old lsblk writes every value as a string.
	old := `{"blockdevices": [{"name": "/dev/sda", "maj:min": "8:0", "size": "500107862016", "model": "Samsung SSD 860 ", "serial": "S3Z9NB0K123456A",
		"tran": "sata", "rm": "0", "type": "disk", "mountpoint": null, "children": [{"name": "/dev/sda1", "mountpoint": "/"}]},
		{"name": "/dev/sdb", "size": "15376318464", "tran": "usb", "rm": "1", "type": "disk", "mountpoint": null}]}`
	got, err := parseDisks([]byte(old), "")
	if err != nil || len(got) != 2 || got[0].Size != 500107862016 || got[0].Model != "Samsung SSD 860" || !got[0].System ||
		got[0].Removable || !got[1].Removable || got[1].Transport != "usb" {
		t.Errorf("old lsblk: %+v, %v", got, err)
	}
}

func TestStableName(t *testing.T) {
	for _, tc := range []struct {
		links []string
		want  string
	}{
		{nil, "/dev/vda"},
		{[]string{"/dev/disk/by-id/wwn-0x5002538e40a1b2c3", "/dev/disk/by-id/ata-Samsung_SSD_860_EVO_500GB_S3Z9NB0K123456A"},
			"/dev/disk/by-id/ata-Samsung_SSD_860_EVO_500GB_S3Z9NB0K123456A"},
		{[]string{"/dev/disk/by-id/nvme-eui.0025388b91b2c3d4", "/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_1TB_S467NX0K123456_1",
			"/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_1TB_S467NX0K123456"}, "/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_1TB_S467NX0K123456"},
		{[]string{"/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", "/dev/disk/by-id/lvm-pv-uuid-x"}, "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"},
		{[]string{"/dev/disk/by-id/virtio-vm-disk-1"}, "/dev/disk/by-id/virtio-vm-disk-1"},
	} {
		got, stable := stableName(tc.links, "/dev/vda")
		if got != tc.want || stable != (tc.links != nil) {
			t.Errorf("%v: %s %v, want %s", tc.links, got, stable, tc.want)
		}
	}
}

func TestChooseDisk(t *testing.T) {
	stick := Disk{Path: "/dev/disk/by-id/usb-SanDisk", Resolved: "/dev/sda", Size: 16 << 30, Type: "disk", Removable: true, BootMedium: true}
	ssd := Disk{Path: "/dev/disk/by-id/nvme-A", Resolved: "/dev/nvme0n1", Size: 500 << 30, Type: "disk", Stable: true}
	small := Disk{Path: "/dev/vdb", Resolved: "/dev/vdb", Size: 2 << 30, Type: "disk"}
	card := Disk{Path: "/dev/mmcblk0", Resolved: "/dev/mmcblk0", Size: 64 << 30, Type: "disk", Removable: true}
	cd := Disk{Path: "/dev/sr0", Resolved: "/dev/sr0", Size: 1 << 30, Type: "rom", Removable: true}
	for _, tc := range []struct {
		name  string
		disks []Disk
		want  string // the disk, or a substring of the error
	}{
		{"one fits", []Disk{stick, ssd, small, card, cd}, "/dev/disk/by-id/nvme-A"},
		{"the running system's disk is fine: kexec wipes it", []Disk{{Path: "/dev/vda", Resolved: "/dev/vda", Size: 20 << 30, Type: "disk", System: true}}, "/dev/vda"},
		{"none", []Disk{stick, small}, "no disk of the target fits: /dev/sda is the boot medium; /dev/vdb is 2.0 GiB, the layout needs 5.0 GiB"},
		{"two", []Disk{ssd, {Path: "/dev/disk/by-id/nvme-B", Size: 1 << 40, Type: "disk"}}, "2 disks of the target fit: /dev/disk/by-id/nvme-A, /dev/disk/by-id/nvme-B"},
		{"no disks", nil, "the target has no disks"},
	} {
		d, err := ChooseDisk(tc.disks, 5<<30)
		switch {
		case err == nil && d.Path != tc.want:
			t.Errorf("%s: chose %s, want %s", tc.name, d.Path, tc.want)
		case err != nil && (!strings.Contains(err.Error(), tc.want) || hint.Of(err) == ""):
			t.Errorf("%s: %v (hint %q), want %q", tc.name, err, hint.Of(err), tc.want)
		}
	}
}

func TestWriteDisks(t *testing.T) {
	disks := []Disk{
		{Path: "/dev/disk/by-id/nvme-A", Stable: true, Resolved: "/dev/nvme0n1", Size: 500 << 30, Model: "Samsung SSD", Serial: "S1", Transport: "nvme", Type: "disk", System: true},
		{Path: "/dev/vda", Resolved: "/dev/vda", Size: 20 << 30, Transport: "virtio", Type: "disk"},
		{Path: "/dev/sr0", Resolved: "/dev/sr0", Size: 1 << 30, Model: "QEMU\x1b[2J", Type: "rom", Removable: true, BootMedium: true},
		{Path: "/dev/disk/by-id/ata-B", Stable: true, Resolved: "/dev/sdb", Size: 4 << 40, Type: "disk"},
		{Path: "/dev/disk/by-id/ata-C", Stable: true, Resolved: "/dev/sdc", Size: 4 << 40, Type: "disk"},
		{Path: "/dev/disk/by-id/ata-D", Stable: true, Resolved: "/dev/sdd", Size: 4 << 40, Type: "disk"},
	}
	var b strings.Builder
	if err := WriteDisks(&b, disks); err != nil {
		t.Fatal(err)
	}
	want := `DISK                    KERNEL        SIZE       MODEL        SERIAL  TRANSPORT  NOTES
/dev/disk/by-id/nvme-A  /dev/nvme0n1  500.0 GiB  Samsung SSD  S1      nvme       running system
(no stable name)        /dev/vda      20.0 GiB   -            -       virtio     
(no stable name)        /dev/sr0      1.0 GiB    QEMU?[2J     -       -          boot medium, removable, rom
/dev/disk/by-id/ata-B   /dev/sdb      4.0 TiB    -            -       -          same size as /dev/sdc /dev/sdd
/dev/disk/by-id/ata-C   /dev/sdc      4.0 TiB    -            -       -          same size as /dev/sdb /dev/sdd
/dev/disk/by-id/ata-D   /dev/sdd      4.0 TiB    -            -       -          same size as /dev/sdb /dev/sdc
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if err := WriteDisksJSON(&b, disks[:1]); err != nil {
		t.Fatal(err)
	}
	var back []map[string]any
	if err := json.Unmarshal([]byte(b.String()), &back); err != nil || len(back) != 1 || back[0]["path"] != "/dev/disk/by-id/nvme-A" ||
		back[0]["kernel"] != "/dev/nvme0n1" || back[0]["runningSystem"] != true || back[0]["size"] != float64(500<<30) {
		t.Errorf("json %s: %v", b.String(), err)
	}
	b.Reset()
	WriteDisksJSON(&b, nil)
	if strings.TrimSpace(b.String()) != "[]" {
		t.Errorf("no disks: %s", b.String())
	}
}

// Whatever the target prints, parsing it neither panics nor invents disks
// without a kernel name.
func FuzzParseDisks(f *testing.F) {
	for _, name := range []string{"lsblk-docker-vm.json", "lsblk-docker-vm-mountpoint.json", "lsblk-installer-chroot.json"} {
		data, _ := os.ReadFile("testdata/" + name)
		f.Add(data, "/dev/disk/by-id/virtio-x /dev/vda\n")
	}
	f.Fuzz(func(t *testing.T, lsblk []byte, links string) {
		disks, err := parseDisks(lsblk, links)
		for _, d := range disks {
			if err == nil && (d.Resolved == "" || d.Path == "") {
				t.Errorf("disk without a name: %+v", d)
			}
		}
	})
}
