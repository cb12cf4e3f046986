package vm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keystone-nix/keystone/internal/hint"
)

// Options says how Up starts a VM.
type Options struct {
	Dir      string // the flake directory; state goes in Dir/.keystone/vm/Name
	Name     string
	ISO      string // boot this installer ISO while the disk holds no system
	Image    string // start the disk as a qcow2 overlay on this prepared image
	TPM      bool   // a TPM2 from swtpm, its state kept with the VM
	BIOS     bool   // SeaBIOS instead of UEFI
	Memory   string // default 4G
	CPUs     int    // default 2
	DiskSize string // of a new disk; default 20G (an --image disk: the image's size)
	SSHPort  int    // 0: the VM's recorded port, else one derived from Name
	Fresh    bool   // throw the disk, the UEFI variables and the TPM state away first
	Accel    string // "kvm", "tcg" or "" (KVM if it really works)

	// Direct kernel boot, for tests: QEMU loads these instead of firmware
	// finding a bootloader on the disk.
	Kernel, Initrd, Append string

	Wait time.Duration // for SSH to answer; 0: 5 minutes; negative: do not wait
	Out  io.Writer     // progress and next steps; nil: discarded
}

// DefaultWait is how long Up waits for SSH: 3-4x a cold boot under TCG.
const DefaultWait = 5 * time.Minute

// Up starts the VM in the background and waits until SSH answers on its
// forwarded port. A VM whose QEMU died is cleaned up and started again.
func Up(ctx context.Context, o Options) (*State, error) {
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	m, err := open(o.Dir, o.Name)
	if err != nil {
		return nil, err
	}
	if o.ISO != "" && o.Image != "" {
		return nil, hint.Errorf("an ISO installs onto an empty disk; an image is a disk already", "--iso and --image exclude each other")
	}
	for flag, f := range map[string]*string{"--iso": &o.ISO, "--image": &o.Image, "--kernel": &o.Kernel, "--initrd": &o.Initrd} {
		if *f == "" {
			continue
		}
		if *f, err = filepath.Abs(*f); err != nil {
			return nil, err
		}
		if st, err := os.Stat(*f); err != nil || st.IsDir() {
			return nil, fmt.Errorf("%s %s: no such file", flag, *f)
		}
	}
	if o.Memory == "" {
		o.Memory = "4G"
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	if err := checkSize("--memory", o.Memory); err != nil {
		return nil, err
	}
	if o.DiskSize != "" {
		if err := checkSize("--disk-size", o.DiskSize); err != nil {
			return nil, err
		}
	}
	if o.SSHPort < 0 || o.SSHPort > 65535 {
		return nil, hint.Errorf("give a TCP port from 1 to 65535, or none for a free one", "bad --ssh-port %d", o.SSHPort)
	}
	qemu, err := lookTool(qemuTool)
	if err != nil {
		return nil, err
	}
	qemuImg, err := lookTool(imgTool)
	if err != nil {
		return nil, err
	}
	var fw *firmware
	if !o.BIOS {
		f, err := findFirmware(qemu)
		if err != nil {
			return nil, err
		}
		fw = &f
	}
	swtpm := ""
	if o.TPM {
		if swtpm, err = lookTool(swtpmTool); err != nil {
			return nil, err
		}
	}

	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return nil, err
	}
	// Disks and TPM state never belong in the flake's git.
	ignore := filepath.Join(filepath.Dir(StateDir(o.Dir)), ".gitignore")
	wroteIgnore := false
	if _, err := os.Stat(ignore); err != nil {
		if err := os.WriteFile(ignore, []byte("# keystone vm state: disks, firmware variables, TPM state, logs\n*\n"), 0o644); err != nil {
			return nil, err
		}
		wroteIgnore = true
	}
	unlock, err := m.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()

	old, err := m.readState()
	if err != nil && !errors.Is(err, errNotCreated) {
		return nil, err
	}
	if old == nil {
		// A first start that fails before QEMU is recorded (a busy
		// --ssh-port, a disk smaller than its image) leaves nothing.
		defer func() {
			if _, err := m.readState(); !errors.Is(err, errNotCreated) {
				return
			}
			os.RemoveAll(m.dir)
			os.Remove(StateDir(o.Dir))
			if wroteIgnore {
				os.Remove(ignore)
				os.Remove(filepath.Dir(ignore))
			}
		}()
	}
	if old != nil {
		if alive(old.PID, old.PIDStart) {
			return nil, hint.Errorf(fmt.Sprintf("keystone vm ssh %s to log in, or keystone vm down %s first", m.name, m.name),
				"VM %s is already running (pid %d, ssh on 127.0.0.1:%d)", m.name, old.PID, old.Port)
		}
		if old.PID != 0 {
			fmt.Fprintf(out, "vm: %s: QEMU (pid %d) is gone; cleaning up and starting again\n", m.name, old.PID)
		}
		m.cleanup(old)
	}
	if o.Fresh {
		for _, f := range []string{"disk.qcow2", "OVMF_VARS.fd", "tpm", "console.log"} {
			if err := os.RemoveAll(m.path(f)); err != nil {
				return nil, err
			}
		}
	}

	st := &State{Name: m.name, Disk: m.path("disk.qcow2"), Serial: serialOf(m.name), TPM: o.TPM,
		ISO: o.ISO, Memory: o.Memory, CPUs: o.CPUs, Firmware: "uefi"}
	if o.BIOS {
		st.Firmware = "bios"
	}
	if o.Kernel != "" {
		st.Firmware += "+kernel"
	}
	if err := makeDisk(qemuImg, st, o); err != nil {
		return nil, err
	}
	if fw != nil {
		if _, err := os.Stat(m.path("OVMF_VARS.fd")); err != nil {
			if err := copyFile(fw.vars, m.path("OVMF_VARS.fd")); err != nil {
				return nil, err
			}
		}
	}
	want := o.SSHPort
	if want == 0 && old != nil {
		want = old.Port
	}
	if st.Port, err = pickPort(m.name, want, o.SSHPort != 0); err != nil {
		return nil, err
	}
	st.Accel, err = chooseAccel(qemu, o.Accel, out)
	if err != nil {
		return nil, err
	}

	for _, f := range []string{"console.sock", "monitor.sock", "swtpm.sock", "qemu.pid", "swtpm.pid", "unlocked"} {
		os.Remove(m.path(f))
	}
	if o.TPM {
		if err := m.startTPM(swtpm, st); err != nil {
			return nil, err
		}
	}
	// Recorded before QEMU starts, so that a failure here leaves no swtpm
	// nobody knows about.
	if err := m.writeState(st); err != nil {
		m.cleanup(st)
		return nil, err
	}
	args := qemuArgs(spec{m: m, accel: st.Accel, fw: fw, disk: st.Disk, serial: st.Serial, iso: o.ISO,
		port: st.Port, memory: o.Memory, cpus: o.CPUs, tpm: o.TPM, kernel: o.Kernel, initrd: o.Initrd, appendCL: o.Append})
	if out, err := m.runDaemon("qemu", qemu, args...); err != nil {
		m.cleanup(st)
		m.writeState(st)
		return nil, fmt.Errorf("qemu-system-x86_64 failed: %v: %s", err, out)
	}
	st.PID, err = readPIDFile(m.path("qemu.pid"))
	if err != nil {
		return nil, fmt.Errorf("QEMU started but left no pid file: %w", err)
	}
	st.PIDStart = startTime(st.PID)
	st.Started = time.Now().UTC().Truncate(time.Second)
	if err := m.writeState(st); err != nil {
		return nil, err
	}
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

func tpmWord(tpm bool) string {
	if tpm {
		return ", TPM2"
	}
	return ""
}

func printNext(out io.Writer, st *State) {
	fmt.Fprintf(out, `
target: %[1]s   (127.0.0.1:%[2]d is forwarded to the VM's port 22, also after kexec)
next:
  keystone new-host %[3]s --vm --disk %[4]s --key ~/.ssh/id_ed25519.pub
  keystone deploy %[3]s --target %[1]s --post-kexec-ssh-port %[2]d
  keystone verify %[3]s --target %[1]s
  keystone vm ssh %[3]s | keystone vm console %[3]s | keystone vm down %[3]s
`, st.Target(), st.Port, st.Name, st.DiskByID())
}

func checkSize(flag, s string) error {
	n := strings.TrimRight(s, "KMGTkmgt")
	if v, err := strconv.ParseUint(n, 10, 32); err != nil || v == 0 || len(s)-len(n) > 1 {
		return hint.Errorf("give a size such as 4G or 512M", "bad %s %q", flag, s)
	}
	return nil
}

// makeDisk creates the VM's qcow2 disk the first time: empty, of DiskSize,
// or as an overlay on Image. A kept disk made from another image is refused.
func makeDisk(qemuImg string, st *State, o Options) error {
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
		return nil
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
		"--ctrl", "type=unixio,path="+m.path("swtpm.sock"),
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
	f, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	cmd := exec.Command(prog, args...)
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
	return os.WriteFile(to, b, 0o644)
}

// lock keeps two keystone processes from starting or stopping the same VM
// at once.
func (m machine) lock() (func(), error) {
	f, err := os.OpenFile(m.path("lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
