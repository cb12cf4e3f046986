package generate

import (
	"path"
	"regexp"
	"strings"
	"unicode"

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
