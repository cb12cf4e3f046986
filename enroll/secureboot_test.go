package enroll_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/enroll"
	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/target"
	"github.com/keystone-nix/keystone/internal/testhost"
)

// fakeFirmware puts EFI variables SecureBoot and SetupMode (efivarfs
// layout: 4 bytes of attributes, then the value) under a /sys/firmware of
// the host's own: a container shows this machine's, which may have no
// UEFI at all.
func fakeFirmware(t *testing.T, h *testhost.Host, secureBoot, setupMode int) {
	t.Helper()
	const guid = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
	script := fmt.Sprintf(`set -e
mountpoint -q /sys/firmware && umount /sys/firmware
d=$(mktemp -d /run/firmware.XXXXXX); mkdir -p $d/efi/efivars
printf '\006\000\000\000\%03o' > $d/efi/efivars/SecureBoot-%s
printf '\006\000\000\000\%03o' > $d/efi/efivars/SetupMode-%s
mount --bind $d /sys/firmware`, secureBoot, guid, setupMode, guid)
	if out, err := h.Run(t, "sh", "-c", script); err != nil {
		t.Fatalf("faking the firmware: %v %s", err, out)
	}
}

// TestEnrollSecureBoot: enroll reads the Secure Boot state, shows it in the
// plan, and refuses a policy that measures nothing of the boot chain (PCR
// 7 alone) unless Secure Boot is enforced or --accept-unverified-boot says
// the user knows what the TPM2 then protects. Dry runs: the refusals are
// before any change, and the plan is what differs.
func TestEnrollSecureBoot(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.Debian(t, testhost.DebianOptions{Hostname: "ks-sb", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()},
		ExtraPackages: []string{"cryptsetup-bin", "swtpm", "tpm2-tools", "libtss2-tcti-swtpm0"}})
	disk := testhost.AttachDisk(t, h, 64<<20)
	if out, err := h.Run(t, "sh", "-c", "printf %s '"+password+"' | cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - "+disk); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	expect, _ := json.Marshal(map[string]any{"hostname": h.Name, "luks": map[string]any{"devices": []string{},
		"volumes": []map[string]any{{"name": "credstore", "device": disk, "tpm2": true}}}})
	host := &fleet.Host{Name: "web1", Target: target.Target{User: "root", Host: h.Addr, Port: h.Port}, Expectations: expect,
		Identities: []string{key}, HostKeys: sshx.HostKeys{Pinned: h.HostKey, PinnedFrom: "test"}}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte(password), 0o600)
	const refused = "measure nothing of the boot chain: the TPM2 would unseal the key for a kernel or initrd swapped on the unencrypted ESP (it protects a removed disk, not a tampered boot); nothing was changed"
	for _, tc := range []struct {
		name       string
		firmware   []int // SecureBoot, SetupMode; nil: no UEFI
		pcrs       string
		accept     bool
		err, plans string
	}{
		{"no UEFI", nil, "7", false, "Secure Boot is unavailable (a legacy BIOS boot, no UEFI), so PCRs 7 " + refused, ""},
		{"no UEFI, accepted", nil, "7", true, "", "secure boot unavailable (a legacy BIOS boot, no UEFI): PCRs 7 measure nothing of the boot chain; as --accept-unverified-boot says, the TPM2 protects a removed disk, not a tampered boot"},
		{"no UEFI, boot-chain PCRs", nil, "4+7", false, "", "PCRs 4+7 measure the boot chain themselves; every kernel or boot loader update needs keystone enroll --force"},
		{"off", []int{0, 0}, "7", false, "Secure Boot is off, so PCRs 7 " + refused, ""},
		{"off, firmware PCRs only", []int{0, 0}, "0+2+7", false, "Secure Boot is off, so PCRs 0+2+7 " + refused, ""},
		{"setup mode", []int{1, 1}, "7", false, "Secure Boot is setup mode (no platform key): nothing enforced, so PCRs 7 " + refused, ""},
		{"on", []int{1, 0}, "7", false, "", "secure boot on: PCR 7 binds the key to the Secure Boot keys that check the boot chain"},
	} {
		if tc.firmware != nil {
			fakeFirmware(t, h, tc.firmware[0], tc.firmware[1])
		}
		var out bytes.Buffer
		err := enroll.Run(context.Background(), host, enroll.Options{TPM2Device: "swtpm:host=127.0.0.1,port=2321", PasswordFile: pw,
			PCRs: tc.pcrs, DryRun: true, AcceptUnverifiedBoot: tc.accept}, &out)
		switch {
		case tc.err != "" && (exit.Code(err) != enroll.ExitRefused || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v (exit %d), want refused: %s", tc.name, err, exit.Code(err), tc.err)
		case tc.err == "" && (err != nil || !strings.Contains(out.String(), tc.plans)):
			t.Errorf("%s: %v\n%s\nwant the plan to say %q", tc.name, err, out.String(), tc.plans)
		}
	}
}
