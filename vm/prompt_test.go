package vm

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keystone-nix/keystone/internal/hint"
)

// What a console shows, from the firmware on (OVMF's boot manager lines,
// the kernel, systemd), as QEMU's console log records it.
const (
	boot        = "BdsDxe: loading Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x3,0x0)\r\nBdsDxe: starting Boot0001\r\n"
	diskPrompt  = "Please enter passphrase for disk credstore (credstore): (press TAB for no echo) "
	loggedIn    = "\r\n<<< Welcome to NixOS 25.11 (x86_64) - ttyS0 >>>\r\n\r\nweb1 login: root\r\nPassword: \r\n[root@web1:~]# "
	rebooted    = "\r\n[  120.4] reboot: Restarting system\r\n"
	answered    = diskPrompt + "\r\n[  OK  ] Finished Cryptography Setup for credstore.\r\n\r\nDebian GNU/Linux 12 ksvm ttyS0\r\n\r\nksvm login: "
	sudoPrompt  = "sudo -i\r\n[sudo] password for alice: "
	sshAddAsks  = "ssh-add\r\nEnter passphrase for /root/.ssh/id_ed25519: "
	byHandAsked = "cryptsetup open /dev/vdb spare\r\nEnter passphrase for /dev/vdb: "
	// The kernel prints its messages whatever waits on the console (these
	// two are from the console of this repository's Debian test guest).
	kernelSays = "[  143.171657] platform regulatory.0: firmware: failed to load regulatory.db (-2)\r\n" +
		"[  143.172816] firmware_class: See https://wiki.debian.org/Firmware for information about missing firmware\r\n"
)

// vm down skips the ACPI power-off only at the boot's own unanswered disk
// password prompt (systemd-cryptsetup's, no login since the boot began):
// at any other prompt a running system has file systems to lose.
func TestDownQuitsOnlyAtTheBootsDiskPrompt(t *testing.T) {
	for _, tc := range []struct {
		name, log string
		quit      bool // quit at once, no power-off first
	}{
		{"boot's disk prompt", boot + "[    2.1] systemd[1]: Started.\r\n" + diskPrompt, true},
		{"boot's disk prompt, then the kernel", boot + diskPrompt + kernelSays, true},
		{"disk prompt of a later boot", boot + loggedIn + "systemctl reboot\r\n" + rebooted + boot + diskPrompt, true},
		{"disk prompt of a reset boot", boot + loggedIn + boot + diskPrompt, true},
		{"sudo on the serial console", boot + loggedIn + sudoPrompt, false},
		{"ssh-add on the serial console", boot + loggedIn + sshAddAsks, false},
		{"cryptsetup by hand", boot + loggedIn + byHandAsked, false},
		{"systemd-cryptsetup by hand after a login", boot + loggedIn + "systemd-cryptsetup attach spare /dev/vdb\r\n" + diskPrompt, false},
		{"answered", boot + answered, false},
		{"running", boot + loggedIn, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := shortDir(t)
			f := startFake(t, dir, "web1", tc.log)
			f.powerOff = true
			var out strings.Builder
			if err := Down(context.Background(), dir, "web1", 10*time.Second, &out); err != nil {
				t.Fatal(err)
			}
			cmds := f.Commands()
			powered := slices.Contains(cmds, "system_powerdown")
			if tc.quit && (powered || !slices.Contains(cmds, "quit")) || !tc.quit && !powered {
				t.Errorf("monitor commands %q (%s); want quit at once: %v", cmds, strings.TrimSpace(out.String()), tc.quit)
			}
		})
	}
}

// vm unlock types only into a disk password prompt nothing has answered;
// a prompt answered in vm console, or another program's, gets nothing.
func TestUnlockTypesOnlyAtAnOpenDiskPrompt(t *testing.T) {
	defer func(d time.Duration) { AcceptWait = d }(AcceptWait)
	AcceptWait = time.Second
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("S3cretPW-xyz"), 0o600)
	for _, tc := range []struct {
		name, log string
		typed     string // "": nothing
	}{
		{"open", boot + diskPrompt, "\tS3cretPW-xyz\r"},
		{"open, then the kernel", boot + diskPrompt + kernelSays, "\tS3cretPW-xyz\r"},
		{"answered in vm console", boot + answered, ""},
		{"sudo", boot + loggedIn + sudoPrompt, ""},
		{"ssh-add", boot + loggedIn + sshAddAsks, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := shortDir(t)
			f := startFake(t, dir, "web1", tc.log)
			var out strings.Builder
			err := Unlock(context.Background(), UnlockOptions{Dir: dir, Name: "web1", PasswordFile: pw, Timeout: 2 * time.Second, Out: &out})
			time.Sleep(100 * time.Millisecond) // the fake reads what was typed
			if got := f.Typed(); got != tc.typed {
				t.Errorf("typed %q, want %q (err %v)", got, tc.typed, err)
			}
			if tc.typed == "" && (err == nil || !strings.Contains(err.Error(), "no pending disk password prompt") && !strings.Contains(err.Error(), "no disk password prompt")) {
				t.Errorf("Unlock: %v; want no pending prompt", err)
			}
			if tc.typed != "" && err != nil {
				t.Errorf("Unlock at an open prompt: %v", err)
			}
			if tc.name == "answered in vm console" && err != nil && !strings.Contains(err.Error(), "the last one was answered") {
				t.Errorf("Unlock: %v; want it to say the prompt was answered", err)
			}
		})
	}
}

// While vm console holds the serial console (QEMU serves one client), vm
// unlock and a second vm console fail instead of talking into the listen
// queue, where nothing reaches the guest.
func TestConsoleHeldElsewhere(t *testing.T) {
	defer func(d time.Duration) { AcceptWait = d }(AcceptWait)
	AcceptWait = time.Second
	dir := shortDir(t)
	f := startFake(t, dir, "web1", boot+diskPrompt)
	f.hold(t)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("S3cretPW-xyz"), 0o600)
	err := Unlock(context.Background(), UnlockOptions{Dir: dir, Name: "web1", PasswordFile: pw, Timeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "in use") || !strings.Contains(hint.Of(err), "Ctrl-]") {
		t.Errorf("vm unlock while the console is held: %v", err)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() { time.Sleep(3 * time.Second); w.Close() }()
	var out strings.Builder
	err = Console(context.Background(), dir, "web1", r, &out)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second vm console: %v, printed %q", err, out.String())
	}
}
