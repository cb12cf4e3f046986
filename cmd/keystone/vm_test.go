package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/vm"
)

// keystoneVM runs `keystone vm ARGS… --flake dir` and returns the exit
// code and what it printed.
func keystoneVM(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	var out strings.Builder
	start := time.Now()
	code := run(context.Background(), append(append([]string{"keystone", "vm"}, args...), "--flake", dir), &out, &out)
	t.Logf("keystone vm %s: exit %d after %v\n%s", strings.Join(args, " "), code, time.Since(start).Round(time.Second), out.String())
	return code, out.String()
}

// tcpBanner is the first line a TCP server on 127.0.0.1:port sends.
func tcpBanner(port int) string {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return line
}

func vmStatusJSON(t *testing.T, dir string) vm.Info {
	t.Helper()
	return vmStatusOf(t, dir, "web1")
}

func vmStatusOf(t *testing.T, dir, name string) vm.Info {
	t.Helper()
	code, out := keystoneVM(t, dir, "status", name, "--format", "json")
	var infos []vm.Info
	if err := json.Unmarshal([]byte(out), &infos); code != 0 || err != nil || len(infos) != 1 {
		t.Fatalf("vm status --format json: exit %d, %v:\n%s", code, err, out)
	}
	return infos[0]
}

// processesOf lists the live processes whose command line names dir.
func processesOf(dir string) []string {
	var found []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		s := string(stat)
		if i := strings.LastIndexByte(s, ')'); i < 0 || strings.HasPrefix(s[i+1:], " Z") {
			continue // gone, waiting for its parent
		}
		if strings.Contains(string(cmdline), dir) {
			found = append(found, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}

// TestVMLifecycle drives two VMs through keystone vm, with five boots in
// all, each through the image's ESP: Debian's signed shim, GRUB and kernel.
// web1 (UEFI on OVMF without enrolled keys, so Secure Boot is off; a TPM2):
// up → SSH, the by-id disk, the TPM → status → disks, and enroll and the
// tpm check against its TPM2 with Secure Boot off (vmDisksAndTPM) →
// deploy, whose install reboots it into a boot that waits at a disk
// password prompt until vm unlock, and deploy again, whose install hangs
// until vm reset (vmDeploy) → keystone unlock at a boot's initrd stand-in
// (vmUnlockBoot) → a hot-plugged disk and deploy's pre-flight of a mirror
// (vmHotPlug) → the console → down leaves no process → destroy. web2,
// meanwhile, on OVMF's Secure Boot firmware with Microsoft's keys enrolled
// and no TPM: up, QEMU killed, status says crashed, up --secure-boot
// recovers → both run at once, and web2 reads Secure Boot on, its kernel
// locked down, which deploy refuses to kexec from (vmSecond).
func TestVMLifecycle(t *testing.T) {
	img := testhost.BuildVMImage(t)
	dir := t.TempDir()
	start := time.Now()
	t.Cleanup(func() {
		// Whatever the test left running.
		vm.Down(context.Background(), dir, "web1", 5*time.Second, nil)
		t.Logf("VM test took %v", time.Since(start).Round(time.Second))
	})

	// UEFI without enrolled keys: OVMF starts the image's shim, GRUB and
	// kernel from its ESP without checking them, so Secure Boot is off.
	code, out := keystoneVM(t, dir, "up", "web1", "--image", img.Disk, "--disk-size", "8G", "--tpm", "--memory", "2G")
	if code != 0 {
		t.Fatalf("vm up: exit %d", code)
	}
	st := vmStatusJSON(t, dir)
	target := "root@127.0.0.1:" + strconv.Itoa(st.Port)
	for _, want := range []string{"target: " + target, "keystone deploy web1 --target " + target, "also after kexec", "/dev/disk/by-id/virtio-ks-web1"} {
		if !strings.Contains(out, want) {
			t.Errorf("vm up output lacks %q", want)
		}
	}
	if st.Status != "running" || !st.TPM || st.Firmware != "uefi" || st.Serial != "ks-web1" || st.Uptime == "" {
		t.Errorf("status = %+v", st)
	}
	g := img.Guest(st.Port)
	// The initrd's sshd port (2222 in the guest) is forwarded too: an sshd
	// started there answers on the printed port.
	if st.UnlockPort == 0 || st.UnlockPort == st.Port ||
		!strings.Contains(out, "keystone unlock web1 --target "+target+" --initrd-port "+strconv.Itoa(st.UnlockPort)) {
		t.Errorf("vm up: initrd port %d, output:\n%s", st.UnlockPort, out)
	}
	g.MustRun(t, "/usr/sbin/sshd -p 2222 -o PidFile=/run/sshd-2222.pid")
	banner := ""
	for start := time.Now(); !strings.HasPrefix(banner, "SSH-2.0-") && time.Since(start) < 20*time.Second; time.Sleep(time.Second) {
		// QEMU accepts before the guest listens, and then hangs up.
		banner = tcpBanner(st.UnlockPort)
	}
	if !strings.HasPrefix(banner, "SSH-2.0-") {
		t.Errorf("127.0.0.1:%d (forwarded to the guest's 2222) answers %q, want an SSH banner", st.UnlockPort, banner)
	}
	g.MustRun(t, "kill $(cat /run/sshd-2222.pid)")
	g.MustRun(t, "test -b /dev/disk/by-id/virtio-ks-web1 && test -c /dev/tpmrm0 && tpm2_getrandom 8 >/dev/null")

	// A LUKS2 volume on the spare partition.
	const password = "pw-Zq81-unlock"
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte(password), 0o600)
	g.MustRun(t, "printf %s '"+password+"' | cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - "+spareDevice)
	vmDisksAndTPM(t, g, st.Port, password, pwFile)

	web2 := startSecond(t, dir, img)
	vmDeploy(t, dir, g, out, password, pwFile)
	vmUnlockBoot(t, dir, g, st, password, pwFile)
	vmSecond(t, dir, img, g, web2)
	vmHotPlug(t, dir, img, g)

	g.LookLikeInstaller(t)
	if v := g.MustRun(t, ". /etc/os-release && echo $ID $VARIANT_ID"); v != "nixos installer\n" {
		t.Errorf("os-release after LookLikeInstaller: %q", v)
	}
	checkConsole(t, dir)
	if code, _ := keystoneVM(t, dir, "up", "web1"); code == 0 {
		t.Error("a second vm up of a running VM succeeded")
	}

	if code, _ := keystoneVM(t, dir, "down", "web1"); code != 0 {
		t.Fatalf("vm down: exit %d", code)
	}
	if left := processesOf(dir); len(left) > 0 {
		t.Errorf("processes left after vm down:\n%s", strings.Join(left, "\n"))
	}
	if s := vmStatusJSON(t, dir); s.Status != "stopped" {
		t.Errorf("after down: %s", s.Status)
	}
	if code, _ := keystoneVM(t, dir, "destroy", "web1", "--yes"); code != 0 {
		t.Fatalf("vm destroy: exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(vm.StateDir(dir), "web1")); err == nil {
		t.Error("destroy left the state")
	}
}

// checkConsole attaches to the serial console as vm console does, presses
// Enter, sees getty's login prompt, and leaves with Ctrl-].
func checkConsole(t *testing.T, dir string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var mu sync.Mutex
	var seen strings.Builder
	out := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return seen.Write(p)
	})
	done := make(chan error, 1)
	go func() { done <- vm.Console(context.Background(), dir, "web1", r, out) }()
	waitFor(t, 30*time.Second, "login prompt on the console", func() bool {
		w.Write([]byte("\r"))
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(seen.String(), "kstest login:")
	})
	w.Write([]byte{0x1d})
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("vm console: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Ctrl-] did not leave the console")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s in %v", what, d)
		}
		time.Sleep(time.Second)
	}
}
