package vm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keystone-nix/keystone/internal/hint"
)

// tool is a program vm needs and where it comes from.
type tool struct{ cmd, debian, nixpkgs string }

var (
	qemuTool  = tool{"qemu-system-x86_64", "qemu-system-x86", "qemu"}
	imgTool   = tool{"qemu-img", "qemu-utils", "qemu"}
	swtpmTool = tool{"swtpm", "swtpm", "swtpm"}
)

func (t tool) missing(what string) error {
	return hint.Errorf(fmt.Sprintf("install it: apt-get install %s (Debian), or nixpkgs#%s", t.debian, t.nixpkgs),
		"%s is not installed", what)
}

func lookTool(t tool) (string, error) {
	p, err := exec.LookPath(t.cmd)
	if err != nil {
		return "", t.missing(t.cmd)
	}
	return p, nil
}

// firmware is a UEFI code image and the pristine variables each VM copies.
type firmware struct{ code, vars string }

// firmwarePairs are where distributions put OVMF: Debian and Ubuntu, Fedora,
// Arch; QEMU's own edk2 build (nixpkgs' qemu ships it) is tried next to the
// qemu binary. KEYSTONE_OVMF_CODE and KEYSTONE_OVMF_VARS name others.
var firmwarePairs = []firmware{
	{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
	{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
	{"/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"},
	{"/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"},
}

// secureBootPairs are OVMF built for Secure Boot (it needs SMM) with
// variables in which Microsoft's keys are enrolled and Secure Boot is on:
// Debian's and Ubuntu's .ms.fd pairs (the ovmf package's README.Debian),
// Fedora's .secboot.fd pair (edk2.spec enrolls them with virt-fw-vars
// --enroll-redhat --secure-boot). KEYSTONE_OVMF_SECURE_BOOT_CODE and
// KEYSTONE_OVMF_SECURE_BOOT_VARS name others, such as nixpkgs' OVMFFull
// (FV/OVMF_CODE.ms.fd and FV/OVMF_VARS.ms.fd).
var secureBootPairs = []firmware{
	{"/usr/share/OVMF/OVMF_CODE_4M.ms.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"},
	{"/usr/share/OVMF/OVMF_CODE.ms.fd", "/usr/share/OVMF/OVMF_VARS.ms.fd"},
	{"/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd", "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd"},
}

func findFirmware(qemu string, secureBoot bool) (firmware, error) {
	env, pairs := "KEYSTONE_OVMF_", firmwarePairs
	missing := hint.Errorf("install it: apt-get install ovmf (Debian), or nixpkgs#OVMF (then set KEYSTONE_OVMF_CODE and KEYSTONE_OVMF_VARS); or boot with --bios",
		"no UEFI firmware (OVMF) found")
	if secureBoot {
		env, pairs = "KEYSTONE_OVMF_SECURE_BOOT_", secureBootPairs
		missing = hint.Errorf("install it: apt-get install ovmf (Debian), or nixpkgs#OVMFFull (then set KEYSTONE_OVMF_SECURE_BOOT_CODE and KEYSTONE_OVMF_SECURE_BOOT_VARS to its FV/OVMF_CODE.ms.fd and FV/OVMF_VARS.ms.fd); or start without --secure-boot",
			"no UEFI firmware with Secure Boot and Microsoft's keys enrolled (OVMF .ms.fd) found")
	} else if real, err := filepath.EvalSymlinks(qemu); err == nil {
		// QEMU's own variables have no keys enrolled: not for Secure Boot.
		share := filepath.Join(filepath.Dir(filepath.Dir(real)), "share", "qemu")
		pairs = append(pairs, firmware{filepath.Join(share, "edk2-x86_64-code.fd"), filepath.Join(share, "edk2-i386-vars.fd")})
	}
	if c, v := os.Getenv(env+"CODE"), os.Getenv(env+"VARS"); c != "" || v != "" {
		for _, f := range []string{c, v} {
			if _, err := os.Stat(f); err != nil {
				return firmware{}, hint.Errorf("set both "+env+"CODE and "+env+"VARS to OVMF files", "OVMF: %v", err)
			}
		}
		return firmware{c, v}, nil
	}
	for _, p := range pairs {
		_, e1 := os.Stat(p.code)
		_, e2 := os.Stat(p.vars)
		if e1 == nil && e2 == nil {
			return p, nil
		}
	}
	return firmware{}, missing
}

// varsFile is the VM's copy of the firmware's variables: one for each
// firmware, so that turning Secure Boot on or off keeps the other's.
func varsFile(secureBoot bool) string {
	if secureBoot {
		return "OVMF_VARS.secure-boot.fd"
	}
	return "OVMF_VARS.fd"
}

var (
	kvmOnce sync.Once
	kvmOK   bool
	kvmWhy  string
)

// kvmWorks boots SeaBIOS under KVM and watches its debug port: a /dev/kvm
// that opens is not enough (a PVM host kernel has one that aborts or hangs
// real guests). The answer is kept for the process.
func kvmWorks(qemu string) (bool, string) {
	kvmOnce.Do(func() { kvmOK, kvmWhy = probeKVM(qemu) })
	return kvmOK, kvmWhy
}

func probeKVM(qemu string) (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, "no usable /dev/kvm"
	}
	f.Close()
	dir, err := os.MkdirTemp("", "keystone-kvm-")
	if err != nil {
		return false, err.Error()
	}
	defer os.RemoveAll(dir)
	log := filepath.Join(dir, "debugcon")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-m", "32",
		"-nodefaults", "-display", "none", "-no-reboot",
		"-chardev", "file,id=dbg,path="+log, "-device", "isa-debugcon,iobase=0x402,chardev=dbg")
	if err := cmd.Start(); err != nil {
		return false, err.Error()
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() { cancel(); <-done }()
	for {
		// SeaBIOS got far enough to look for something to boot: the vCPU
		// really runs.
		if b, _ := os.ReadFile(log); strings.Contains(string(b), "Booting from") || strings.Contains(string(b), "No bootable device") {
			return true, ""
		}
		select {
		case <-done:
			return false, "/dev/kvm does not run a guest (QEMU exited)"
		case <-ctx.Done():
			return false, "/dev/kvm does not run a guest (no firmware output in 10s)"
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// spec is everything the QEMU command line is made from.
type spec struct {
	m        machine
	accel    string
	fw       *firmware // nil: SeaBIOS
	secure   bool      // fw enforces Secure Boot
	disk     string
	serial   string
	iso      string
	port     int
	unlock   int // forwarded to the guest's InitrdSSHPort; 0 for none
	memory   string
	cpus     int
	tpm      bool
	kernel   string
	initrd   string
	appendCL string
}

// qemuArgs is the QEMU command line, without the binary. It runs in the
// VM's folder: the sockets' paths are relative, so that their length does
// not depend on where the flake is (a socket's path holds 107 bytes).
func qemuArgs(s spec) []string {
	m := s.m
	a := []string{"-name", "keystone-" + m.name, "-machine", "q35"}
	if s.secure {
		// OVMF's Secure Boot build stops without SMM: its variables,
		// the keys among them, are written by SMM code only, from flash
		// the guest's OS cannot write to.
		a = []string{"-name", "keystone-" + m.name, "-machine", "q35,smm=on",
			"-global", "driver=cfi.pflash01,property=secure,value=on"}
	}
	if s.accel == "kvm" {
		a = append(a, "-accel", "kvm", "-cpu", "host")
	} else {
		// A 128 MiB translation cache: with the default 1 GiB a reboot
		// takes 3x as long (vm-notes.md).
		a = append(a, "-accel", "tcg,thread=multi,tb-size=128", "-cpu", "max")
	}
	a = append(a, "-smp", strconv.Itoa(s.cpus), "-m", s.memory,
		"-display", "none", "-vga", "none", "-nodefaults",
		"-chardev", "socket,id=ser0,path=console.sock,server=on,wait=off,logfile="+m.path("console.log"),
		"-serial", "chardev:ser0",
		"-chardev", "socket,id=mon0,path=monitor.sock,server=on,wait=off",
		"-mon", "chardev=mon0,mode=readline")
	if s.fw != nil {
		a = append(a,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+s.fw.code,
			"-drive", "if=pflash,format=raw,unit=1,file="+m.path(varsFile(s.secure)))
	}
	// The disk boots first; while it holds no system, firmware falls
	// through to the ISO. So the installer boots once and the installed
	// system after deploy reboots it.
	a = append(a,
		"-drive", "file="+s.disk+",format=qcow2,if=none,id=d0,cache=writeback,discard=unmap",
		"-device", "virtio-blk-pci,drive=d0,serial="+s.serial+",bootindex=1")
	if s.iso != "" {
		a = append(a,
			"-drive", "file="+s.iso+",format=raw,media=cdrom,if=none,id=cd0,readonly=on",
			"-device", "ide-cd,drive=cd0,bootindex=2")
	}
	netdev := "user,id=n0,hostfwd=tcp:127.0.0.1:" + strconv.Itoa(s.port) + "-:22"
	if s.unlock != 0 {
		netdev += ",hostfwd=tcp:127.0.0.1:" + strconv.Itoa(s.unlock) + "-:" + strconv.Itoa(InitrdSSHPort)
	}
	a = append(a,
		"-netdev", netdev,
		"-device", "virtio-net-pci,netdev=n0,romfile=",
		"-device", "virtio-rng-pci")
	if s.tpm {
		dev := "tpm-crb"
		if s.fw == nil {
			dev = "tpm-tis"
		}
		a = append(a,
			"-chardev", "socket,id=chrtpm,path=swtpm.sock",
			"-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
			"-device", dev+",tpmdev=tpm0")
	}
	if s.kernel != "" {
		a = append(a, "-kernel", s.kernel)
		if s.initrd != "" {
			a = append(a, "-initrd", s.initrd)
		}
		if s.appendCL != "" {
			a = append(a, "-append", s.appendCL)
		}
	}
	// A free PCIe slot, for a disk hot-plugged from the monitor (see
	// Monitor). Last, so that no other device changes its address.
	a = append(a, "-device", "pcie-root-port,id=hp0,chassis=1")
	return append(a, "-daemonize", "-pidfile", m.path("qemu.pid"))
}
