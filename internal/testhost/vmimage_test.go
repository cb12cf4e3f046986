package testhost

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestVMImage checks the image's layout: a GPT with an ESP that boots
// Debian's signed shim from the removable path, GRUB beside it, the root
// and the spare partition. Booting it (with Secure Boot and without) is
// TestVMLifecycle's.
func TestVMImage(t *testing.T) {
	img := BuildVMImage(t)
	out, err := exec.Command("sgdisk", "-p", img.Disk).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk -p: %v\n%s", err, out)
	}
	for _, want := range []string{" EF00  ESP", " 8304  root", " 8300  spare"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("partition table lacks %q:\n%s", want, out)
		}
	}
	esp, err := exec.Command("mdir", "-b", "-i", img.Disk+"@@1M", "::/EFI/BOOT").CombinedOutput()
	if err != nil {
		t.Fatalf("mdir: %v\n%s", err, esp)
	}
	for _, want := range []string{"BOOTX64.EFI", "grubx64.efi", "grub.cfg"} {
		if !strings.Contains(string(esp), "::/EFI/BOOT/"+want) {
			t.Errorf("the ESP's EFI/BOOT lacks %s:\n%s", want, esp)
		}
	}
	for _, f := range []string{img.Kernel, img.Initrd} {
		if st, err := os.Stat(f); err != nil || st.Size() < 1<<20 {
			t.Errorf("%s: %v (size %v)", f, err, st)
		}
	}
	if img.ClientKey == nil || img.HostKey == nil {
		t.Fatal("no keys")
	}
}
