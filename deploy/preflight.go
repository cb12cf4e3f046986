package deploy

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/verify"
)

// What nixos-anywhere documents its kexec installer needs, in decimal
// GB as it writes them: "At least 1.5 GB of RAM (excluding swap space)"
// (docs/requirements.md), and "around 1GB" with --no-disko-deps
// (docs/howtos/limited-ram.md, README.md). MemTotal is less than the RAM
// a machine is sold with (firmware and the kernel keep some), so Judge
// allows ramSlack below it.
const (
	MinRAM            = 1_500_000_000
	MinRAMNoDiskoDeps = 1_000_000_000
	ramSlack          = 10 // percent
)

// Disk is one disk as the target sees it: a disk of the layout (Gather),
// or one of all the target's disks (ListDisks).
type Disk struct {
	Path       string   `json:"path"`      // as the config names it, e.g. /dev/disk/by-id/…; for ListDisks the stable name, or the kernel name without one
	Stable     bool     `json:"stable"`    // ListDisks: Path is a /dev/disk/by-id link
	Resolved   string   `json:"kernel"`    // the kernel name it points to, e.g. /dev/nvme0n1
	Size       int64    `json:"size"`      // bytes
	Model      string   `json:"model"`     //
	Serial     string   `json:"serial"`    //
	Transport  string   `json:"transport"` // nvme, sata, usb, virtio, … ("" unknown)
	Removable  bool     `json:"removable"`
	System     bool     `json:"runningSystem"` // holds the running system's /
	BootMedium bool     `json:"bootMedium"`    // the live installer booted from it (/iso, /nix/.ro-store)
	Type       string   `json:"type"`          // lsblk's: disk, rom, loop, …
	ByID       []string `json:"byId"`          // every /dev/disk/by-id link to it
	MajMin     string   `json:"-"`
	Missing    bool     `json:"-"`
}

// Facts is what the read-only pre-flight learned about the target.
type Facts struct {
	Root      bool   // logged in as root, or sudo (or doas, without sudo) works without a password
	Via       string // how commands got root: "", "sudo" or "doas", as nixos-anywhere picks
	NoRoot    string // why the login user cannot become root, when !Root
	OS        map[string]string
	Arch      string
	MemTotal  int64
	BootID    string   // boot id and PID 1's start: changes on every boot
	RootDisks []string // disks the running system is on
	BootDisks []string // disks the live installer booted from
	Disks     []Disk   // the layout's disks
	Inventory []Disk   // every disk of the target, as ListDisks reads them

	// What nixos-anywhere needs to kexec (judged only when it will).
	MissingTools      []string // of tar, cpio, setsid, "setsid --wait"
	Container         string   // the container the target runs in, "" for none
	KexecLoadDisabled string   // /proc/sys/kernel/kexec_load_disabled; "" when the kernel has no kexec
	Lockdown          string   // the kernel's lockdown mode: none, integrity, confidentiality; "" unknown
}

// Installer says the target runs the NixOS installer, judged as
// nixos-anywhere's get-facts.sh does: ID or ID_LIKE nixos, and
// VARIANT_ID installer.
func (f *Facts) Installer() bool {
	return f.nixos() && strings.HasPrefix(f.OS["VARIANT_ID"], "installer")
}

// nixos is get-facts.sh's isNixos: grep -Eq 'ID(_LIKE)?="?nixos"?'.
func (f *Facts) nixos() bool {
	return strings.HasPrefix(f.OS["ID"], "nixos") || strings.HasPrefix(f.OS["ID_LIKE"], "nixos")
}

// rootProbe says, as the login user, who that is and whether sudo or
// doas give root without a password.
const rootProbe = `echo uid=$(id -u)
if command -v sudo >/dev/null 2>&1; then echo sudo=$(sudo -n id -u 2>/dev/null || echo no); else echo sudo=absent; fi
if command -v doas >/dev/null 2>&1; then echo doas=$(doas -n id -u 2>/dev/null || echo no); else echo doas=absent; fi`

// escalation reads rootProbe's output: how to become root, or why not.
// nixos-anywhere uses sudo whenever it is installed, and doas only
// without it (importFacts: isRoot, then hasSudo, then hasDoas), and it
// runs both without a terminal: so sudo must work without a password
// where it is installed, even if doas would.
func escalation(probe string) (via, why string) {
	kv := map[string]string{}
	for _, line := range strings.Split(probe, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			kv[k] = v
		}
	}
	switch {
	case kv["uid"] == "0":
		return "", ""
	case kv["sudo"] == "0":
		return "sudo", ""
	case kv["sudo"] != "absent":
		return "", "the target user is not root and cannot sudo without a password (nixos-anywhere uses sudo where it is installed)"
	case kv["doas"] == "0":
		return "doas", ""
	case kv["doas"] != "absent":
		return "", "the target user is not root and cannot doas without a password"
	}
	return "", "the target user is not root, and the target has neither sudo nor doas"
}

// factsScript prints key=value lines, read as get-facts.sh reads them.
const factsScript = `has() { command -v "$1" >/dev/null 2>&1 && echo y || echo n; }
echo "arch=$(uname -m)"
echo "memTotal=$(awk '$1 == "MemTotal:" {print $2}' /proc/meminfo)"
echo "bootID=$(cat /proc/sys/kernel/random/boot_id)/$(cut -d' ' -f22 /proc/1/stat)"
echo "tar=$(has tar)"
echo "cpio=$(has cpio)"
echo "setsid=$(has setsid)"
echo "setsidWait=$(if command -v setsid >/dev/null 2>&1 && setsid --wait true 2>/dev/null; then echo y; else echo n; fi)"
c=none
if command -v systemd-detect-virt >/dev/null 2>&1; then c=$(systemd-detect-virt --container 2>/dev/null); fi
[ -n "$c" ] || c=none
if [ "$c" = none ] && [ -e /run/.containerenv ]; then c=podman; fi
if [ "$c" = none ] && [ -e /.dockerenv ]; then c=docker; fi
echo "container=$c"
echo "kexecLoadDisabled=$(cat /proc/sys/kernel/kexec_load_disabled 2>/dev/null)"
echo "lockdown=$(cat /sys/kernel/security/lockdown 2>/dev/null)"`

// Gather reads the facts, changing nothing on the target. r may run as
// the login user or under sudo: Gather finds out which works.
func Gather(ctx context.Context, r *remote.Runner, disks []string) (*Facts, error) {
	f := &Facts{OS: map[string]string{}}
	run := func(r *remote.Runner, cmd string) (string, error) {
		o := r.Run(ctx, cmd)
		if o.Err != nil {
			return "", fmt.Errorf("%s: %w", cmd, o.Err)
		}
		if o.Exit != 0 {
			return o.Stdout, fmt.Errorf("%s: exit status %d: %s", cmd, o.Exit, strings.TrimSpace(o.Stderr))
		}
		return o.Stdout, nil
	}
	probe, err := run(r.As(""), rootProbe)
	if err != nil {
		return nil, fmt.Errorf("pre-flight: %w", err)
	}
	f.Via, f.NoRoot = escalation(probe)
	if f.NoRoot != "" {
		return f, nil
	}
	f.Root = true
	r = r.As(f.Via)
	osRelease, err := run(r, "cat /etc/os-release")
	if err != nil {
		return nil, err
	}
	f.OS = verify.ParseOSRelease(osRelease)
	out, err := run(r, factsScript)
	if err != nil {
		return nil, err
	}
	kv := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = strings.TrimSpace(v)
		}
	}
	f.Arch = kv["arch"]
	kb, _ := strconv.ParseInt(kv["memTotal"], 10, 64)
	f.MemTotal = kb << 10
	f.BootID = kv["bootID"]
	for _, t := range []string{"tar", "cpio", "setsid"} {
		if kv[t] != "y" {
			f.MissingTools = append(f.MissingTools, t)
		}
	}
	if kv["setsid"] == "y" && kv["setsidWait"] != "y" {
		f.MissingTools = append(f.MissingTools, "setsid --wait")
	}
	if c := kv["container"]; c != "none" && c != "" {
		f.Container = c
	}
	f.KexecLoadDisabled = kv["kexecLoadDisabled"]
	f.Lockdown = lockdownMode(kv["lockdown"])

	// One lsblk for the inventory and the layout's disks: only a name it
	// does not know (by-path, by-uuid) costs a look of its own.
	all, err := readDisks(ctx, r)
	if err != nil {
		return nil, err
	}
	f.Inventory = slices.DeleteFunc(slices.Clone(all), func(d Disk) bool { return !isDisk(d) })
	for _, d := range f.Inventory {
		if d.System {
			f.RootDisks = append(f.RootDisks, d.Resolved)
		}
		if d.BootMedium {
			f.BootDisks = append(f.BootDisks, d.Resolved)
		}
	}
	for _, d := range disks {
		if known, ok := lookupDisk(all, d); ok {
			f.Disks = append(f.Disks, known)
			continue
		}
		f.Disks = append(f.Disks, disk(ctx, r, d))
	}
	return f, nil
}

// lockdownMode reads /sys/kernel/security/lockdown: "none [integrity]
// confidentiality" is in integrity mode.
func lockdownMode(s string) string {
	_, rest, ok := strings.Cut(s, "[")
	mode, _, ok2 := strings.Cut(rest, "]")
	if !ok || !ok2 {
		return ""
	}
	return mode
}

// disk reads one disk of the layout with the same lsblk as ListDisks.
// lookupDisk finds path, a kernel name or a by-id link, among the disks
// lsblk listed.
func lookupDisk(all []Disk, path string) (Disk, bool) {
	for _, d := range all {
		if d.Resolved == path || slices.Contains(d.ByID, path) {
			d.Path, d.Stable = path, strings.HasPrefix(path, "/dev/disk/by-id/")
			return d, true
		}
	}
	return Disk{}, false
}

func disk(ctx context.Context, r *remote.Runner, path string) Disk {
	o := r.Run(ctx, "test -b "+remote.Quote(path))
	if o.Err != nil || o.Exit != 0 {
		return Disk{Path: path, Missing: true}
	}
	ds, err := readDisks(ctx, r, path)
	if err != nil || len(ds) == 0 {
		return Disk{Path: path, Missing: true}
	}
	d := ds[0]
	d.Path, d.Stable = path, strings.HasPrefix(path, "/dev/disk/by-id/")
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
	// Redundant is a layout whose pool mirrors its disks or spreads parity
	// over them (expectations' zfs.topology): the smallest disk then
	// decides every disk's share, and sizes must be close.
	Redundant bool
	// Extra is what the flow passes nixos-anywhere after keystone's own
	// arguments (Install.Extra): the flow must set it, because
	// --no-disko-deps lowers the RAM the kexec installer needs and
	// --kexec brings an image for other architectures.
	Extra []string
}

// Judge returns every reason to refuse, or none.
func Judge(f *Facts, p Policy) []Refusal {
	var out []Refusal
	add := func(what, hint string) { out = append(out, Refusal{what, hint}) }
	if !f.Root {
		add(cmp.Or(f.NoRoot, "the target user is not root and cannot sudo without a password"),
			"use root@HOST, or give the user passwordless sudo on the target")
		return out
	}
	switch {
	case f.Installer():
	case p.PinnedKey && !p.Reinstall:
		add("the target answers with this host's pinned key: it is already installed",
			"pass --reinstall to wipe and install it again")
	case f.nixos() && !p.Reinstall:
		add(fmt.Sprintf("the target runs %s from disk, not the installer", cmp.Or(f.OS["PRETTY_NAME"], "NixOS")),
			"boot the NixOS installer, or pass --reinstall to wipe this system")
	}
	if !f.Installer() {
		out = append(out, judgeKexec(f, p)...)
	}
	for _, d := range f.Disks {
		switch {
		case d.Missing:
			add("disk "+d.Path+" does not exist on the target",
				"list the target's disks with `keystone disks TARGET` and fix disk-config.nix")
		// After kexec the running system is in RAM and every disk is free:
		// wiping the disk the old system ran from is what a kexec install
		// is for. In the live installer it is not, nor is the medium the
		// installer runs from.
		case f.Installer() && d.BootMedium:
			add(fmt.Sprintf("disk %s (%s) is the medium the installer booted from", d.Path, d.Resolved),
				"pick another disk; `keystone disks TARGET` lists them")
		case f.Installer() && d.System:
			add(fmt.Sprintf("disk %s (%s) holds the running system", d.Path, d.Resolved),
				"boot the installer from other media, or pick another disk")
		case p.MinDiskBytes[d.Path] > 0 && d.Size < p.MinDiskBytes[d.Path]:
			add(fmt.Sprintf("disk %s is %s; the layout needs at least %s", d.Path, bytesString(d.Size), bytesString(p.MinDiskBytes[d.Path])),
				"use a larger disk or shrink the layout's fixed partitions")
		}
	}
	out = append(out, judgeDiskSet(f.Disks, p.Redundant)...)
	return out
}

// maxSizeSpread is how much larger, in percent of the smallest, a disk
// of a mirror or raidz may be: its space beyond the smallest's is never
// used.
const maxSizeSpread = 10

// judgeDiskSet refuses a disk named twice (two names, such as two by-id
// links, for one kernel disk) and, in a mirror or raidz, disks whose
// sizes are too far apart.
func judgeDiskSet(disks []Disk, redundant bool) []Refusal {
	var out []Refusal
	seen := map[string]string{} // kernel name -> the first name for it
	var present []Disk
	for _, d := range disks {
		if d.Missing || d.Resolved == "" {
			continue
		}
		if first, ok := seen[d.Resolved]; ok {
			out = append(out, Refusal{fmt.Sprintf("disks %s and %s are the same disk (%s)", first, d.Path, d.Resolved),
				"name each disk once in disk-config.nix (`ls -l /dev/disk/by-id/` on the target shows where each name points)"})
			continue
		}
		seen[d.Resolved] = d.Path
		present = append(present, d)
	}
	if !redundant || len(present) < 2 {
		return out
	}
	small, large := Smallest(present), present[0]
	for _, d := range present {
		if d.Size > large.Size {
			large = d
		}
	}
	if small.Size > 0 && (large.Size-small.Size)*100 > small.Size*maxSizeSpread {
		out = append(out, Refusal{fmt.Sprintf("disk %s is %s and %s only %s: in a mirror or raidz the smallest sets every disk's share, so %s of %s would be unused",
			large.Path, bytesString(large.Size), small.Path, bytesString(small.Size), bytesString(large.Size-small.Size), large.Path),
			fmt.Sprintf("use disks within %d%% of each other's size (`keystone disks TARGET` marks equal sizes)", maxSizeSpread)})
	}
	return out
}

// Smallest is the smallest of disks, the one that decides the size of a
// mirror's or raidz's share on each.
func Smallest(disks []Disk) Disk {
	var s Disk
	for i, d := range disks {
		if i == 0 || d.Size < s.Size {
			s = d
		}
	}
	return s
}

// judgeKexec refuses what makes nixos-anywhere's kexec fail.
func judgeKexec(f *Facts, p Policy) []Refusal {
	var out []Refusal
	add := func(what, hint string) { out = append(out, Refusal{what, hint}) }
	const boot = "boot the NixOS installer on it instead"
	if !slices.Contains(p.Extra, "--kexec") {
		switch f.Arch {
		case "x86_64", "aarch64":
		default:
			add(fmt.Sprintf("the target is %s; nixos-anywhere can kexec only x86_64 and aarch64", f.Arch),
				"boot the NixOS installer on it instead, or pass -- --kexec with an image for it")
		}
	}
	need, which := int64(MinRAM), "1.5 GB, nixos-anywhere's documented minimum"
	if slices.Contains(p.Extra, "--no-disko-deps") {
		need, which = MinRAMNoDiskoDeps, "1 GB, nixos-anywhere's documented minimum with --no-disko-deps"
	}
	if f.MemTotal < need*(100-ramSlack)/100 {
		h := "pass -- --no-disko-deps (it needs about 1 GB), or boot the NixOS installer from a USB stick or ISO"
		if need == MinRAMNoDiskoDeps {
			h = "boot the NixOS installer from a USB stick or ISO instead"
		}
		add(fmt.Sprintf("the target has %s of RAM (MemTotal, %s); kexec into the installer needs %s (less %d%% allowed for what the kernel keeps)",
			gbString(f.MemTotal), bytesString(f.MemTotal), which, ramSlack), h)
	}
	// nixos-anywhere aborts without them (src/nixos-anywhere.sh, main,
	// after importFacts); 1.13 tests `setsid --wait` (get-facts.sh), and
	// both run the kexec script under `setsid --wait`.
	for _, t := range f.MissingTools {
		why := map[string]string{
			"tar":           "to unpack the kexec tarball",
			"cpio":          "to build the new initrd",
			"setsid":        "to run the kexec script in a new session",
			"setsid --wait": "to run the kexec script in a new session and wait for it (util-linux 2.31 or later)",
		}[t]
		add(fmt.Sprintf("the target has no %s, which nixos-anywhere needs %s", t, why),
			"install it on the target (tar, cpio, util-linux), or "+boot)
	}
	if f.Container != "" {
		add(fmt.Sprintf("the target is a %s container, which cannot kexec a new kernel", f.Container),
			"install on the machine (or VM) the container runs on, booted into the NixOS installer")
	}
	switch {
	case f.KexecLoadDisabled == "":
		add("the target's kernel has no kexec (no /proc/sys/kernel/kexec_load_disabled)", boot)
	case f.KexecLoadDisabled != "0":
		add("the target's kernel refuses kexec (kernel.kexec_load_disabled = "+f.KexecLoadDisabled+", which lasts until reboot)", boot)
	}
	if f.Lockdown == "integrity" || f.Lockdown == "confidentiality" {
		add("the target's kernel is in lockdown mode "+f.Lockdown+" (Secure Boot), which refuses to kexec an unsigned kernel",
			"turn Secure Boot off in its firmware for the install: the NixOS installer is not signed for it either (lanzaboote can sign the installed system afterwards)")
	}
	return out
}

// gbString prints n in decimal GB, as nixos-anywhere's docs count RAM.
func gbString(n int64) string { return strconv.FormatFloat(float64(n)/1e9, 'f', 1, 64) + " GB" }

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
// sizes (as disko writes them: 512M, 1G, 100%). "unknown" is a partition of
// disko's legacy msdos table, which has a start and an end instead of a
// size: it adds nothing, so such a layout is checked only for what is known.
func MinDiskBytes(sizes []string) (int64, error) {
	var total int64
	rest := false
	for _, s := range sizes {
		if s == "unknown" {
			continue
		}
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
