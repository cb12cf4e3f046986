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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keystone-nix/keystone/internal/diskpw"
	"github.com/keystone-nix/keystone/internal/hint"
)

// Info is a VM's state as Status finds it.
type Info struct {
	State
	Status string `json:"status"`           // running, stopped (also: the guest powered itself off) or crashed (QEMU is gone otherwise)
	Uptime string `json:"uptime,omitempty"` // while running
	Dir    string `json:"dir"`              // its state directory
}

// Status reports on the VM name of the flake in dir.
func Status(dir, name string) (*Info, error) {
	m, err := open(dir, name)
	if err != nil {
		return nil, err
	}
	st, err := m.readState()
	if err != nil {
		return nil, err
	}
	return m.info(st), nil
}

func (m machine) info(st *State) *Info {
	i := &Info{State: *st, Status: "stopped", Dir: m.dir}
	switch {
	case alive(st.PID, st.PIDStart):
		i.Status = "running"
		i.Uptime = time.Since(st.Started).Round(time.Second).String()
	case st.PID != 0 && !poweredOff(m.path("console.log")):
		i.Status = "crashed"
	}
	return i
}

// poweredOff reports whether the guest's kernel said last that it powers
// off: QEMU then exits by itself, which is no crash.
func poweredOff(log string) bool {
	f, err := os.Open(log)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if st, err := f.Stat(); err == nil && st.Size() > int64(len(buf)) {
		f.Seek(-int64(len(buf)), io.SeekEnd)
	}
	n, _ := io.ReadFull(f, buf)
	tail := strings.TrimSpace(string(buf[:n]))
	return strings.HasSuffix(tail, "reboot: Power down")
}

// WriteStatus prints infos as a table (one line a VM) or as JSON.
func WriteStatus(w io.Writer, infos []*Info, format string) error {
	switch format {
	case "json":
		if infos == nil {
			infos = []*Info{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(infos)
	case "table", "":
		if len(infos) == 0 {
			fmt.Fprintln(w, "no VMs here; start one with keystone vm up NAME")
		}
		for _, i := range infos {
			line := fmt.Sprintf("%s: %s ssh=127.0.0.1:%d", i.Name, i.Status, i.Port)
			if i.UnlockPort != 0 {
				line += fmt.Sprintf(" initrd-ssh=127.0.0.1:%d", i.UnlockPort)
			}
			line += fmt.Sprintf(" accel=%s firmware=%s tpm=%v disk=%s", i.Accel, i.Firmware, i.TPM, i.DiskByID())
			if i.Status == "running" {
				line += fmt.Sprintf(" pid=%d uptime=%s", i.PID, i.Uptime)
			}
			fmt.Fprintln(w, line)
		}
		return nil
	}
	return hint.Errorf("use table or json", "bad --format %q", format)
}

// List reports on every VM of the flake in dir, by name. A VM whose state
// cannot be read is left out and named in the error.
func List(dir string) ([]*Info, error) {
	entries, err := os.ReadDir(StateDir(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var infos []*Info
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || checkName(e.Name()) != nil {
			continue
		}
		i, err := Status(dir, e.Name())
		if errors.Is(err, errNotCreated) {
			continue
		}
		if err != nil {
			// The others are still listed.
			errs = append(errs, err)
			continue
		}
		infos = append(infos, i)
	}
	return infos, errors.Join(errs...)
}

// running returns the VM's state if its QEMU runs.
func running(dir, name string) (machine, *State, error) {
	m, err := open(dir, name)
	if err != nil {
		return m, nil, err
	}
	st, err := m.readState()
	if err != nil {
		return m, nil, err
	}
	if !alive(st.PID, st.PIDStart) {
		return m, st, hint.Errorf("start it with keystone vm up "+name, "VM %s is not running", name)
	}
	return m, st, nil
}

// Monitor sends one command to the VM's QEMU monitor (HMP, as in QEMU's
// "(qemu)" prompt) and returns what QEMU answered: for what keystone vm has
// no command of its own, such as hot-plugging a second disk into the free
// PCIe port hp0 (drive_add, then device_add virtio-blk-pci,bus=hp0).
func Monitor(dir, name, cmd string) (string, error) {
	if strings.ContainsAny(cmd, "\r\n") {
		return "", errors.New("a monitor command is one line")
	}
	m, _, err := running(dir, name)
	if err != nil {
		return "", err
	}
	return m.monitor(cmd)
}

// monitor sends one HMP command to QEMU's monitor and returns its answer.
func (m machine) monitor(cmd string) (string, error) {
	c, err := m.dial("monitor.sock", 2*time.Second)
	if err != nil {
		return "", fmt.Errorf("QEMU monitor: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	// The banner ends with the first prompt.
	if _, err := readUntil(r, "(qemu) "); err != nil {
		return "", fmt.Errorf("QEMU monitor: %w", err)
	}
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", fmt.Errorf("QEMU monitor: %w", err)
	}
	if cmd == "quit" {
		io.Copy(io.Discard, r) // until QEMU closes it
		return "", nil
	}
	answer, err := readUntil(r, "(qemu) ")
	if err != nil {
		return "", fmt.Errorf("QEMU monitor: %w", err)
	}
	// The readline monitor echoes the command, with terminal escapes,
	// before its answer.
	answer = strings.TrimSuffix(answer, "(qemu) ")
	if _, after, ok := strings.Cut(answer, "\n"); ok {
		answer = after
	}
	return strings.TrimSpace(strings.ReplaceAll(answer, "\r", "")), nil
}

func readUntil(r *bufio.Reader, s string) (string, error) {
	var b strings.Builder
	for !strings.HasSuffix(b.String(), s) {
		c, err := r.ReadByte()
		if err != nil {
			return b.String(), err
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// Down powers the VM off: an ACPI power button press, then QEMU is told to
// quit when the guest has not gone down within timeout (0: one minute), and
// killed if even that fails. It also ends a crashed VM's leftovers.
func Down(ctx context.Context, dir, name string, timeout time.Duration, out io.Writer) error {
	if out == nil {
		out = io.Discard
	}
	if timeout == 0 {
		timeout = time.Minute
	}
	m, err := open(dir, name)
	if err != nil {
		return err
	}
	unlock, err := m.lock("vm down", out)
	if err != nil {
		return m.notCreated(err)
	}
	defer unlock()
	st, err := m.readState()
	if err != nil {
		return err
	}
	if !alive(st.PID, st.PIDStart) {
		if st.PID != 0 {
			fmt.Fprintf(out, "vm: %s: QEMU (pid %d) was already gone; cleaned up\n", name, st.PID)
		} else {
			fmt.Fprintf(out, "vm: %s is not running\n", name)
		}
		m.cleanup(st)
		return m.writeState(st)
	}
	start := time.Now()
	how := "powered off"
	if atBootPrompt(m.path("console.log"), m.unlockedAt()) {
		// Nothing there handles the power button (logind starts after
		// the disks are open) and nothing of the system is open yet.
		how = "was waiting at its disk password prompt; QEMU quit"
		timeout = 0
	} else if _, err := m.monitor("system_powerdown"); err == nil {
		waitCtx(ctx, func() bool { return !alive(st.PID, st.PIDStart) }, timeout)
	}
	if alive(st.PID, st.PIDStart) {
		if timeout > 0 {
			how = fmt.Sprintf("did not power off in %v; QEMU quit", timeout)
		}
		m.monitor("quit")
		if !waitGone(st.PID, st.PIDStart, 10*time.Second) {
			how = "killed"
		}
	}
	m.cleanup(st)
	if err := m.writeState(st); err != nil {
		return err
	}
	fmt.Fprintf(out, "vm: %s %s after %v\n", name, how, time.Since(start).Round(100*time.Millisecond))
	return nil
}

func (m machine) notCreated(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		_, err := m.readState()
		return err
	}
	return err
}

func waitCtx(ctx context.Context, done func() bool, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !done() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// Reset resets the VM at once, like its reset button: nothing is shut down.
func Reset(dir, name string) error {
	m, _, err := running(dir, name)
	if err != nil {
		return err
	}
	os.Remove(m.path("unlocked"))
	_, err = m.monitor("system_reset")
	return err
}

// DestroyOptions says how Destroy asks.
type DestroyOptions struct {
	Yes bool      // do not ask
	In  io.Reader // where the answer is read from
	Out io.Writer
}

// Destroy stops the VM and removes all its state: disk, UEFI variables, TPM
// state and logs. Unless o.Yes, it asks for the VM's name first.
func Destroy(ctx context.Context, dir, name string, o DestroyOptions) error {
	m, err := open(dir, name)
	if err != nil {
		return err
	}
	if _, err := os.Stat(m.dir); err != nil {
		return hint.Errorf("keystone vm status lists the VMs", "no such VM: %s (no %s)", name, m.dir)
	}
	if !o.Yes {
		fmt.Fprintf(o.Out, "This removes VM %s and its disk, UEFI variables and TPM state in %s.\nType %s to go on: ", name, m.dir, name)
		line, _ := bufio.NewReader(o.In).ReadString('\n')
		if strings.TrimSpace(line) != name {
			return hint.Errorf("type the name exactly, or give --yes", "not destroyed")
		}
	}
	if _, err := m.readState(); err == nil {
		if err := Down(ctx, dir, name, 10*time.Second, o.Out); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(m.dir); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "vm: %s destroyed\n", name)
	return nil
}

// SSHCommand is the ssh command line that logs in to the running VM as
// root, with the user's own keys and ssh configuration. The VM is
// reinstalled at will and its host key with it, so the key is not checked:
// the port is on loopback, forwarded by our own QEMU.
func SSHCommand(dir, name string, args []string) ([]string, error) {
	_, st, err := running(dir, name)
	if err != nil {
		return nil, err
	}
	argv := []string{"ssh", "-p", strconv.Itoa(st.Port),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"root@127.0.0.1"}
	return append(argv, args...), nil
}

// SSH runs ssh into the VM on the terminal and returns its error; an
// *exec.ExitError carries ssh's exit status.
func SSH(ctx context.Context, dir, name string, args []string) error {
	argv, err := SSHCommand(dir, name, args)
	if err != nil {
		return err
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		return hint.Errorf("install it: apt-get install openssh-client, or nixpkgs#openssh", "ssh is not installed")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}

// Console attaches in and out to the VM's serial console until the user
// types Ctrl-] (or in ends). When in is a terminal it is put in raw mode
// for the while.
func Console(ctx context.Context, dir, name string, in *os.File, out io.Writer) error {
	m, _, err := running(dir, name)
	if err != nil {
		return err
	}
	c, err := m.openConsole()
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(out, "vm: console of %s; Ctrl-] leaves\r\n", name)
	if restore, err := rawMode(in); err == nil {
		defer restore()
	}
	done := make(chan error, 2)
	go func() {
		_, err := io.Copy(out, c)
		done <- err
	}()
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := in.Read(buf)
			if i := slices.Index(buf[:n], 0x1d); i >= 0 {
				c.Write(buf[:i])
				done <- nil
				return
			}
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					done <- werr
					return
				}
			}
			if err != nil {
				done <- nil
				return
			}
		}
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
	}
	fmt.Fprint(out, "\r\n")
	return err
}

func rawMode(f *os.File) (func(), error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

// ConsoleLog is the file QEMU writes everything the guest prints on its
// serial console to (never what is typed into it).
func ConsoleLog(dir, name string) (string, error) {
	m, err := open(dir, name)
	if err != nil {
		return "", err
	}
	return m.path("console.log"), nil
}

// UnlockOptions says what Unlock types and how long it waits.
type UnlockOptions struct {
	Dir, Name    string
	PasswordFile string        // the disk password, without a trailing newline
	Timeout      time.Duration // for the prompt; 0: 5 minutes
	Out          io.Writer
}

// diskPrompts begin the disk password prompts of systemd-cryptsetup
// ("Please enter passphrase for disk NAME (NAME):", systemd's initrd and
// crypttab), cryptsetup ("Enter passphrase for /dev/…:") and the NixOS
// scripted initrd ("Passphrase for /dev/…:"). Other prompts ask for other
// passwords: sudo's "[sudo] password for alice:", ssh-add's "Enter
// passphrase for /root/.ssh/id_ed25519:".
var diskPrompts = []string{"Please enter passphrase for disk ", "Enter passphrase for /dev/", "Passphrase for /dev/"}

// Unlock waits for a disk password prompt on the VM's serial console that
// is still open (nothing answered it; it came after the last one Unlock
// answered in this boot), and types the password from the file into the
// console. The password is neither printed nor logged: QEMU's console log
// records only what the guest writes. While it waits it holds the
// console, which serves one client: one already attached (keystone vm
// console) is an error, since what is typed would never reach the guest.
func Unlock(ctx context.Context, o UnlockOptions) error {
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	pw, err := diskpw.Read(o.PasswordFile)
	if err != nil {
		return err
	}
	defer clear(pw)
	m, st, err := running(o.Dir, o.Name)
	if err != nil {
		return err
	}
	c, err := m.openConsole()
	if err != nil {
		return err
	}
	defer c.Close()
	// What the guest prints goes to the log as well; a client that does
	// not read would hold the guest's console up.
	go io.Copy(io.Discard, c)

	log := m.path("console.log")
	from := m.unlockedAt()
	fmt.Fprintf(out, "vm: waiting up to %v for a disk password prompt on the console of %s\n", o.Timeout, o.Name)
	deadline := time.Now().Add(o.Timeout)
	var at int64
	for {
		if at = openPrompt(log, from); at >= 0 {
			// Typed as a person would, a moment after the prompt: the
			// guest changes the terminal's modes after printing it, and
			// what arrives before that is lost.
			time.Sleep(time.Second)
			if openPrompt(log, from) == at {
				break
			}
			continue
		}
		if !alive(st.PID, st.PIDStart) {
			return fmt.Errorf("QEMU of %s exited while waiting for the disk password prompt", o.Name)
		}
		if time.Now().After(deadline) {
			if findPrompt(log, from) >= 0 {
				return hint.Errorf(fmt.Sprintf("keystone vm console %s shows where the boot is", o.Name),
					"no pending disk password prompt on the console of %s in %v: the last one was answered", o.Name, o.Timeout)
			}
			return hint.Errorf(fmt.Sprintf("keystone vm console %s shows where the boot is", o.Name),
				"no disk password prompt on the console of %s in %v", o.Name, o.Timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	// systemd's prompt takes TAB to echo nothing, not even one star per
	// character, which would tell the password's length.
	keys := pw
	if b, _ := os.ReadFile(log); strings.Contains(string(b[at:]), "press TAB for no echo") {
		keys = append([]byte{'\t'}, pw...)
	}
	for _, k := range append(keys, '\r') {
		if _, err := c.Write([]byte{k}); err != nil {
			return fmt.Errorf("serial console: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := os.WriteFile(m.path("unlocked"), []byte(strconv.FormatInt(at+1, 10)+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(out, "vm: typed the disk password of %s at its prompt\n", o.Name)
	return m.accepted(ctx, o.Name, at, st)
}

// consoleTaken asks QEMU whether a client has the serial console. Its
// socket chardev serves one client; another's connection waits in the
// listen queue, unseen, until the first leaves. info chardev names a free
// one "disconnected:unix:console.sock,server=on" and a taken one
// "unix:console.sock,server=on" (QEMU 7.2, chardev/char-socket.c:
// update_disconnected_filename and qemu_chr_compute_filename).
func (m machine) consoleTaken() (bool, error) {
	answer, err := m.monitor("info chardev")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(answer, "\n") {
		if name, file, ok := strings.Cut(strings.TrimSpace(line), ": filename="); ok && name == "ser0" {
			return !strings.HasPrefix(file, "disconnected:"), nil
		}
	}
	return false, fmt.Errorf("QEMU monitor: no serial console ser0 in info chardev: %q", answer)
}

// openConsole connects to the serial console if no one else has it, and
// returns once QEMU has taken the connection. (One that connects between
// the check and ours would have it instead; that window is milliseconds.)
func (m machine) openConsole() (net.Conn, error) {
	taken, err := m.consoleTaken()
	if err != nil {
		return nil, err
	}
	if taken {
		return nil, hint.Errorf("leave the other session first (Ctrl-] in keystone vm console)",
			"the serial console of %s is in use by another client (keystone vm console or vm unlock): what is typed here would not reach the guest", m.name)
	}
	c, err := m.dial("console.sock", 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("serial console: %w", err)
	}
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if taken, err := m.consoleTaken(); err == nil && taken {
			return c, nil
		}
		if time.Since(start) > 5*time.Second {
			c.Close()
			return nil, errors.New("serial console: QEMU did not take the connection in 5s")
		}
	}
}

// accepted watches the console after the password was typed: the prompt
// coming back means it was wrong; a login prompt, or quiet for AcceptWait,
// means the boot goes on.
func (m machine) accepted(ctx context.Context, name string, at int64, st *State) error {
	typed := fileSize(m.path("console.log"))
	deadline := time.Now().Add(AcceptWait)
	for time.Now().Before(deadline) && alive(st.PID, st.PIDStart) {
		if findPrompt(m.path("console.log"), at+1) >= 0 {
			return hint.Errorf(fmt.Sprintf("check the password file, then run keystone vm unlock %s again", name),
				"the disk password was not accepted: %s asks again", name)
		}
		if b, err := os.ReadFile(m.path("console.log")); err == nil && int64(len(b)) > typed && strings.Contains(string(b[typed:]), "login:") {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil
}

// AcceptWait is how long Unlock watches for the prompt to come back: a
// wrong password is told within seconds even with argon2 under TCG.
var AcceptWait = 30 * time.Second

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// unlockedAt is where in the console log the prompts Unlock has answered
// end.
func (m machine) unlockedAt() int64 {
	b, err := os.ReadFile(m.path("unlocked"))
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// openPrompt returns the offset of the last disk password prompt at or
// after from if nothing answered it yet: an answer, typed or by Unlock,
// ends the prompt's line. Else -1. The kernel's messages, which it prints
// on the console whatever waits there, end lines of their own.
func openPrompt(log string, from int64) int64 {
	at := findPrompt(log, from)
	if at < 0 {
		return -1
	}
	for next := at; next >= 0; next = findPrompt(log, at+1) {
		at = next
	}
	b, err := os.ReadFile(log)
	if err != nil || strings.Contains(kernelLine.ReplaceAllString(string(b[at:]), ""), "\n") {
		return -1
	}
	return at
}

// kernelLine is one message of the kernel on its console, with printk's
// time stamp (CONFIG_PRINTK_TIME, on in Debian's and NixOS's kernels).
var kernelLine = regexp.MustCompile(`\[ *[0-9]+\.[0-9]{6}\] [^\n]*\n`)

// bootMarks begin a boot on the console: the kernel's last words on
// reboot, the firmware's first (SeaBIOS, OVMF), the kernel's first.
var bootMarks = []string{"reboot: Restarting system", "SeaBIOS (version", "BdsDxe: ", "Linux version "}

// atBootPrompt reports whether the guest waits at its boot's own disk
// password prompt: the last thing on the console is systemd-cryptsetup's
// prompt, open, and no login prompt came between the start of this boot
// and it. Any other prompt may be a user's in a running system (sudo on
// the serial console, cryptsetup run by hand), which has file systems to
// lose. Without a mark of this boot's start, a login prompt of an earlier
// boot counts too: the safe side, a power-off that waits.
func atBootPrompt(log string, from int64) bool {
	at := openPrompt(log, from)
	if at < 0 {
		return false
	}
	b, err := os.ReadFile(log)
	if err != nil || !strings.HasPrefix(string(b[at:]), diskPrompts[0]) {
		return false
	}
	before := string(b[:at])
	boot := 0
	for _, mark := range bootMarks {
		boot = max(boot, strings.LastIndex(before, mark))
	}
	return !strings.Contains(before[boot:], "login:")
}

// findPrompt returns the offset of the first prompt in the log at or after
// from, or -1.
func findPrompt(log string, from int64) int64 {
	b, err := os.ReadFile(log)
	if err != nil || int64(len(b)) <= from {
		return -1
	}
	rest := string(b[from:])
	best := -1
	for _, w := range diskPrompts {
		if i := strings.Index(rest, w); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	if best < 0 {
		return -1
	}
	return from + int64(best)
}
