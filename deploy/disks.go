package deploy

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/text"
	"github.com/keystone-nix/keystone/verify"
)

// lsblkColumns are what ListDisks asks lsblk for. MOUNTPOINTS (every
// mount of a device) came with util-linux 2.37 and PATH with 2.32; older
// targets (Debian 11, Ubuntu 20.04) get lsblkOld.
const (
	lsblkColumns = "NAME,PATH,MAJ:MIN,SIZE,MODEL,SERIAL,TRAN,RM,TYPE,MOUNTPOINTS"
	lsblkOld     = "NAME,MAJ:MIN,SIZE,MODEL,SERIAL,TRAN,RM,TYPE,MOUNTPOINT"
)

// disksScript prints lsblk's JSON, then a line "==" and one line per
// /dev/disk/by-id link: the link and the kernel name it points to. It
// only reads.
const disksScript = `lsblk -J -b -o ` + lsblkColumns + ` "$@" 2>/dev/null || lsblk -J -b -p -o ` + lsblkOld + ` "$@" || exit 1
echo ==
for l in /dev/disk/by-id/*; do [ -L "$l" ] && printf '%s %s\n' "$l" "$(readlink -f "$l")"; done
true`

// bootMounts are where a NixOS installer mounts its boot medium: the ISO
// (or USB stick) at /iso, its squashfs store at /nix/.ro-store.
var bootMounts = []string{"/iso", "/nix/.ro-store"}

// ListDisks reads every disk of the target (lsblk and /dev/disk/by-id),
// changing nothing. It needs no root.
func ListDisks(ctx context.Context, r *remote.Runner) ([]Disk, error) {
	all, err := readDisks(ctx, r)
	if err != nil {
		return nil, err
	}
	var out []Disk
	for _, d := range all {
		if isDisk(d) {
			out = append(out, d)
		}
	}
	return out, nil
}

// isDisk leaves out what lsblk lists but nobody installs to: loop
// devices, compressed RAM swap, empty slots (size 0).
func isDisk(d Disk) bool {
	name := strings.TrimPrefix(d.Resolved, "/dev/")
	return (d.Type == "disk" || d.Type == "rom") && d.Size > 0 && !strings.HasPrefix(name, "zram") && !strings.HasPrefix(name, "ram")
}

// readDisks runs disksScript for devs (all devices when none).
func readDisks(ctx context.Context, r *remote.Runner, devs ...string) ([]Disk, error) {
	cmd := "sh -c " + remote.Quote(disksScript) + " sh"
	for _, d := range devs {
		cmd += " " + remote.Quote(d)
	}
	o := r.Run(ctx, cmd)
	if o.Err != nil {
		return nil, fmt.Errorf("lsblk: %w", o.Err)
	}
	if o.Exit != 0 {
		return nil, fmt.Errorf("lsblk: exit status %d: %s", o.Exit, strings.TrimSpace(o.Stderr))
	}
	lsblk, links, _ := strings.Cut(o.Stdout, "\n==\n")
	return parseDisks([]byte(lsblk), links)
}

// flex reads a JSON value lsblk writes as a string in old versions and as
// a number or boolean in new ones.
type flex string

func (f *flex) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*f = ""
		return nil
	}
	var s string
	if json.Unmarshal(b, &s) == nil {
		*f = flex(s)
		return nil
	}
	*f = flex(b)
	return nil
}

type blockDevice struct {
	Name        string        `json:"name"`
	Path        string        `json:"path"`
	MajMin      string        `json:"maj:min"`
	Size        flex          `json:"size"`
	Model       *string       `json:"model"`
	Serial      *string       `json:"serial"`
	Tran        *string       `json:"tran"`
	RM          flex          `json:"rm"`
	Type        string        `json:"type"`
	Mountpoints []*string     `json:"mountpoints"`
	Mountpoint  *string       `json:"mountpoint"`
	Children    []blockDevice `json:"children"`
}

// parseDisks reads lsblk's JSON and the by-id lines ("LINK KERNELNAME").
func parseDisks(lsblk []byte, links string) ([]Disk, error) {
	var out struct {
		Blockdevices []blockDevice `json:"blockdevices"`
	}
	if err := json.Unmarshal(lsblk, &out); err != nil {
		return nil, fmt.Errorf("lsblk printed no JSON: %w", err)
	}
	byID := map[string][]string{}
	for _, line := range strings.Split(links, "\n") {
		if link, dev, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			byID[dev] = append(byID[dev], link)
		}
	}
	var disks []Disk
	for _, b := range out.Blockdevices {
		path := cmp.Or(b.Path, b.Name)
		if !strings.HasPrefix(path, "/") {
			path = "/dev/" + path
		}
		d := Disk{Resolved: path, Type: b.Type, MajMin: b.MajMin, Model: trim(b.Model), Serial: trim(b.Serial),
			Transport: trim(b.Tran), Removable: b.RM == "1" || b.RM == "true", ByID: byID[path]}
		d.Size, _ = strconv.ParseInt(string(b.Size), 10, 64)
		if d.Transport == "" && strings.HasPrefix(strings.TrimPrefix(path, "/dev/"), "vd") {
			d.Transport = "virtio" // virtio-blk has no transport in lsblk
		}
		walk(b, func(m string) {
			switch {
			case m == "/":
				d.System = true
			case slices.Contains(bootMounts, m):
				d.BootMedium = true
			}
		})
		d.Path, d.Stable = stableName(d.ByID, path)
		disks = append(disks, d)
	}
	return disks, nil
}

func trim(s *string) string {
	if s == nil {
		return ""
	}
	return strings.TrimSpace(*s)
}

// walk calls f with every mount point of b and its children.
func walk(b blockDevice, f func(string)) {
	for _, m := range b.Mountpoints {
		if m != nil {
			f(*m)
		}
	}
	if b.Mountpoint != nil {
		f(*b.Mountpoint)
	}
	for _, c := range b.Children {
		walk(c, f)
	}
}

// stableName picks the by-id link to name a disk by, or its kernel name
// when it has none (virtio disks without a serial).
//
// Names built from the disk's own model and serial (ata-, nvme-MODEL_SERIAL,
// scsi-S…, virtio-, usb-, mmc-) come first: they are what the label on the
// disk says, so the user can tell which physical disk gets wiped, and
// udev has made them the same way for over a decade. World-wide names
// (wwn-, nvme-eui., scsi-3…) are unique only where the firmware is
// honest: some drives report the same or an all-zero id, and the
// kernel's quirk list for them (NVME_QUIRK_BOGUS_NID) drops the eui link
// on drives it learns about, so such a name can vanish with a kernel
// update, between pre-flight and the kexec installer. Among equals the
// shorter wins: nvme-MODEL_SERIAL over the newer nvme-MODEL_SERIAL_1,
// which older udev does not make.
func stableName(links []string, kernel string) (string, bool) {
	if len(links) == 0 {
		return kernel, false
	}
	rank := func(l string) int {
		n := strings.TrimPrefix(l, "/dev/disk/by-id/")
		switch {
		case strings.HasPrefix(n, "wwn-"), strings.HasPrefix(n, "nvme-eui."), strings.HasPrefix(n, "nvme-nvme."),
			strings.HasPrefix(n, "scsi-3"), strings.HasPrefix(n, "scsi-2"):
			return 1
		case strings.HasPrefix(n, "ata-"), strings.HasPrefix(n, "nvme-"), strings.HasPrefix(n, "scsi-"),
			strings.HasPrefix(n, "virtio-"), strings.HasPrefix(n, "usb-"), strings.HasPrefix(n, "mmc-"):
			return 0
		}
		return 2
	}
	best := slices.MinFunc(links, func(a, b string) int {
		return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(len(a), len(b)), strings.Compare(a, b))
	})
	return best, true
}

// ChooseDisk picks the one disk a layout of minBytes can go on: not the
// boot medium, not removable, big enough. None or several is an error
// that says why each disk was left out, or which ones are left.
func ChooseDisk(disks []Disk, minBytes int64) (Disk, error) {
	var fit []Disk
	var why []string
	for _, d := range disks {
		switch {
		case d.BootMedium:
			why = append(why, d.Resolved+" is the boot medium")
		case d.Removable:
			why = append(why, d.Resolved+" is removable")
		case d.Type != "disk":
			why = append(why, d.Resolved+" is a "+d.Type)
		case d.Size < minBytes:
			why = append(why, fmt.Sprintf("%s is %s, the layout needs %s", d.Resolved, bytesString(d.Size), bytesString(minBytes)))
		default:
			fit = append(fit, d)
		}
	}
	switch len(fit) {
	case 1:
		return fit[0], nil
	case 0:
		if len(why) == 0 {
			return Disk{}, hint.Errorf("attach a disk to it, or check that the kernel sees one", "the target has no disks")
		}
		return Disk{}, hint.Errorf("attach a disk that fits, or name one with --disk",
			"no disk of the target fits: %s", strings.Join(why, "; "))
	}
	var names []string
	for _, d := range fit {
		names = append(names, d.Path)
	}
	return Disk{}, hint.Errorf("name the one to wipe with --disk", "%d disks of the target fit: %s", len(fit), strings.Join(names, ", "))
}

// WriteDisks prints disks as a table for `keystone disks`.
func WriteDisks(w io.Writer, disks []Disk) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DISK\tKERNEL\tSIZE\tMODEL\tSERIAL\tTRANSPORT\tNOTES")
	// The target wrote all of it: no escape sequence of its reaches the terminal.
	q := text.OneLine
	// Disks of one size, the easy choice for a mirror or raidz (whose
	// smallest disk sets every disk's share): each says which others.
	bySize := map[int64][]string{}
	for _, d := range disks {
		if isWhole(d) {
			bySize[d.Size] = append(bySize[d.Size], d.Resolved)
		}
	}
	for _, d := range disks {
		name := q(d.Path)
		if !d.Stable {
			name = "(no stable name)"
		}
		notes := d.notes()
		if same := slices.DeleteFunc(slices.Clone(bySize[d.Size]), func(k string) bool { return k == d.Resolved }); isWhole(d) && len(same) > 0 {
			notes = append(notes, "same size as "+q(strings.Join(same, " ")))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, q(d.Resolved), bytesString(d.Size), q(cmp.Or(d.Model, "-")),
			q(cmp.Or(d.Serial, "-")), q(cmp.Or(d.Transport, "-")), strings.Join(notes, ", "))
	}
	return tw.Flush()
}

// isWhole is a disk one could install on: of type disk, not the boot
// medium, of a known size.
func isWhole(d Disk) bool { return (d.Type == "disk" || d.Type == "") && !d.BootMedium && d.Size > 0 }

func (d Disk) notes() []string {
	var n []string
	if d.System {
		n = append(n, "running system")
	}
	if d.BootMedium {
		n = append(n, "boot medium")
	}
	if d.Removable {
		n = append(n, "removable")
	}
	if d.Type != "" && d.Type != "disk" {
		n = append(n, d.Type)
	}
	return n
}

// WriteDisksJSON prints disks for `keystone disks --format json`: an
// array of objects with Disk's JSON names.
func WriteDisksJSON(w io.Writer, disks []Disk) error {
	if disks == nil {
		disks = []Disk{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(disks)
}

// TargetDisks connects to h read-only and lists its disks.
func TargetDisks(ctx context.Context, h *fleet.Host) ([]Disk, error) {
	client, err := sshx.Dial(ctx, h.SSH())
	if err != nil {
		return nil, exit.With(verify.ExitCannotReach, err)
	}
	defer client.Close()
	disks, err := ListDisks(ctx, remote.New(client.Client, false, 30*time.Second))
	if err != nil {
		return nil, exit.With(verify.ExitCannotReach, err)
	}
	return disks, nil
}

// AutoDisk is the one disk of h that a layout of partition sizes (disko's)
// fits on (new-host --disk auto). When there is not exactly one, the disks
// go to w as a table and the error says why.
func AutoDisk(ctx context.Context, h *fleet.Host, sizes []string, w io.Writer) (Disk, error) {
	minBytes, err := MinDiskBytes(sizes)
	if err != nil {
		return Disk{}, err
	}
	disks, err := TargetDisks(ctx, h)
	if err != nil {
		return Disk{}, err
	}
	d, err := ChooseDisk(disks, minBytes)
	if err != nil {
		WriteDisks(w, disks)
		return Disk{}, hint.Wrap(fmt.Errorf("--disk auto: %w", err), "name the disk with --disk; keystone disks "+h.Target.String()+" lists them")
	}
	return d, nil
}
