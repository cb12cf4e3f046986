package deploy

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/verify"
)

// MinRAM is what nixos-anywhere's kexec image needs to unpack and run.
const MinRAM = 1536 << 20 // 1.5 GiB, swap not counted

// Disk is one disk of the layout as the target sees it.
type Disk struct {
	Path     string // as the config names it, e.g. /dev/disk/by-id/…
	Resolved string // the kernel name it points to
	Size     int64
	Model    string
	Serial   string
	Missing  bool
}

// Facts is what the read-only pre-flight learned about the target.
type Facts struct {
	Root      bool // logged in as root, or sudo works without a password
	OS        map[string]string
	Arch      string
	MemTotal  int64
	BootID    string   // boot id and PID 1's start: changes on every boot
	RootDisks []string // disks the running system is on
	Disks     []Disk
}

// Installer says the target runs the NixOS installer.
func (f *Facts) Installer() bool { return f.OS["VARIANT_ID"] == "installer" }

// Gather reads the facts, changing nothing on the target.
func Gather(ctx context.Context, r *remote.Runner, disks []string) (*Facts, error) {
	f := &Facts{OS: map[string]string{}}
	run := func(cmd string) (string, error) {
		o := r.Run(ctx, cmd)
		if o.Err != nil {
			return "", fmt.Errorf("%s: %w", cmd, o.Err)
		}
		if o.Exit != 0 {
			return o.Stdout, fmt.Errorf("%s: exit status %d: %s", cmd, o.Exit, strings.TrimSpace(o.Stderr))
		}
		return o.Stdout, nil
	}
	id, err := run("id -u")
	if err != nil {
		if strings.Contains(err.Error(), "sudo") {
			return f, nil // not root, and sudo wants a password
		}
		return nil, err
	}
	f.Root = strings.TrimSpace(id) == "0"
	if !f.Root {
		return f, nil
	}
	osRelease, err := run("cat /etc/os-release")
	if err != nil {
		return nil, err
	}
	f.OS = verify.ParseOSRelease(osRelease)
	arch, err := run("uname -m")
	if err != nil {
		return nil, err
	}
	f.Arch = strings.TrimSpace(arch)
	mem, err := run("cat /proc/meminfo")
	if err != nil {
		return nil, err
	}
	f.MemTotal = memTotal(mem)
	boot, err := run("cat /proc/sys/kernel/random/boot_id; cut -d' ' -f22 /proc/1/stat")
	if err != nil {
		return nil, err
	}
	f.BootID = strings.Join(strings.Fields(boot), "/")
	// The disks under /, through any LVM, LUKS or partition layers.
	rootDisks, _ := run(`lsblk -n -s -p -o NAME,TYPE "$(findmnt -n -o SOURCE /)" 2>/dev/null | awk '$2 == "disk" {print $1}'`)
	f.RootDisks = strings.Fields(rootDisks)
	for _, d := range disks {
		f.Disks = append(f.Disks, disk(ctx, r, d))
	}
	return f, nil
}

func disk(ctx context.Context, r *remote.Runner, path string) Disk {
	d := Disk{Path: path}
	q := remote.Quote(path)
	o := r.Run(ctx, fmt.Sprintf(`test -b %[1]s && lsblk -J -b -d -p -o NAME,SIZE,MODEL,SERIAL "$(readlink -f -- %[1]s)"`, q))
	if o.Err != nil || o.Exit != 0 {
		d.Missing = true
		return d
	}
	var out struct {
		Blockdevices []struct {
			Name   string      `json:"name"`
			Size   json.Number `json:"size"`
			Model  *string     `json:"model"`
			Serial *string     `json:"serial"`
		} `json:"blockdevices"`
	}
	if json.Unmarshal([]byte(o.Stdout), &out) != nil || len(out.Blockdevices) == 0 {
		d.Missing = true
		return d
	}
	b := out.Blockdevices[0]
	d.Resolved = b.Name
	d.Size, _ = b.Size.Int64()
	if b.Model != nil {
		d.Model = strings.TrimSpace(*b.Model)
	}
	if b.Serial != nil {
		d.Serial = strings.TrimSpace(*b.Serial)
	}
	return d
}

func memTotal(meminfo string) int64 {
	for _, line := range strings.Split(meminfo, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// Refusal is a reason not to install, found before anything changed.
type Refusal struct {
	What, Hint string
}

// Policy is what the pre-flight judges the facts against.
type Policy struct {
	Reinstall    bool             // the user knows the target is installed and wants it wiped
	PinnedKey    bool             // the target answered with this host's pinned key
	MinDiskBytes map[string]int64 // per disk path
}

// Judge returns every reason to refuse, or none.
func Judge(f *Facts, p Policy) []Refusal {
	var out []Refusal
	add := func(what, hint string) { out = append(out, Refusal{what, hint}) }
	if !f.Root {
		add("the target user is not root and cannot sudo without a password",
			"use root@HOST, or give the user passwordless sudo on the target")
		return out
	}
	switch {
	case f.Installer():
	case p.PinnedKey && !p.Reinstall:
		add("the target answers with this host's pinned key: it is already installed",
			"pass --reinstall to wipe and install it again")
	case f.OS["ID"] == "nixos" && !p.Reinstall:
		add(fmt.Sprintf("the target runs %s from disk, not the installer", cmp.Or(f.OS["PRETTY_NAME"], "NixOS")),
			"boot the NixOS installer, or pass --reinstall to wipe this system")
	}
	if !f.Installer() {
		switch f.Arch {
		case "x86_64", "aarch64":
		default:
			add(fmt.Sprintf("the target is %s; nixos-anywhere can kexec only x86_64 and aarch64", f.Arch),
				"boot the NixOS installer on it instead")
		}
		if f.MemTotal < MinRAM {
			add(fmt.Sprintf("the target has %s of RAM; kexec into the installer needs at least %s", bytesString(f.MemTotal), bytesString(MinRAM)),
				"boot the NixOS installer from a USB stick or ISO instead")
		}
	}
	for _, d := range f.Disks {
		switch {
		case d.Missing:
			add("disk "+d.Path+" does not exist on the target",
				"list the target's disks with `ls -l /dev/disk/by-id/` and fix disk-config.nix")
		case contains(f.RootDisks, d.Resolved):
			add(fmt.Sprintf("disk %s (%s) holds the running system", d.Path, d.Resolved),
				"boot the installer from other media, or pick another disk")
		case p.MinDiskBytes[d.Path] > 0 && d.Size < p.MinDiskBytes[d.Path]:
			add(fmt.Sprintf("disk %s is %s; the layout needs at least %s", d.Path, bytesString(d.Size), bytesString(p.MinDiskBytes[d.Path])),
				"use a larger disk or shrink the layout's fixed partitions")
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// bytesString prints n in binary units, e.g. 1.5 GiB.
func bytesString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64) + " " + string("KMGTPE"[exp]) + "iB"
}

// rootSpace is what the 100% partition needs at the least: a minimal
// NixOS closure and room to grow.
const rootSpace = 4 << 30

// MinDiskBytes is the smallest disk that fits a layout with these partition
// sizes (as disko writes them: 512M, 1G, 100%).
func MinDiskBytes(sizes []string) (int64, error) {
	var total int64
	rest := false
	for _, s := range sizes {
		if strings.HasSuffix(s, "%") {
			rest = true
			continue
		}
		n, err := parseSize(s)
		if err != nil {
			return 0, err
		}
		if total > math.MaxInt64-n {
			return 0, fmt.Errorf("partition sizes %v add up to more than any disk", sizes)
		}
		total += n
	}
	if rest {
		total += rootSpace
	}
	return total, nil
}

func parseSize(s string) (int64, error) {
	mult := map[byte]int64{'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40, 'P': 1 << 50}
	if s == "" {
		return 0, fmt.Errorf("empty partition size")
	}
	m, ok := mult[s[len(s)-1]]
	num := s[:len(s)-1]
	if !ok {
		m, num = 1, s
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || num[0] == '+' || n < 0 || n > math.MaxInt64/m {
		return 0, fmt.Errorf("partition size %q is not a size", s)
	}
	return n * m, nil
}
