package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keystone-nix/keystone/vm"
)

// bareVM is vm up's flags for a real QEMU with an empty disk, whose
// firmware finds nothing to boot: what vm up does with QEMU, swtpm and
// its files, in a second, without a guest.
var bareVM = []string{"--disk-size", "64M", "--accel", "tcg", "--wait", "-1s"}

func downAtEnd(t *testing.T, dir string, names ...string) {
	t.Cleanup(func() {
		for _, n := range names {
			vm.Down(context.Background(), dir, n, time.Second, nil)
		}
	})
}

// A VM keeps what it was last started with (TPM, firmware, memory, CPUs,
// port) when vm up is given no flag for it, after vm down as after a
// crash, and says so; a flag changes one and says that.
func TestVMKeepsItsSettings(t *testing.T) {
	dir := t.TempDir()
	downAtEnd(t, dir, "web1")
	up := func(flags ...string) string {
		t.Helper()
		code, out := keystoneVM(t, dir, append(append([]string{"up", "web1"}, flags...), bareVM...)...)
		if code != 0 {
			t.Fatalf("vm up %s: exit %d", strings.Join(flags, " "), code)
		}
		return out
	}
	down := func() {
		t.Helper()
		// No guest handles the power button: vm down would wait its minute.
		if err := vm.Down(context.Background(), dir, "web1", time.Second, nil); err != nil {
			t.Fatalf("vm down: %v", err)
		}
	}
	up("--tpm", "--bios", "--memory", "256M", "--cpus", "1")
	first := vmStatusOf(t, dir, "web1")
	down()

	out := up()
	st := vmStatusOf(t, dir, "web1")
	if !st.TPM || st.Firmware != "bios" || st.Memory != "256M" || st.CPUs != 1 || st.Port != first.Port {
		t.Errorf("vm up without flags after vm down: %+v; want the TPM, bios, 256M, 1 CPU, port %d kept", st.State, first.Port)
	}
	for _, want := range []string{"as last started", "--tpm=true", "--memory=256M", "--cpus=1"} {
		if !strings.Contains(out, want) {
			t.Errorf("vm up does not say what it kept: lacks %q", want)
		}
	}
	down()

	out = up("--memory", "192M")
	if st := vmStatusOf(t, dir, "web1"); st.Memory != "192M" || !st.TPM {
		t.Errorf("vm up --memory 192M: %+v", st.State)
	}
	if !strings.Contains(out, "--memory=192M (was 256M)") {
		t.Error("vm up does not say what a flag changed")
	}
	down()

	out = up("--tpm=false")
	if st := vmStatusOf(t, dir, "web1"); st.TPM {
		t.Errorf("vm up --tpm=false: %+v", st.State)
	}
	if !strings.Contains(out, "starts without its TPM2") {
		t.Error("vm up --tpm=false does not warn that the VM's TPM state is left out")
	}
	down()

	// --secure-boot takes the VM from SeaBIOS to OVMF's Secure Boot
	// firmware, with SMM and variables of its own, and is kept.
	out = up("--secure-boot")
	if !strings.Contains(out, "--bios=false (was true), --secure-boot=true (was false)") {
		t.Error("vm up --secure-boot does not say it turned --bios off")
	}
	down()
	out = up()
	st = vmStatusOf(t, dir, "web1")
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(st.PID) + "/cmdline")
	if st.Firmware != "uefi+secure-boot" || !strings.Contains(out, "--secure-boot=true") ||
		!strings.Contains(string(cmdline), "q35,smm=on") || !strings.Contains(string(cmdline), "/OVMF_VARS.secure-boot.fd") {
		t.Errorf("vm up after vm up --secure-boot: %+v, QEMU's command line %q; want the Secure Boot firmware kept", st.State, cmdline)
	}
}

// A flake deep in the tree (socket paths over 107 bytes) runs VMs, with
// swtpm; vm down leaves no process.
func TestVMLongFlakePath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("a-folder-with-a-long-name/", 4))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if n := len(filepath.Join(vm.StateDir(dir), "web1", "console.sock")); n <= 108 {
		t.Fatalf("the socket path is %d bytes: not long enough for this test", n)
	}
	downAtEnd(t, dir, "web1")
	if code, _ := keystoneVM(t, dir, append([]string{"up", "web1", "--tpm", "--memory", "256M"}, bareVM...)...); code != 0 {
		t.Fatalf("vm up in %s: exit %d", dir, code)
	}
	if st := vmStatusOf(t, dir, "web1"); st.Status != "running" || !st.TPM {
		t.Errorf("status: %+v", st)
	}
	if answer, err := vm.Monitor(dir, "web1", "info tpm"); err != nil || !strings.Contains(answer, "emulator") {
		t.Errorf("info tpm on the monitor: %q, %v", answer, err)
	}
	if err := vm.Down(context.Background(), dir, "web1", time.Second, nil); err != nil {
		t.Fatalf("vm down: %v", err)
	}
	if left := processesOf(dir); len(left) > 0 {
		t.Errorf("processes left after vm down:\n%s", strings.Join(left, "\n"))
	}
}

// A QEMU that fails to start leaves no "stopped" VM behind, and no files.
func TestVMQEMUFailsNoGhost(t *testing.T) {
	dir := t.TempDir()
	downAtEnd(t, dir, "web1")
	if code, _ := keystoneVM(t, dir, append([]string{"up", "web1", "--cpus", "999"}, bareVM...)...); code != 1 {
		t.Errorf("vm up --cpus 999: exit %d, want 1", code)
	}
	code, out := keystoneVM(t, dir, "status", "--format", "json")
	var infos []vm.Info
	if err := json.Unmarshal([]byte(out), &infos); code != 0 || err != nil || len(infos) != 0 {
		t.Errorf("vm status after a QEMU that never ran: exit %d, %v: %s", code, err, out)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left %v in the flake", left)
	}
}
