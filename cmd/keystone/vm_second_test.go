package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keystone-nix/keystone/deploy"
	"github.com/keystone-nix/keystone/enroll"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/verify"
	"github.com/keystone-nix/keystone/vm"
)

// startSecond brings web2 up while web1 is busy, with UEFI enforcing
// Secure Boot (Microsoft's keys enrolled), one vCPU (the other core is
// web1's) and no TPM, through a crash: its first QEMU is killed at once,
// status must say crashed, and vm up cleans up and starts it again.
// vmSecond waits for it.
func startSecond(t *testing.T, dir string, img *testhost.VMImage) <-chan error {
	t.Cleanup(func() { vm.Down(context.Background(), dir, "web2", 5*time.Second, nil) })
	done := make(chan error, 1)
	go func() { done <- crashAndRecover(t, dir, img) }()
	return done
}

func crashAndRecover(t *testing.T, dir string, img *testhost.VMImage) error {
	on := true
	first, err := vm.Up(context.Background(), vm.Options{Dir: dir, Name: "web2", Image: img.Disk, Memory: "1G", CPUs: 1, SecureBoot: &on, Wait: -1})
	if err != nil {
		return fmt.Errorf("vm up web2: %w", err)
	}
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		return err
	}
	for i := 0; ; i++ {
		if info, err := vm.Status(dir, "web2"); err == nil && info.Status == "crashed" {
			break
		} else if i == 100 {
			return fmt.Errorf("vm status of web2 after its QEMU was killed: %+v, %v; want crashed", info, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	code, out := keystoneVM(t, dir, "up", "web2", "--image", img.Disk, "--memory", "1G", "--cpus", "1", "--secure-boot")
	if code != 0 || !strings.Contains(out, "is gone; cleaning up") {
		return fmt.Errorf("vm up web2 after a crash: exit %d", code)
	}
	info, err := vm.Status(dir, "web2")
	if err != nil || info.Status != "running" || info.PID == first.PID || info.Port != first.Port || info.Firmware != "uefi+secure-boot" || info.TPM {
		return fmt.Errorf("web2 after recovery: %+v, %v; want running on port %d", info, err, first.Port)
	}
	return nil
}

// vmSecond checks web2 next to the running web1: both run at once, on
// ports of their own. Its firmware enforces Secure Boot, and its kernel,
// started through Debian's signed shim and GRUB, says so and locks itself
// down, so deploy refuses to kexec nixos-anywhere's installer there.
// enroll refuses, since there is no TPM2, and the tpm check says the
// password opens the volume at boot. vm down web2 leaves web1 running.
func vmSecond(t *testing.T, dir string, img *testhost.VMImage, web1 *testhost.VMGuest, up <-chan error) {
	if err := <-up; err != nil {
		t.Fatal(err)
	}
	code, out := keystoneVM(t, dir, "status", "--format", "json")
	var infos []vm.Info
	if err := json.Unmarshal([]byte(out), &infos); code != 0 || err != nil || len(infos) != 2 {
		t.Fatalf("vm status of two VMs: exit %d, %v", code, err)
	}
	if infos[0].Status != "running" || infos[1].Status != "running" || infos[0].Port == infos[1].Port || infos[1].TPM {
		t.Errorf("two VMs: %+v", infos)
	}
	web2 := infos[1]
	if web2.Name != "web2" {
		web2 = infos[0]
	}
	g := img.Guest(web2.Port)
	web1.MustRun(t, "true")

	if sb := verify.ParseSecureBoot(g.MustRun(t, verify.SecureBootScript)); !sb.On() || !sb.Enabled || sb.SetupMode {
		t.Errorf("Secure Boot of web2 (OVMF, Microsoft's keys enrolled): %s (%#v), want UEFI, SecureBoot=1, SetupMode=0", sb, sb)
	}
	if k := g.MustRun(t, "dmesg | grep -i 'secure boot'; cat /sys/kernel/security/lockdown"); !strings.Contains(k, "Secure boot enabled") ||
		!strings.Contains(k, "[integrity]") || web2.Firmware != "uefi+secure-boot" {
		t.Errorf("web2's kernel does not say Secure Boot is on and lock itself down, or vm status says firmware %s:\n%s", web2.Firmware, k)
	}
	if code, out := deployDryRun(t, g, "web2", []string{"/dev/disk/by-id/virtio-ks-web2"}); code != 3 ||
		!strings.Contains(out, "the target's kernel is in lockdown mode integrity (Secure Boot), which refuses to kexec an unsigned kernel") {
		t.Errorf("deploy to web2, locked down by Secure Boot: exit %d, want 3 saying so\n%s", code, out)
	}

	const password = "pw-web2-no-tpm"
	g.MustRun(t, "printf %s '"+password+"' | cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - "+spareDevice)
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte(password), 0o600)
	host, tpmCheck := spareVolumeHost(t, g, "web2")
	var log bytes.Buffer
	err := enroll.Run(context.Background(), host, enroll.Options{PasswordFile: pwFile}, &log)
	if exit.Code(err) != enroll.ExitRefused || !strings.Contains(fmt.Sprint(err), "the host has no TPM2, so it keeps asking for its disk password") ||
		!strings.Contains(hint.Of(err), "without --tpm") {
		t.Errorf("enroll without a TPM2: %v (exit %d)", err, exit.Code(err))
	}
	if r := tpmCheck(); r.Status != verify.Pass || !strings.Contains(r.Evidence, "no TPM2: password at boot") {
		t.Errorf("the tpm check without a TPM2: %+v", r)
	}

	if code, _ := keystoneVM(t, dir, "down", "web2"); code != 0 {
		t.Fatalf("vm down web2: exit %d", code)
	}
	if left := processesOf(filepath.Join(vm.StateDir(dir), "web2")); len(left) > 0 {
		t.Errorf("processes of web2 left after vm down:\n%s", strings.Join(left, "\n"))
	}
	web1.MustRun(t, "true")
}

// vmHotPlug: a disk without a serial, hot-plugged into web1 from the
// monitor, is listed by keystone disks next to the one with a serial, and
// deploy's pre-flight of a mirror over the two (the one with a serial by
// its by-id name, the hot-plugged one by its kernel name) plans the pool;
// the same disk under two names is refused, naming both, and nothing is
// changed. On web1, whose kernel, with Secure Boot off, would kexec.
func vmHotPlug(t *testing.T, dir string, img *testhost.VMImage, g *testhost.VMGuest) {
	// The second disk is as big as the first, so the two make a mirror.
	size := strings.TrimSpace(g.MustRun(t, "blockdev --getsize64 /dev/vda"))
	extra := filepath.Join(t.TempDir(), "extra.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", extra, size).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	for _, cmd := range []string{"drive_add 0 if=none,id=hpd,file=" + extra + ",format=qcow2",
		"device_add virtio-blk-pci,drive=hpd,id=hpv,bus=hp0"} {
		if answer, err := vm.Monitor(dir, "web1", cmd); err != nil || (answer != "" && answer != "OK") {
			t.Fatalf("monitor %q: %q, %v", cmd, answer, err)
		}
	}
	waitFor(t, time.Minute, "the hot-plugged disk in the guest", func() bool {
		_, err := g.Run(t, "test -b /dev/vdb")
		return err == nil
	})
	kh := filepath.Join(t.TempDir(), "known_hosts")
	code, out, stderr := keystone(t, "disks", "root@"+g.Address(), "-i", img.ClientKeyPath, "--known-hosts", kh, "--accept-new", "--format", "json")
	var disks []deploy.Disk
	if err := json.Unmarshal([]byte(out), &disks); code != 0 || err != nil {
		t.Fatalf("keystone disks in web1: exit %d, %v\n%s%s", code, err, out, stderr)
	}
	var serial, bare bool
	for _, d := range disks {
		switch {
		case d.Path == "/dev/disk/by-id/virtio-ks-web1" && d.Serial == "ks-web1" && d.Stable && d.System:
			serial = true
		case d.Path == "/dev/vdb" && d.Serial == "" && !d.Stable && d.Transport == "virtio" && strconv.FormatInt(d.Size, 10) == size:
			bare = true
		}
	}
	if !serial || !bare {
		t.Errorf("keystone disks in web1 lacks the disk with a serial (%v) or the one without (%v):\n%s", serial, bare, out)
	}

	// vmDeploy installed it: it runs "NixOS" from its disk.
	byID := "/dev/disk/by-id/virtio-ks-web1"
	before := g.MustRun(t, "lsblk -rno NAME,SIZE,FSTYPE,PARTLABEL")
	if code, out := deployDryRun(t, g, "web1", []string{byID, "/dev/vdb"}, "--reinstall"); code != 0 ||
		!strings.Contains(out, "WIPE       "+byID+" -> /dev/vda") || !strings.Contains(out, "WIPE       /dev/vdb -> /dev/vdb") ||
		!strings.Contains(out, `pool       rpool: mirror of 2 disks; the smallest disk`) {
		t.Errorf("deploy --dry-run of a mirror over web1's two disks: exit %d\n%s", code, out)
	}
	if code, out := deployDryRun(t, g, "web1", []string{byID, "/dev/vda"}, "--reinstall"); code != 3 ||
		!strings.Contains(out, "disks "+byID+" and /dev/vda are the same disk (/dev/vda)") {
		t.Errorf("deploy of one disk named twice: exit %d, want 3 naming both\n%s", code, out)
	}
	if after := g.MustRun(t, "lsblk -rno NAME,SIZE,FSTYPE,PARTLABEL"); after != before {
		t.Errorf("the pre-flight changed the disks:\n%s\nthen\n%s", before, after)
	}
}

// deployDryRun runs keystone deploy --dry-run with flags of a ZFS pool
// over disks of the VM, with a fresh flake (nothing pinned), and returns
// its exit code and what it printed.
func deployDryRun(t *testing.T, g *testhost.VMGuest, name string, disks []string, flags ...string) (int, string) {
	t.Helper()
	sizes := map[string][]string{}
	for _, d := range disks {
		sizes[d] = []string{"1M", "100M", "1G"} // the guest's image is under 2 GiB
	}
	vdev := "single"
	if len(disks) > 1 {
		vdev = "mirror"
	}
	cfg := filepath.Join(t.TempDir(), "keystone.json")
	data, _ := json.Marshal(map[string]any{"vm": true,
		"deploy": map[string]any{"targetHost": "127.0.0.1", "targetUser": "root", "sshPort": 22, "buildOn": "auto",
			"disks": disks, "partitionSizes": sizes, "diskSecret": false},
		"verify": map[string]any{"expectations": map[string]any{"hostname": name, "mounts": []string{"/"},
			"zfs": map[string]any{"pools": []string{"rpool"}, "encryptionRoots": []string{},
				"topology": map[string]any{"rpool": map[string]any{"vdev": vdev, "disks": len(disks)}}}}}})
	os.WriteFile(cfg, data, 0o644)
	args := append([]string{"deploy", name, "--target", "root@" + g.Address(), "--config", cfg,
		"--flake", t.TempDir(), "-i", g.Image.ClientKeyPath, "--dry-run", "--yes"}, flags...)
	// web2 has 1G: the kexec image without disko's tools fits.
	code, stdout, stderr := keystone(t, append(args, "--", "--no-disko-deps")...)
	return code, stdout + stderr
}
