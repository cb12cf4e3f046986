package generate

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
)

// DefaultVMDisk is the first virtio disk, what a QEMU/KVM guest boots from.
const DefaultVMDisk = "/dev/vda"

var (
	// Kernel names of whole disks: they follow probe order and change between
	// boots, so on real hardware the wrong disk would be wiped.
	kernelDisk = regexp.MustCompile(`^/dev/((sd|vd|xvd|hd)[a-z]+|nvme[0-9]+n[0-9]+|mmcblk[0-9]+)$`)
	kernelPart = regexp.MustCompile(`^/dev/((sd|vd|xvd|hd)[a-z]+[0-9]+|nvme[0-9]+n[0-9]+p[0-9]+|mmcblk[0-9]+p[0-9]+)$`)
	stableDir  = regexp.MustCompile(`^/dev/disk/(by-id|by-path)/[^/]+$`)
	fsDir      = regexp.MustCompile(`^/dev/disk/(by-uuid|by-partuuid|by-label|by-partlabel)/`)
	linkPart   = regexp.MustCompile(`-part[0-9]+$`)
)

// CheckDisk returns the whole-disk device the layout will wipe.
func CheckDisk(disk string, vm bool) (string, error) {
	if disk == "" {
		if vm {
			return DefaultVMDisk, nil
		}
		return "", hint.Errorf("find it with `ls -l /dev/disk/by-id/` on the target; for a VM use --vm (default /dev/vda)",
			"--disk is required for a physical host")
	}
	if CheckText(disk) != nil || strings.ContainsFunc(disk, unicode.IsSpace) {
		return "", hint.Errorf("copy the name from `ls /dev/disk/by-id/`", "--disk %q contains a space, a control character or invalid UTF-8", disk)
	}
	if !strings.HasPrefix(disk, "/dev/") || path.Clean(disk) != disk {
		return "", hint.Errorf("give the device path, e.g. /dev/disk/by-id/nvme-Samsung_SSD_980_S64DNX0R123456",
			"--disk %q is not a clean absolute path under /dev", disk)
	}
	switch {
	case kernelPart.MatchString(disk) || (stableDir.MatchString(disk) && linkPart.MatchString(disk)):
		return "", hint.Errorf("give the whole disk; the layout creates its own partitions",
			"--disk %s is a partition", disk)
	case fsDir.MatchString(disk):
		return "", hint.Errorf("use the disk's /dev/disk/by-id/ name",
			"--disk %s names a filesystem or partition, which the install replaces", disk)
	case stableDir.MatchString(disk):
		return disk, nil
	case kernelDisk.MatchString(disk):
		if vm {
			return disk, nil
		}
		return "", hint.Errorf("use its /dev/disk/by-id/ name (`ls -l /dev/disk/by-id/` on the target), or --vm for a virtio disk without a serial",
			"--disk %s is a kernel name that can change between boots, so the wrong disk could be wiped", disk)
	}
	return "", hint.Errorf("use /dev/disk/by-id/…, /dev/disk/by-path/…, or with --vm a kernel name such as /dev/vda",
		"--disk %s is not a whole-disk device keystone knows", disk)
}

// CheckDisks checks every --disk and that none is named twice. More than
// one disk is a ZFS pool: only the zfs-encrypted layout spans disks.
//
// Every refusal is a bad command line (exit 64): nothing but the flags is
// looked at.
func CheckDisks(disks []string, vm bool, layout string) ([]string, error) {
	out, err := checkDisks(disks, vm, layout)
	return out, exit.UsageError(err)
}

func checkDisks(disks []string, vm bool, layout string) ([]string, error) {
	if len(disks) == 0 {
		d, err := CheckDisk("", vm)
		return []string{d}, err
	}
	if len(disks) > 1 && layout != "zfs-encrypted" {
		return nil, hint.Errorf("give one --disk, or use --layout zfs-encrypted for a pool over several disks",
			"--layout %s takes one disk, got %d", layout, len(disks))
	}
	var out []string
	seen := map[string]bool{}
	for _, d := range disks {
		if d == "auto" && len(disks) > 1 {
			return nil, hint.Errorf("name each disk (keystone disks TARGET lists them, equal sizes marked)",
				"--disk auto chooses one disk, and cannot be one of several")
		}
		c, err := CheckDisk(d, vm)
		if err != nil {
			return nil, err
		}
		if seen[c] {
			return nil, hint.Errorf("name each disk once", "--disk %s is given twice", c)
		}
		seen[c] = true
		out = append(out, c)
	}
	return out, nil
}

// Topologies are the pool layouts new-host renders: how many disks each
// needs at least, and what one failed disk does.
var Topologies = []string{"single", "mirror", "raidz1", "raidz2", "stripe"}

// minDisks is the least number of disks each topology takes. raidz1 and
// raidz2 could be made with fewer, but would then hold no more than a
// mirror of the same disks while rebuilding slower.
var minDisks = map[string]int{"single": 1, "mirror": 2, "raidz1": 3, "raidz2": 4, "stripe": 2}

// CheckTopology returns the topology for n disks: the one asked for, or
// the default (one disk single, two mirror, three or more raidz1), with a
// note saying which was chosen and warnings for a stripe.
func CheckTopology(t string, n int, layout string) (topology, note string, warnings []string, err error) {
	topology, note, warnings, err = checkTopology(t, n, layout)
	return topology, note, warnings, exit.UsageError(err)
}

func checkTopology(t string, n int, layout string) (topology, note string, warnings []string, err error) {
	if t == "" {
		switch {
		case n == 1:
			return "single", "", nil, nil
		case n == 2:
			return "mirror", "--topology mirror (the default for two disks): either disk can fail", nil, nil
		default:
			return "raidz1", fmt.Sprintf("--topology raidz1 (the default for %d disks): any one disk can fail", n), nil, nil
		}
	}
	if !slices.Contains(Topologies, t) {
		return "", "", nil, hint.Errorf("--topology takes one of: "+strings.Join(Topologies, ", "), "--topology %q is not supported", t)
	}
	if t != "single" && layout != "zfs-encrypted" {
		return "", "", nil, hint.Errorf("use --layout zfs-encrypted for a pool over several disks", "--topology %s needs --layout zfs-encrypted", t)
	}
	switch min := minDisks[t]; {
	case t == "single" && n != 1:
		return "", "", nil, hint.Errorf("use --topology mirror, raidz1, raidz2 or stripe for several disks", "--topology single takes one disk, got %d", n)
	case n < min:
		return "", "", nil, hint.Errorf(fmt.Sprintf("give at least %d --disk for %s, or --topology mirror for two", min, t),
			"--topology %s needs at least %d disks, got %d", t, min, n)
	}
	if t == "stripe" {
		warnings = append(warnings, fmt.Sprintf("--topology stripe: the pool spans %d disks with no redundancy; one failed disk loses the whole pool", n))
	}
	return t, "", warnings, nil
}
