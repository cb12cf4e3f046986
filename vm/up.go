package vm

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
)

// Options says how Up starts a VM. What a VM was last started with (its
// TPM, firmware, memory, CPUs and port) it keeps, unless an option here
// says otherwise.
type Options struct {
	Dir      string // the flake directory; state goes in Dir/.keystone/vm/Name
	Name     string
	ISO      string // boot this installer ISO while the disk holds no system
	Image    string // start the disk as a qcow2 overlay on this prepared image
	TPM      *bool  // a TPM2 from swtpm, its state kept with the VM; nil: as last started (a new VM: none)
	BIOS     *bool  // SeaBIOS instead of UEFI; nil: as last started (a new VM: UEFI)
	Memory   string // "": as last started (a new VM: 4G)
	CPUs     int    // 0: as last started (a new VM: 2)
	DiskSize string // of a new disk (default 20G, an --image disk: the image's size); larger than the disk: it grows
	SSHPort  int    // 0: the VM's recorded port, else one derived from Name
	Fresh    bool   // throw the disk, the UEFI variables and the TPM state away first
	Accel    string // "kvm", "tcg" or "" (KVM if it really works)

	// SecureBoot is UEFI that enforces Secure Boot with Microsoft's keys
	// enrolled, so that only signed boot loaders start; nil: as last
	// started (a new VM: off). On, it turns BIOS off, as BIOS on turns it off.
	SecureBoot *bool

	// Direct kernel boot, for tests: QEMU loads these instead of firmware
	// finding a bootloader on the disk.
	Kernel, Initrd, Append string

	Wait time.Duration // for SSH to answer; 0: 5 minutes; negative: do not wait
	Out  io.Writer     // progress and next steps; nil: discarded
}

// DefaultWait is how long Up waits for SSH: 3-4x a cold boot under TCG.
const DefaultWait = 5 * time.Minute

// checkOptions refuses a bad command line before anything is touched.
func checkOptions(o *Options) error {
	if err := checkName(o.Name); err != nil {
		return err
	}
	if st, err := os.Stat(o.Dir); err != nil || !st.IsDir() {
		return hint.Errorf("give the flake's folder with --flake, or run keystone in it", "--flake %s: no such directory", o.Dir)
	}
	if o.ISO != "" && o.Image != "" {
		return hint.Errorf("an ISO installs onto an empty disk; an image is a disk already", "--iso and --image exclude each other")
	}
	if o.SecureBoot != nil && *o.SecureBoot && o.BIOS != nil && *o.BIOS {
		return hint.Errorf("Secure Boot is a UEFI feature, which SeaBIOS lacks: leave out --bios", "--secure-boot and --bios exclude each other")
	}
	for flag, f := range map[string]*string{"--iso": &o.ISO, "--image": &o.Image, "--kernel": &o.Kernel, "--initrd": &o.Initrd} {
		if *f == "" {
			continue
		}
		abs, err := filepath.Abs(*f)
		if err != nil {
			return err
		}
		*f = abs
		if st, err := os.Stat(abs); err != nil {
			return fmt.Errorf("%s %s: no such file", flag, abs)
		} else if st.IsDir() {
			return fmt.Errorf("%s %s: a directory, not a file", flag, abs)
		}
	}
	if o.Memory != "" {
		if err := checkSize("--memory", o.Memory); err != nil {
			return err
		}
	}
	if o.DiskSize != "" {
		if err := checkSize("--disk-size", o.DiskSize); err != nil {
			return err
		}
	}
	if o.CPUs < 0 {
		return hint.Errorf("give a number of CPUs from 1 up", "bad --cpus %d", o.CPUs)
	}
	if o.SSHPort < 0 || o.SSHPort > 65535 {
		return hint.Errorf("give a TCP port from 1 to 65535, or none for a free one", "bad --ssh-port %d", o.SSHPort)
	}
	switch o.Accel {
	case "", "auto", "kvm", "tcg":
	default:
		return hint.Errorf("use kvm, tcg or auto", "bad --accel %q", o.Accel)
	}
	return nil
}

// Up starts the VM in the background and waits until SSH answers on its
// forwarded port. A VM whose QEMU died is cleaned up and started again.
func Up(ctx context.Context, o Options) (*State, error) {
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	if err := checkOptions(&o); err != nil {
		return nil, exit.UsageError(err)
	}
	m, err := open(o.Dir, o.Name)
	if err != nil {
		return nil, err
	}
	qemu, err := lookTool(qemuTool)
	if err != nil {
		return nil, err
	}
	qemuImg, err := lookTool(imgTool)
	if err != nil {
		return nil, err
	}

	undo, err := m.prepare(o.Dir)
	if err != nil {
		return nil, err
	}
	unlock, err := m.lock("vm up", out)
	if err != nil {
		undo()
		return nil, err
	}
	locked := true
	release := func() {
		if locked {
			unlock()
			locked = false
		}
	}
	defer release()
	// Runs before the lock is let go, so that it cannot take what another
	// vm up made meanwhile: a start that fails before QEMU is recorded
	// removes what it made, and only that.
	defer undo()

	old, err := m.readState()
	if err != nil && !errors.Is(err, errNotCreated) {
		return nil, err
	}
	if old != nil {
		if alive(old.PID, old.PIDStart) {
			return nil, hint.Errorf(fmt.Sprintf("keystone vm ssh %s to log in, or keystone vm down %s first", m.name, m.name),
				"VM %s is already running (pid %d, ssh on 127.0.0.1:%d)", m.name, old.PID, old.Port)
		}
		crashed := old.PID != 0
		if crashed {
			fmt.Fprintf(out, "vm: %s: QEMU (pid %d) is gone; cleaning up and starting again\n", m.name, old.PID)
		}
		m.cleanup(old)
		if crashed {
			if err := m.writeState(old); err != nil {
				return nil, err
			}
		}
	}
	m.killStrays(out)
	s := m.settle(&o, old, out)

	// Refusals first, before the disk is made or changed.
	want := o.SSHPort
	if want == 0 && old != nil {
		want = old.Port
	}
	port, err := pickPort(m.name, want, want != 0)
	if err != nil {
		if o.SSHPort == 0 && old != nil {
			return nil, hint.Errorf("free it, or move the VM with --ssh-port PORT (deploy and verify then take root@127.0.0.1:PORT)",
				"port 127.0.0.1:%d of VM %s is in use", old.Port, m.name)
		}
		return nil, err
	}
	// The initrd's sshd: its own port, kept across starts when free.
	unlockWant := 0
	if old != nil {
		unlockWant = old.UnlockPort
	}
	unlockPort, err := pickUnlockPort(unlockWant, port)
	if err != nil {
		return nil, err
	}
	var fw *firmware
	if !s.bios {
		f, err := findFirmware(qemu, s.secureBoot)
		if err != nil {
			return nil, err
		}
		fw = &f
	}
	swtpm := ""
	if s.tpm {
		if swtpm, err = lookTool(swtpmTool); err != nil {
			return nil, err
		}
	}
	st := &State{Name: m.name, Disk: m.path("disk.qcow2"), Serial: serialOf(m.name), TPM: s.tpm, Port: port, UnlockPort: unlockPort,
		ISO: o.ISO, Memory: o.Memory, CPUs: o.CPUs, Firmware: "uefi"}
	if s.bios {
		st.Firmware = "bios"
	} else if s.secureBoot {
		st.Firmware = "uefi+secure-boot"
	}
	if o.Kernel != "" {
		st.Firmware += "+kernel"
	}
	if st.Accel, err = chooseAccel(qemu, o.Accel, out); err != nil {
		return nil, err
	}

	if o.Fresh {
		for _, f := range []string{"disk.qcow2", varsFile(false), varsFile(true), "tpm", "console.log"} {
			if err := os.RemoveAll(m.path(f)); err != nil {
				return nil, err
			}
		}
	}
	if err := makeDisk(qemuImg, st, o, out); err != nil {
		return nil, err
	}
	if fw != nil {
		vars := m.path(varsFile(s.secureBoot))
		if _, err := os.Stat(vars); err != nil {
			if err := copyFile(fw.vars, vars); err != nil {
				return nil, err
			}
		} else if err := os.Chmod(vars, 0o600); err != nil {
			return nil, err
		}
	}

	for _, f := range []string{"console.sock", "monitor.sock", "swtpm.sock", "qemu.pid", "swtpm.pid", "unlocked"} {
		os.Remove(m.path(f))
	}
	if s.tpm {
		if err := m.startTPM(swtpm, st); err != nil {
			m.cleanup(st)
			return nil, err
		}
	}
	args := qemuArgs(spec{m: m, accel: st.Accel, fw: fw, secure: fw != nil && s.secureBoot, disk: st.Disk, serial: st.Serial, iso: o.ISO,
		port: st.Port, unlock: st.UnlockPort, memory: o.Memory, cpus: o.CPUs, tpm: s.tpm, kernel: o.Kernel, initrd: o.Initrd, appendCL: o.Append})
	if out, err := m.runDaemon("qemu", qemu, args...); err != nil {
		// Nothing recorded: a VM that never ran is not left as
		// "stopped", and one that ran before keeps its last state.
		m.cleanup(st)
		return nil, fmt.Errorf("qemu-system-x86_64 failed: %v: %s", err, out)
	}
	st.PID, err = readPIDFile(m.path("qemu.pid"))
	if err != nil {
		m.cleanup(st)
		return nil, fmt.Errorf("QEMU started but left no pid file: %w", err)
	}
	st.PIDStart = startTime(st.PID)
	st.Started = time.Now().UTC().Truncate(time.Second)
	// QEMU and swtpm make their files with umask 027; the console log may
	// show what was typed where a terminal echoes.
	for _, f := range []string{"console.log", "swtpm.log", "swtpm.pid"} {
		if err := os.Chmod(m.path(f), 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.cleanup(st)
			return nil, err
		}
	}
	if err := m.writeState(st); err != nil {
		m.cleanup(st)
		return nil, err
	}
	// QEMU is recorded: vm down and the rest may have the VM now, also
	// while this waits for SSH.
	release()
	fmt.Fprintf(out, "vm: %s started (pid %d, %s, %s%s), disk %s (%s)\n", m.name, st.PID, st.Accel, st.Firmware, tpmWord(st.TPM), st.DiskByID(), st.Disk)

	if o.Wait < 0 {
		return st, nil
	}
	if o.Wait == 0 {
		o.Wait = DefaultWait
	}
	if err := m.waitSSH(ctx, st, o.Wait, out); err != nil {
		return st, err
	}
	printNext(out, st)
	return st, nil
}

// settings are what Up resolved from the options and the VM's last start.
type settings struct{ tpm, bios, secureBoot bool }

// settle fills in what the options leave out from the VM's last start, and
// says what it kept and what a flag changed.
func (m machine) settle(o *Options, old *State, out io.Writer) settings {
	var s settings
	say := out
	if old == nil {
		old = &State{Memory: "4G", CPUs: 2} // for a new VM, the defaults; nothing to say
		say = io.Discard
	}
	var kept, changed []string
	note := func(given bool, flag string, was, now any) {
		switch {
		case !given:
			kept = append(kept, fmt.Sprintf("%s=%v", flag, now))
		case was != now:
			changed = append(changed, fmt.Sprintf("%s=%v (was %v)", flag, now, was))
		}
	}
	oldBIOS := strings.HasPrefix(old.Firmware, "bios")
	oldSB := strings.HasPrefix(old.Firmware, "uefi+secure-boot")
	s.tpm, s.bios, s.secureBoot = old.TPM, oldBIOS, oldSB
	if o.TPM != nil {
		s.tpm = *o.TPM
	}
	if o.BIOS != nil {
		s.bios = *o.BIOS
	}
	if o.SecureBoot != nil {
		s.secureBoot = *o.SecureBoot
	}
	// --bios and --secure-boot each turn the other off (checkOptions
	// refused both): a flag wins over what was kept.
	biosOn, sbOn := o.BIOS != nil && *o.BIOS, o.SecureBoot != nil && *o.SecureBoot
	if biosOn {
		s.secureBoot = false
	}
	if sbOn {
		s.bios = false
	}
	note(o.TPM != nil, "--tpm", old.TPM, s.tpm)
	note(o.BIOS != nil || sbOn, "--bios", oldBIOS, s.bios)
	note(o.SecureBoot != nil || biosOn, "--secure-boot", oldSB, s.secureBoot)
	memory, cpus := cmp.Or(old.Memory, "4G"), cmp.Or(old.CPUs, 2)
	note(o.Memory != "", "--memory", memory, cmp.Or(o.Memory, memory))
	note(o.CPUs != 0, "--cpus", cpus, cmp.Or(o.CPUs, cpus))
	o.Memory, o.CPUs = cmp.Or(o.Memory, memory), cmp.Or(o.CPUs, cpus)
	if old.Port != 0 {
		note(o.SSHPort != 0, "--ssh-port", old.Port, cmp.Or(o.SSHPort, old.Port))
	}
	if len(kept) > 0 {
		fmt.Fprintf(say, "vm: %s as last started: %s (a flag changes one)\n", m.name, strings.Join(kept, " "))
	}
	if len(changed) > 0 {
		fmt.Fprintf(say, "vm: %s changed: %s\n", m.name, strings.Join(changed, ", "))
	}
	if !s.tpm {
		// A VM started without --tpm before this kept its TPM state too.
		if e, _ := os.ReadDir(m.path("tpm")); len(e) > 0 {
			fmt.Fprintf(out, "vm: warning: %s starts without its TPM2, whose state stays in %s; keystone vm up %s --tpm gives it back\n",
				m.name, m.path("tpm"), m.name)
		}
	}
	return s
}

// prepare makes the VM's folder (0700: its disk may hold private keys)
// and returns undo, which, while no state.json records the VM, removes
// what was made since: a folder that was there before, with a disk copied
// in by hand or a state.json deleted, keeps everything it had.
func (m machine) prepare(flake string) (undo func(), err error) {
	var made []string        // folders and files made here, in order
	var before []os.DirEntry // what the VM's folder held
	read := false
	undo = func() {
		if _, err := m.readState(); !errors.Is(err, errNotCreated) {
			return
		}
		if read {
			entries, _ := os.ReadDir(m.dir)
			for _, e := range entries {
				if !slices.ContainsFunc(before, func(b os.DirEntry) bool { return b.Name() == e.Name() }) {
					os.RemoveAll(m.path(e.Name()))
				}
			}
		}
		for i := len(made) - 1; i >= 0; i-- {
			os.Remove(made[i]) // a folder only once empty
		}
	}
	defer func() {
		if err != nil {
			undo()
		}
	}()
	for _, d := range []string{filepath.Dir(StateDir(flake)), StateDir(flake), m.dir} {
		if err := os.Mkdir(d, 0o700); err == nil {
			made = append(made, d)
		} else if !errors.Is(err, os.ErrExist) {
			return nil, err
		}
	}
	if before, err = os.ReadDir(m.dir); err != nil {
		return nil, err
	}
	read = true
	// An older VM's folder was made 0755.
	if err := os.Chmod(m.dir, 0o700); err != nil {
		return nil, err
	}
	// Disks and TPM state never belong in the flake's git.
	ignore := filepath.Join(filepath.Dir(StateDir(flake)), ".gitignore")
	if _, err := os.Stat(ignore); err != nil {
		if err := os.WriteFile(ignore, []byte("# keystone vm state: disks, firmware variables, TPM state, logs\n*\n"), 0o644); err != nil {
			return nil, err
		}
		made = append(made, ignore) // undone before its folder
	}
	return undo, nil
}

func tpmWord(tpm bool) string {
	if tpm {
		return ", TPM2"
	}
	return ""
}

func printNext(out io.Writer, st *State) {
	fmt.Fprintf(out, `
target: %[1]s   (127.0.0.1:%[2]d is forwarded to the VM's port 22, also after kexec)
initrd: 127.0.0.1:%[5]d is forwarded to the VM's port %[6]d, the initrd's sshd of an encrypted layout
next:
  keystone new-host %[3]s --vm --disk %[4]s --key ~/.ssh/id_ed25519.pub
  keystone deploy %[3]s --target %[1]s --post-kexec-ssh-port %[2]d --initrd-port %[5]d --disk-password-file FILE
  keystone verify %[3]s --target %[1]s
  keystone unlock %[3]s --target %[1]s --initrd-port %[5]d   # at a boot that asks for the disk password (or keystone vm unlock %[3]s, on the console)
  keystone vm ssh %[3]s | keystone vm console %[3]s | keystone vm down %[3]s
`, st.Target(), st.Port, st.Name, st.DiskByID(), st.UnlockPort, InitrdSSHPort)
}

// pickUnlockPort returns want when it is free, else the first free port
// after the SSH port's.
func pickUnlockPort(want, sshPort int) (int, error) {
	if want != 0 && want != sshPort && portFree(want) {
		return want, nil
	}
	for p := sshPort + 1; p < sshPort+200 && p < 65536; p++ {
		if portFree(p) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no free port on 127.0.0.1 after %d for the initrd's sshd", sshPort)
}

func checkSize(flag, s string) error {
	n := strings.TrimRight(s, "KMGTkmgt")
	if v, err := strconv.ParseUint(n, 10, 32); err != nil || v == 0 || len(s)-len(n) > 1 {
		return hint.Errorf("give a size such as 4G or 512M", "bad %s %q", flag, s)
	}
	return nil
}

// makeDisk creates the VM's qcow2 disk the first time: empty, of DiskSize,
// or as an overlay on Image. A kept disk made from another image is
// refused; one smaller than DiskSize grows to it.
func makeDisk(qemuImg string, st *State, o Options, out io.Writer) error {
	if _, err := os.Stat(st.Disk); err == nil {
		// What the disk says, not what a state file that may not have been
		// written says.
		info, err := imageInfo(qemuImg, st.Disk)
		if err != nil {
			return err
		}
		st.Backing = info.Backing
		if o.Image != "" && st.Backing != o.Image {
			return hint.Errorf("add --fresh to make a new disk from it",
				"the disk of VM %s was not made from %s", st.Name, o.Image)
		}
		if err := os.Chmod(st.Disk, 0o600); err != nil {
			return err
		}
		return growDisk(qemuImg, st, o.DiskSize, info.Size, out)
	}
	args := []string{"create", "-q", "-f", "qcow2"}
	size := o.DiskSize
	if o.Image != "" {
		info, err := imageInfo(qemuImg, o.Image)
		if err != nil {
			return err
		}
		args = append(args, "-b", o.Image, "-F", info.Format)
		st.Backing = o.Image
	} else {
		st.Backing = ""
		if size == "" {
			size = "20G"
		}
	}
	args = append(args, st.Disk)
	if size != "" {
		args = append(args, size)
	}
	if out, err := exec.Command(qemuImg, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("qemu-img create: %v: %s", err, strings.TrimSpace(string(out)))
	}
	// What the guest wrote is private (a host key in it, with the ext4
	// layout).
	if err := os.Chmod(st.Disk, 0o600); err != nil {
		os.Remove(st.Disk)
		return err
	}
	if o.Image != "" && size != "" {
		// A disk smaller than its image would cut off its partitions.
		image, err1 := imageInfo(qemuImg, o.Image)
		disk, err2 := imageInfo(qemuImg, st.Disk)
		if err := errors.Join(err1, err2); err != nil {
			os.Remove(st.Disk)
			return err
		}
		if disk.Size < image.Size {
			os.Remove(st.Disk)
			return hint.Errorf(fmt.Sprintf("give at least --disk-size %dM, or leave it out to take the image's size", (image.Size+mib-1)/mib),
				"--disk-size %s is smaller than the image %s (%d MiB)", size, o.Image, image.Size/mib)
		}
	}
	return nil
}

// growDisk makes a kept disk size big, if it is smaller; a smaller size
// is refused, since shrinking would cut off what the guest wrote at its end.
func growDisk(qemuImg string, st *State, size string, has int64, out io.Writer) error {
	if size == "" {
		return nil
	}
	want := sizeBytes(size)
	switch {
	case want == has:
		return nil
	case want < has:
		return hint.Errorf(fmt.Sprintf("leave --disk-size out to keep it, or add --fresh for a new disk of %s", size),
			"--disk-size %s is smaller than the disk of VM %s (%d MiB), which cannot shrink", size, st.Name, has/mib)
	}
	if b, err := exec.Command(qemuImg, "resize", "-q", st.Disk, strconv.FormatInt(want, 10)).CombinedOutput(); err != nil {
		return fmt.Errorf("qemu-img resize: %v: %s", err, strings.TrimSpace(string(b)))
	}
	fmt.Fprintf(out, "vm: the disk of %s grew from %d MiB to %s; its partitions stay as they were\n", st.Name, has/mib, size)
	return nil
}

// sizeBytes is what qemu-img makes of a size checkSize accepted: a bare
// number is bytes, K, M, G and T are powers of 1024.
func sizeBytes(s string) int64 {
	n := strings.TrimRight(s, "KMGTkmgt")
	v, _ := strconv.ParseInt(n, 10, 64)
	if suffix := strings.ToUpper(s[len(n):]); suffix != "" {
		v <<= 10 * (strings.Index("KMGT", suffix) + 1)
	}
	return v
}

const mib = 1 << 20

type diskInfo struct {
	Format  string `json:"format"`
	Backing string `json:"full-backing-filename"`
	Size    int64  `json:"virtual-size"`
}

func imageInfo(qemuImg, image string) (diskInfo, error) {
	var info diskInfo
	// -U: the image may be in use by a running VM.
	out, err := exec.Command(qemuImg, "info", "-U", "--output=json", image).Output()
	if err != nil {
		return info, fmt.Errorf("qemu-img info %s: %w", image, err)
	}
	if err := json.Unmarshal(out, &info); err != nil || info.Format == "" {
		return info, fmt.Errorf("qemu-img info %s: no format", image)
	}
	return info, nil
}

// pickPort returns want if it is free (and fails if the user asked for it
// and it is not), else the first free port from the name's.
func pickPort(name string, want int, asked bool) (int, error) {
	if want != 0 {
		if portFree(want) {
			return want, nil
		}
		if asked {
			return 0, hint.Errorf("choose another --ssh-port, or leave it out for a free one", "port 127.0.0.1:%d is in use", want)
		}
	}
	p := portOf(name)
	for i := 0; i < 200; i++ {
		if portFree(p + i) {
			return p + i, nil
		}
	}
	return 0, fmt.Errorf("no free port on 127.0.0.1 from %d to %d", p, p+199)
}

func portFree(p int) bool {
	l, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func chooseAccel(qemu, want string, out io.Writer) (string, error) {
	switch want {
	case "tcg":
		return "tcg", nil
	case "kvm":
		if ok, why := kvmWorks(qemu); !ok {
			return "", hint.Errorf("leave out --accel to fall back to TCG", "KVM does not work here: %s", why)
		}
		return "kvm", nil
	case "", "auto":
		if ok, why := kvmWorks(qemu); ok {
			return "kvm", nil
		} else {
			fmt.Fprintf(out, "vm: %s: emulating the CPU with TCG, which is slow (a boot takes about a minute)\n", why)
		}
		return "tcg", nil
	}
	return "", hint.Errorf("use kvm, tcg or auto", "bad --accel %q", want)
}

func (m machine) startTPM(swtpm string, st *State) error {
	if err := os.MkdirAll(m.path("tpm"), 0o700); err != nil {
		return err
	}
	if out, err := m.runDaemon("swtpm", swtpm, "socket", "--tpm2",
		"--tpmstate", "dir="+m.path("tpm"),
		"--ctrl", "type=unixio,path=swtpm.sock",
		"--pid", "file="+m.path("swtpm.pid"),
		"--log", "file="+m.path("swtpm.log"),
		"--daemon"); err != nil {
		return fmt.Errorf("swtpm failed: %v: %s", err, out)
	}
	pid, err := readPIDFile(m.path("swtpm.pid"))
	if err != nil {
		return fmt.Errorf("swtpm started but left no pid file: %w", err)
	}
	st.TPMPID, st.TPMStart = pid, startTime(pid)
	return nil
}

// runDaemon runs a program that puts itself in the background. Its output
// goes to a file, not a pipe: a daemon that kept the pipe open would keep
// us waiting.
func (m machine) runDaemon(name, prog string, args ...string) (string, error) {
	logPath := m.path(name + ".out")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	cmd := exec.Command(prog, args...)
	// Socket paths are relative to the VM's folder (see machine.dial).
	cmd.Dir = m.dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, f, f
	// Its own session: a Ctrl-C meant for keystone must not stop the VM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Run()
	b, _ := os.ReadFile(logPath)
	return strings.TrimSpace(string(b)), err
}

func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: bad pid %q", path, b)
	}
	return pid, nil
}

// cleanup stops whatever of st still runs and marks it stopped. swtpm
// exits with its QEMU; this is for a QEMU that never connected or crashed.
func (m machine) cleanup(st *State) {
	for _, p := range [][2]any{{st.PID, st.PIDStart}, {st.TPMPID, st.TPMStart}} {
		pid, start := p[0].(int), p[1].(string)
		if alive(pid, start) {
			unix.Kill(pid, unix.SIGKILL)
			waitGone(pid, start, 5*time.Second)
		}
	}
	st.PID, st.PIDStart, st.TPMPID, st.TPMStart = 0, "", 0, ""
	for _, f := range []string{"console.sock", "monitor.sock", "swtpm.sock", "qemu.pid", "swtpm.pid"} {
		os.Remove(m.path(f))
	}
}

// killStrays ends a QEMU or swtpm that a vm up interrupted between
// starting it and recording it left behind: its pid file is there, and it
// runs with this VM's files.
func (m machine) killStrays(out io.Writer) {
	for _, f := range []string{"qemu.pid", "swtpm.pid"} {
		pid, err := readPIDFile(m.path(f))
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if start := startTime(pid); alive(pid, start) && strings.Contains(string(cmdline), m.dir+"/") {
			fmt.Fprintf(out, "vm: %s: ending %s (pid %d), which ran with no state recording it\n", m.name, strings.TrimSuffix(f, ".pid"), pid)
			unix.Kill(pid, unix.SIGKILL)
			waitGone(pid, start, 5*time.Second)
		}
	}
}

func waitGone(pid int, start string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for alive(pid, start) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// waitSSH waits until an SSH greeting comes through the forwarded port: QEMU
// accepts connections there before anything in the guest listens.
func (m machine) waitSSH(ctx context.Context, st *State, d time.Duration, out io.Writer) error {
	start := time.Now()
	fmt.Fprintf(out, "vm: waiting up to %v for SSH on 127.0.0.1:%d ", d, st.Port)
	next := start.Add(10 * time.Second)
	for {
		if sshBanner(st.Port) == nil {
			fmt.Fprintf(out, " up after %v\n", time.Since(start).Round(time.Second))
			return nil
		}
		if !alive(st.PID, st.PIDStart) {
			fmt.Fprintln(out)
			if now, err := m.readState(); err == nil && now.PID != st.PID {
				return hint.Errorf("keystone vm status "+m.name+" shows it", "VM %s was stopped before SSH answered (keystone vm down?)", m.name)
			}
			return hint.Errorf("the console log is "+m.path("console.log"), "QEMU exited while %s booted:\n%s", m.name, logTail(m.path("console.log"), 5))
		}
		if time.Since(start) > d {
			fmt.Fprintln(out)
			return hint.Errorf(fmt.Sprintf("it still runs: keystone vm console %s shows why; keystone vm down %s stops it", m.name, m.name),
				"SSH on 127.0.0.1:%d did not answer in %v", st.Port, d)
		}
		if time.Now().After(next) {
			fmt.Fprintf(out, "%ds ", int(time.Since(start).Seconds()))
			next = next.Add(10 * time.Second)
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(out)
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func sshBanner(port int) error {
	c, err := net.DialTimeout("tcp4", "127.0.0.1:"+strconv.Itoa(port), 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "SSH-") {
		return fmt.Errorf("not an SSH greeting: %q", line)
	}
	return nil
}

func logTail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o600)
}

// lock keeps two keystone processes from starting or stopping the same VM
// at once. The holder writes what it is into the lock file, so that one
// that has to wait can say for whom.
func (m machine) lock(what string, out io.Writer) (func(), error) {
	f, err := os.OpenFile(m.path("lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		holder, _ := os.ReadFile(m.path("lock"))
		fmt.Fprintf(out, "vm: waiting for %s to let go of VM %s\n", cmp.Or(strings.TrimSpace(string(holder)), "another keystone"), m.name)
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	if f.Truncate(0) == nil {
		fmt.Fprintf(f, "keystone %s (pid %d)\n", what, os.Getpid())
	}
	return func() {
		f.Truncate(0)
		f.Close()
	}, nil
}
