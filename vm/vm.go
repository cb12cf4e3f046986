// Package vm runs local QEMU virtual machines for keystone hosts: one
// virtio disk with a serial, UEFI (OVMF, or its Secure Boot build with
// Microsoft's keys enrolled) with its own variables, an optional TPM2
// (swtpm), user-mode networking with SSH forwarded to a loopback port, and
// the serial console on a socket and in a log file.
//
// A VM's state lives in DIR/.keystone/vm/NAME/ (DIR is the flake): the disk,
// the firmware variables, the TPM state, the sockets, the console log and
// state.json, which records every process started for it, so that a later
// command finds them, and a crashed QEMU is noticed and recovered from.
package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
)

// StateDir is where the VMs of the flake in dir keep their state.
func StateDir(dir string) string { return filepath.Join(dir, ".keystone", "vm") }

// State is what state.json records about a VM.
type State struct {
	Name     string `json:"name"`
	PID      int    `json:"pid"`                // QEMU; 0 once stopped
	PIDStart string `json:"pidStart,omitempty"` // its start time (/proc/PID/stat), so a reused PID is not taken for it
	TPMPID   int    `json:"tpmPid,omitempty"`   // swtpm, while it runs
	TPMStart string `json:"tpmPidStart,omitempty"`
	Port     int    `json:"sshPort"` // on 127.0.0.1, forwarded to the guest's port 22
	// UnlockPort, on 127.0.0.1, is forwarded to the guest's InitrdSSHPort:
	// the initrd's sshd of an encrypted layout (keystone unlock).
	UnlockPort int       `json:"unlockPort,omitempty"`
	Accel      string    `json:"accel"` // kvm or tcg
	Firmware   string    `json:"firmware"`
	TPM        bool      `json:"tpm"`
	Disk       string    `json:"disk"`              // the qcow2 file
	Serial     string    `json:"serial"`            // the disk's serial: /dev/disk/by-id/virtio-SERIAL in the guest
	Backing    string    `json:"backing,omitempty"` // --image the disk was made from
	ISO        string    `json:"iso,omitempty"`
	Memory     string    `json:"memory"`
	CPUs       int       `json:"cpus"`
	Started    time.Time `json:"started"`
}

// InitrdSSHPort is keystone.unlock.ssh.port's default, where the initrd's
// sshd of an encrypted layout listens in the guest.
const InitrdSSHPort = 2222

// Target is what deploy and verify take as --target.
func (s *State) Target() string { return "root@127.0.0.1:" + strconv.Itoa(s.Port) }

// DiskByID is the disk's path inside the guest.
func (s *State) DiskByID() string { return "/dev/disk/by-id/virtio-" + s.Serial }

// machine names a VM's files.
type machine struct {
	name, dir string
}

func open(dir, name string) (machine, error) {
	if err := checkName(name); err != nil {
		return machine{}, err
	}
	abs, err := filepath.Abs(filepath.Join(StateDir(dir), name))
	if err != nil {
		return machine{}, err
	}
	return machine{name: name, dir: abs}, nil
}

func (m machine) path(f string) string { return filepath.Join(m.dir, f) }

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func checkName(name string) error {
	if !nameRE.MatchString(name) {
		return exit.UsageError(hint.Errorf("use lower-case letters, digits and inner dashes, like a host name", "bad VM name %q", name))
	}
	return nil
}

// dial connects to one of the VM's sockets through /proc/self/fd, so that
// the path stays short: a socket's path holds at most 107 bytes, and a VM
// of a flake deep in the tree is longer than that. QEMU and swtpm make
// them with paths relative to the VM's folder for the same reason.
func (m machine) dial(sock string, timeout time.Duration) (net.Conn, error) {
	d, err := os.Open(m.dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return net.DialTimeout("unix", "/proc/self/fd/"+strconv.Itoa(int(d.Fd()))+"/"+sock, timeout)
}

// serialOf is the disk serial for a VM: virtio-blk serials hold 20 bytes,
// so a long name is cut and given a hash to stay distinct.
func serialOf(name string) string {
	s := "ks-" + name
	if len(s) <= 20 {
		return s
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return fmt.Sprintf("%s-%08x", s[:11], h.Sum32())
}

// portOf is where a VM's SSH port search starts: derived from its name, so
// a host keeps its port across restarts and machines, in 22000-27999, below
// Linux's ephemeral range.
func portOf(name string) int {
	h := fnv.New32a()
	h.Write([]byte(name))
	return 22000 + int(h.Sum32()%6000)
}

// errNotCreated is returned for a VM that has no state.
var errNotCreated = errors.New("no such VM")

func (m machine) readState() (*State, error) {
	b, err := os.ReadFile(m.path("state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, hint.Wrap(fmt.Errorf("%w: %s (no %s)", errNotCreated, m.name, m.path("state.json")),
			"start it with keystone vm up "+m.name)
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, hint.Wrap(fmt.Errorf("VM %s: %s: %w", m.name, m.path("state.json"), err),
			fmt.Sprintf("keystone vm destroy %s removes the VM; or mend the file by hand", m.name))
	}
	return &s, nil
}

// writeState replaces state.json atomically, so a crash leaves the old or
// the new record, never half of one.
func (m machine) writeState(s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := m.path("state.json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, m.path("state.json"))
}

// alive reports whether pid is still the process that started at start
// (field 22 of /proc/PID/stat) and has not exited.
func alive(pid int, start string) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 || start != "" && f[19] != start {
		return false
	}
	if f[0] == "Z" || f[0] == "X" {
		// A killed QEMU's main thread is a zombie while its other threads
		// still exit, and they hold its files: the disk's write lock.
		tasks, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		return len(tasks) > 1
	}
	return true
}

func startTime(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}
