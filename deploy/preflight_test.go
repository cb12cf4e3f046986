package deploy

import (
	"strings"
	"testing"
)

func installer() *Facts {
	return &Facts{
		Root:     true,
		OS:       map[string]string{"ID": "nixos", "VARIANT_ID": "installer", "PRETTY_NAME": "NixOS 25.11 (Xantusia)"},
		Arch:     "x86_64",
		MemTotal: 4 << 30,
		BootID:   "b1/100",
		Disks:    []Disk{{Path: "/dev/vda", Resolved: "/dev/vda", Size: 20 << 30}},
	}
}

// debian is a Debian VPS nixos-anywhere can kexec: / on the disk the
// layout wipes.
func debian(f *Facts) {
	f.OS = map[string]string{"ID": "debian", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"}
	f.KexecLoadDisabled = "0"
	f.Lockdown = "none"
	f.Disks[0].System = true
	f.RootDisks = []string{"/dev/vda"}
}

// twoDisks gives the installer two disks of these sizes in GB.
func twoDisks(a, b int64) func(*Facts) {
	return func(f *Facts) {
		f.Disks = []Disk{
			{Path: "/dev/disk/by-id/ata-A", Resolved: "/dev/sdb", Size: a * 1e9},
			{Path: "/dev/disk/by-id/ata-B", Resolved: "/dev/sdc", Size: b * 1e9},
		}
	}
}

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name   string
		facts  func(*Facts)
		policy Policy
		want   []string // one substring per refusal, in order
	}{
		{"installer", func(*Facts) {}, Policy{}, nil},
		// Defect 1: the disk the old system runs from is what a kexec
		// install wipes, with or without --reinstall.
		{"debian to kexec, / on the layout's disk", debian, Policy{}, nil},
		{"debian to kexec, reinstall", debian, Policy{Reinstall: true}, nil},
		{"not root", func(f *Facts) { f.Root = false }, Policy{}, []string{"not root and cannot sudo"}},
		{"not root, with a reason", func(f *Facts) { f.Root = false; f.NoRoot = "the target has neither sudo nor doas" }, Policy{},
			[]string{"neither sudo nor doas"}},
		{"pinned key answers", func(f *Facts) { debian(f); f.OS = map[string]string{"ID": "nixos"} }, Policy{PinnedKey: true},
			[]string{"answers with this host's pinned key: it is already installed"}},
		{"pinned key, reinstall", func(f *Facts) { debian(f); f.OS = map[string]string{"ID": "nixos"} }, Policy{PinnedKey: true, Reinstall: true}, nil},
		{"installed nixos", func(f *Facts) { debian(f); f.OS = map[string]string{"ID": "nixos", "PRETTY_NAME": "NixOS 25.11"} }, Policy{},
			[]string{"runs NixOS 25.11 from disk, not the installer"}},
		// Defect 7: get-facts.sh wants ID or ID_LIKE nixos as well.
		{"installer variant of another distribution", func(f *Facts) {
			debian(f)
			f.OS = map[string]string{"ID": "fedora", "VARIANT_ID": "installer"}
			f.Container = "docker"
		}, Policy{}, []string{"docker container"}},
		{"id_like nixos installer", func(f *Facts) { f.OS = map[string]string{"ID": "mynix", "ID_LIKE": "nixos", "VARIANT_ID": "installer"} },
			Policy{}, nil},
		// Defect 8: nixos-anywhere's documented 1.5 GB and 1 GB, with slack.
		{"1.5 GB machine", func(f *Facts) { debian(f); f.MemTotal = 1_430_000_000 }, Policy{}, nil},
		{"too little ram to kexec", func(f *Facts) { debian(f); f.MemTotal = 1 << 30 }, Policy{},
			[]string{"1.1 GB of RAM (MemTotal, 1.0 GiB); kexec into the installer needs 1.5 GB, nixos-anywhere's documented minimum (less 10%"}},
		{"1 GB with --no-disko-deps", func(f *Facts) { debian(f); f.MemTotal = 960_000_000 }, Policy{Extra: []string{"--no-disko-deps"}}, nil},
		{"too little even with --no-disko-deps", func(f *Facts) { debian(f); f.MemTotal = 512 << 20 },
			Policy{Extra: []string{"--no-disko-deps"}}, []string{"needs 1 GB, nixos-anywhere's documented minimum with --no-disko-deps"}},
		{"little ram is fine in the installer", func(f *Facts) { f.MemTotal = 1 << 30 }, Policy{}, nil},
		{"arch", func(f *Facts) { debian(f); f.Arch = "riscv64" }, Policy{},
			[]string{"riscv64; nixos-anywhere can kexec only x86_64 and aarch64"}},
		{"arch with its own kexec image", func(f *Facts) { debian(f); f.Arch = "riscv64" }, Policy{Extra: []string{"--kexec", "k.tar.gz"}}, nil},
		// Defect 6: what nixos-anywhere aborts on, or kexec cannot do.
		{"no tar, cpio, setsid --wait", func(f *Facts) { debian(f); f.MissingTools = []string{"tar", "cpio", "setsid --wait"} }, Policy{},
			[]string{"no tar, which nixos-anywhere needs to unpack", "no cpio", "no setsid --wait"}},
		{"tools do not matter in the installer", func(f *Facts) { f.MissingTools = []string{"cpio"}; f.KexecLoadDisabled = "" }, Policy{}, nil},
		{"container", func(f *Facts) { debian(f); f.Container = "systemd-nspawn" }, Policy{},
			[]string{"systemd-nspawn container, which cannot kexec"}},
		{"kexec disabled", func(f *Facts) { debian(f); f.KexecLoadDisabled = "1" }, Policy{}, []string{"kexec_load_disabled = 1"}},
		{"no kexec in the kernel", func(f *Facts) { debian(f); f.KexecLoadDisabled = "" }, Policy{}, []string{"has no kexec"}},
		{"lockdown", func(f *Facts) { debian(f); f.Lockdown = "integrity" }, Policy{}, []string{"lockdown mode integrity"}},
		{"missing disk", func(f *Facts) { f.Disks[0] = Disk{Path: "/dev/disk/by-id/nvme-X", Missing: true} }, Policy{},
			[]string{"disk /dev/disk/by-id/nvme-X does not exist on the target"}},
		{"installer's own disk", func(f *Facts) { f.Disks[0].System = true }, Policy{},
			[]string{"disk /dev/vda (/dev/vda) holds the running system"}},
		{"installer's boot medium", func(f *Facts) { f.Disks[0].BootMedium = true }, Policy{},
			[]string{"disk /dev/vda (/dev/vda) is the medium the installer booted from"}},
		{"too small", func(*Facts) {}, Policy{MinDiskBytes: map[string]int64{"/dev/vda": 30 << 30}},
			[]string{"disk /dev/vda is 20.0 GiB; the layout needs at least 30.0 GiB"}},
		{"several", func(f *Facts) {
			debian(f)
			f.OS = map[string]string{"ID": "nixos"}
			f.Disks = append(f.Disks, Disk{Path: "/dev/vdb", Missing: true})
		}, Policy{}, []string{"from disk", "/dev/vdb does not exist"}},
		// Several disks: each once, of close sizes in a mirror or raidz,
		// none the installer's medium.
		{"two disks", twoDisks(4000, 4001), Policy{Redundant: true}, nil},
		{"the same disk by two by-id links", func(f *Facts) {
			f.Disks = []Disk{
				{Path: "/dev/disk/by-id/ata-WDC_WD40_X1", Resolved: "/dev/sdb", Size: 4 << 40},
				{Path: "/dev/disk/by-id/wwn-0x50014ee2b1", Resolved: "/dev/sdb", Size: 4 << 40},
			}
		}, Policy{Redundant: true}, []string{"disks /dev/disk/by-id/ata-WDC_WD40_X1 and /dev/disk/by-id/wwn-0x50014ee2b1 are the same disk (/dev/sdb)"}},
		{"mirror of 4 and 8 TB", twoDisks(4000, 8000), Policy{Redundant: true},
			[]string{"disk /dev/disk/by-id/ata-B is 7.3 TiB and /dev/disk/by-id/ata-A only 3.6 TiB: in a mirror or raidz the smallest sets every disk's share, so 3.6 TiB of /dev/disk/by-id/ata-B would be unused"}},
		{"sizes within 10%", twoDisks(4000, 4400), Policy{Redundant: true}, nil},
		{"stripe of 4 and 8 TB", twoDisks(4000, 8000), Policy{}, nil},
		{"second disk is the boot medium", func(f *Facts) { twoDisks(4000, 4000)(f); f.Disks[1].BootMedium = true }, Policy{Redundant: true},
			[]string{"disk /dev/disk/by-id/ata-B (/dev/sdc) is the medium the installer booted from"}},
	} {
		f := installer()
		tc.facts(f)
		got := Judge(f, tc.policy)
		if len(got) != len(tc.want) {
			t.Errorf("%s: refusals %v, want %d", tc.name, got, len(tc.want))
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(got[i].What, w) || got[i].Hint == "" {
				t.Errorf("%s: refusal %q (hint %q), want it to contain %q and a hint", tc.name, got[i].What, got[i].Hint, w)
			}
		}
	}
}

func TestEscalation(t *testing.T) {
	for _, tc := range []struct{ probe, via, why string }{
		{"uid=0\nsudo=absent\ndoas=absent", "", ""},
		{"uid=1000\nsudo=0\ndoas=absent", "sudo", ""},
		// Defect 9: doas -n where there is no sudo, as nixos-anywhere does.
		{"uid=1000\nsudo=absent\ndoas=0", "doas", ""},
		{"uid=1000\nsudo=no\ndoas=0", "", "cannot sudo without a password (nixos-anywhere uses sudo where it is installed)"},
		{"uid=1000\nsudo=absent\ndoas=no", "", "cannot doas without a password"},
		{"uid=1000\nsudo=absent\ndoas=absent", "", "neither sudo nor doas"},
	} {
		via, why := escalation(tc.probe)
		if via != tc.via || (tc.why == "") != (why == "") || !strings.Contains(why, tc.why) {
			t.Errorf("%q: %q, %q; want %q, %q", tc.probe, via, why, tc.via, tc.why)
		}
	}
	if lockdownMode("none [integrity] confidentiality\n") != "integrity" || lockdownMode("[none] integrity confidentiality") != "none" || lockdownMode("") != "" {
		t.Error("lockdownMode")
	}
}

func TestMinDiskBytes(t *testing.T) {
	for _, tc := range []struct {
		sizes []string
		want  int64
		err   bool
	}{
		{[]string{"1M", "1G", "100%"}, 1<<20 + 1<<30 + rootSpace, false},
		{[]string{"1G", "8G", "100%"}, 9<<30 + rootSpace, false},
		{[]string{"512M"}, 512 << 20, false},
		{[]string{"1T", "100%"}, 1<<40 + rootSpace, false},
		{[]string{"lots"}, 0, true},
		{[]string{"1P"}, 1 << 50, false},
		{[]string{"-5G"}, 0, true},
		{[]string{"+5G"}, 0, true},
		{[]string{"99999999999T"}, 0, true},
		{[]string{"8191P", "8191P"}, 0, true},
		{[]string{"unknown", "unknown"}, 0, false}, // a legacy table layout
		{[]string{"1G", "unknown"}, 1 << 30, false},
	} {
		got, err := MinDiskBytes(tc.sizes)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("MinDiskBytes(%v) = %d, %v; want %d", tc.sizes, got, err, tc.want)
		}
	}
}

func TestParsers(t *testing.T) {
	if got := memTotal("MemTotal:        4028340 kB\nMemFree: 1 kB\n"); got != 4028340<<10 {
		t.Errorf("memTotal = %d", got)
	}
	if got := bytesString(1536 << 20); got != "1.5 GiB" {
		t.Errorf("bytesString = %q", got)
	}
}

// The layout's disks come from the one lsblk of the inventory when it knows
// their names; only other names (by-path, by-uuid) are looked up again.
func TestLookupDisk(t *testing.T) {
	all := []Disk{
		{Resolved: "/dev/vda", Size: 8 << 30, ByID: []string{"/dev/disk/by-id/virtio-ks-web1"}},
		{Resolved: "/dev/loop3", Type: "loop", Size: 1 << 30},
	}
	for _, tc := range []struct {
		path   string
		found  bool
		stable bool
	}{
		{"/dev/disk/by-id/virtio-ks-web1", true, true},
		{"/dev/vda", true, false},
		{"/dev/loop3", true, false}, // not in the inventory, but lsblk knows it
		{"/dev/disk/by-path/pci-0000:00:04.0", false, false},
		{"/dev/vdb", false, false},
	} {
		d, ok := lookupDisk(all, tc.path)
		if ok != tc.found || (ok && (d.Path != tc.path || d.Stable != tc.stable || d.Size == 0)) {
			t.Errorf("lookupDisk(%s) = %+v, %v; want found %v, stable %v", tc.path, d, ok, tc.found, tc.stable)
		}
	}
}
