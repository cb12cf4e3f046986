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

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name   string
		facts  func(*Facts)
		policy Policy
		want   []string // one substring per refusal, in order
	}{
		{"installer", func(*Facts) {}, Policy{}, nil},
		{"debian to kexec", func(f *Facts) { f.OS = map[string]string{"ID": "debian"} }, Policy{}, nil},
		{"not root", func(f *Facts) { f.Root = false }, Policy{}, []string{"not root and cannot sudo"}},
		{"pinned key answers", func(f *Facts) { f.OS = map[string]string{"ID": "nixos"} }, Policy{PinnedKey: true},
			[]string{"answers with this host's pinned key: it is already installed"}},
		{"pinned key, reinstall", func(f *Facts) { f.OS = map[string]string{"ID": "nixos"} }, Policy{PinnedKey: true, Reinstall: true}, nil},
		{"installed nixos", func(f *Facts) { f.OS = map[string]string{"ID": "nixos", "PRETTY_NAME": "NixOS 25.11"} }, Policy{},
			[]string{"runs NixOS 25.11 from disk, not the installer"}},
		{"too little ram to kexec", func(f *Facts) { f.OS = map[string]string{"ID": "debian"}; f.MemTotal = 1 << 30 }, Policy{},
			[]string{"1.0 GiB of RAM; kexec into the installer needs at least 1.5 GiB"}},
		{"little ram is fine in the installer", func(f *Facts) { f.MemTotal = 1 << 30 }, Policy{}, nil},
		{"arch", func(f *Facts) { f.OS = map[string]string{"ID": "debian"}; f.Arch = "riscv64" }, Policy{},
			[]string{"riscv64; nixos-anywhere can kexec only x86_64 and aarch64"}},
		{"missing disk", func(f *Facts) { f.Disks[0] = Disk{Path: "/dev/disk/by-id/nvme-X", Missing: true} }, Policy{},
			[]string{"disk /dev/disk/by-id/nvme-X does not exist on the target"}},
		{"running system's disk", func(f *Facts) { f.RootDisks = []string{"/dev/vda"} }, Policy{},
			[]string{"disk /dev/vda (/dev/vda) holds the running system"}},
		{"too small", func(*Facts) {}, Policy{MinDiskBytes: map[string]int64{"/dev/vda": 30 << 30}},
			[]string{"disk /dev/vda is 20.0 GiB; the layout needs at least 30.0 GiB"}},
		{"several", func(f *Facts) {
			f.OS = map[string]string{"ID": "nixos"}
			f.Disks = append(f.Disks, Disk{Path: "/dev/vdb", Missing: true})
		}, Policy{}, []string{"from disk", "/dev/vdb does not exist"}},
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
