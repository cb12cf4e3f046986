// Package generate turns validated command-line input into a host folder:
// vms/NAME/configuration.nix and vms/NAME/disk-config.nix.
package generate

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"

	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/target"
)

// Layouts are the disk layouts new-host can render, default first.
var Layouts = []string{"zfs-encrypted", "luks", "ext4"}

// Systems are the platforms a host can be.
var Systems = []string{"x86_64-linux", "aarch64-linux"}

// Options is what the user asked for, unvalidated.
type Options struct {
	Name  string
	Disks []string // --disk, in order; none means the VM default
	// Topology is the pool's vdev type ("" for the default by disk count).
	Topology string
	Keys     []string // paths, authorized_keys files or literal lines
	Target   string   // [USER@]HOST[:PORT], optional
	Layout   string
	System   string
	VM       bool
	HostID   string
	Swap     string
	// InitrdNIC is the kernel module of the network card the initrd
	// unlocks over (new-host --initrd-nic); "" for none.
	InitrdNIC string
}

// Host is a validated host, ready to render.
type Host struct {
	Name  string
	Disks []string
	// Topology is one of Topologies: how the pool uses Disks.
	Topology string
	Keys     []Key
	Target   *target.Target // nil when no target was given
	Layout   string
	System   string
	VM       bool
	HostID   string
	Swap     string // disko size such as "8G"; "" for no swap
	// Warnings are things the user must read, such as a stripe's risk.
	Warnings []string
	// InitrdNIC is the network card's kernel module for the initrd's
	// sshd: --initrd-nic, else virtio_net on a VM, else "" (a facter
	// report or the user adds it; deploy refuses a host without it).
	InitrdNIC string
}

// NewHost validates o. Notes are things the user should know that are not
// errors, such as dropped duplicate keys.
func NewHost(o Options) (h *Host, notes []string, err error) {
	h = &Host{Name: o.Name, VM: o.VM}
	if err := CheckName(o.Name); err != nil {
		return nil, nil, err
	}
	if h.Layout, err = oneOf("--layout", o.Layout, Layouts); err != nil {
		return nil, nil, err
	}
	if h.System, err = oneOf("--system", o.System, Systems); err != nil {
		return nil, nil, err
	}
	if h.Disks, err = CheckDisks(o.Disks, o.VM, h.Layout); err != nil {
		return nil, nil, err
	}
	var note string
	if h.Topology, note, h.Warnings, err = CheckTopology(o.Topology, len(h.Disks), h.Layout); err != nil {
		return nil, nil, err
	}
	if h.Keys, notes, err = LoadKeys(o.Keys); err != nil {
		return nil, nil, err
	}
	if note != "" {
		notes = append(notes, note)
	}
	if o.Target != "" {
		if h.Target, err = target.Parse(o.Target); err != nil {
			return nil, nil, err
		}
	}
	if h.HostID, err = CheckHostID(o.HostID, o.Name); err != nil {
		return nil, nil, err
	}
	if h.Swap, err = CheckSwap(o.Swap); err != nil {
		return nil, nil, err
	}
	if h.InitrdNIC, err = CheckInitrdNIC(o.InitrdNIC, h.Layout, h.VM); err != nil {
		return nil, nil, err
	}
	return h, notes, nil
}

func oneOf(flag, v string, allowed []string) (string, error) {
	if v == "" {
		return allowed[0], nil
	}
	for _, a := range allowed {
		if v == a {
			return v, nil
		}
	}
	return "", hint.Errorf(flag+" takes one of: "+strings.Join(allowed, ", "),
		"%s %q is not supported", flag, v)
}

var label = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// CheckName accepts an RFC 1123 label, the form a NixOS hostname and a
// flake attribute name can both take without quoting.
func CheckName(name string) error {
	const h = "a host name is 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'"
	switch {
	case name == "":
		return hint.Errorf("keystone new-host NAME --disk DEVICE --key KEY", "a host name is required")
	case len(name) > 63 && label.MatchString(name[:63]):
		return hint.Errorf(h, "host name is %d characters long; the limit is 63", len(name))
	case name != strings.ToLower(name) && label.MatchString(strings.ToLower(name)):
		return hint.Errorf("use "+strings.ToLower(name), "host name %q has upper-case letters", name)
	case !label.MatchString(name):
		return hint.Errorf(h, "host name %q is not a valid RFC 1123 label", name)
	}
	return nil
}

var hexID = regexp.MustCompile(`^[0-9a-f]{8}$`)

// CheckHostID returns id, lower-cased, or one derived from name so that the
// same name always renders the same file.
func CheckHostID(id, name string) (string, error) {
	if id == "" {
		sum := sha256.Sum256([]byte("keystone hostId " + name))
		return hex.EncodeToString(sum[:4]), nil
	}
	if !hexID.MatchString(strings.ToLower(id)) {
		return "", hint.Errorf("ZFS wants exactly 8 hex digits, as `head -c 8 /etc/machine-id` prints",
			"--host-id %q is not 8 hex digits", id)
	}
	if id == "00000000" {
		return "", hint.Errorf("leave --host-id out to derive one from the name", "--host-id 00000000 means \"no host id\" to ZFS")
	}
	return strings.ToLower(id), nil
}

var moduleName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// CheckInitrdNIC accepts a kernel module name for an encrypted layout,
// whose initrd runs sshd for `keystone unlock`; a VM's card is virtio_net.
func CheckInitrdNIC(module, layout string, vm bool) (string, error) {
	if !Encrypted(layout) {
		if module != "" {
			return "", hint.Errorf("leave --initrd-nic out, or choose --layout zfs-encrypted or luks",
				"--initrd-nic is for the encrypted layouts, whose initrd asks for the disk password; %s asks for none", layout)
		}
		return "", nil
	}
	if module == "" && vm {
		return "virtio_net", nil
	}
	if module != "" && !moduleName.MatchString(module) {
		return "", hint.Errorf("give the kernel module of the network card, as `lspci -k` names it (such as igb or e1000e)",
			"--initrd-nic %q is not a kernel module name", module)
	}
	return module, nil
}

// Encrypted says the layout asks for a disk password at boot.
func Encrypted(layout string) bool { return layout == "zfs-encrypted" || layout == "luks" }

var swapSize = regexp.MustCompile(`^[1-9][0-9]{0,5}[MGT]$`)

// CheckSwap accepts a disko partition size such as 512M, 8G or 1T; "0" or ""
// means no swap.
func CheckSwap(s string) (string, error) {
	if s == "" || s == "0" {
		return "", nil
	}
	if up := strings.ToUpper(s); swapSize.MatchString(up) {
		return up, nil
	}
	return "", hint.Errorf("give a size like 512M, 8G or 1T, or 0 for no swap",
		"--swap %q is not a size", s)
}

// MinRootSize is the least space a layout leaves the system: a NixOS
// server's closure and a few generations of it.
const MinRootSize = "4G"

// PartitionSizes are the disko sizes of the layout o renders, with the
// last ("100%") at its least: for choosing a disk before there is one.
func PartitionSizes(o Options) ([]string, error) {
	swap, err := CheckSwap(o.Swap)
	if err != nil {
		return nil, err
	}
	sizes := []string{"1M", "1G"}
	if swap != "" {
		sizes = append(sizes, swap)
	}
	return append(sizes, MinRootSize), nil
}
