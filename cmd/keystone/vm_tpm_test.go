package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/enroll"
	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/target"
	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/verify"
)

// vmDisksAndTPM runs, in a booted VM with a TPM2 (swtpm) and a LUKS2
// volume on its spare partition, what needs a real machine: keystone
// disks sees the virtio disk by its serial; keystone enroll binds the
// volume to the TPM2, which then opens it without the password, and the
// guest's process list never shows the password; with Secure Boot off
// (OVMF without enrolled keys) enroll refuses PCR 7 alone unless
// --accept-unverified-boot, and verify's tpm check WARNs that it binds
// nothing of the boot chain; a second enroll is refused; once PCR 7 is
// extended (a firmware update) the TPM2 no longer opens it, the password
// still does, and verify's tpm check says so; and enroll --force replaces
// the TPM2 slot, keeps the password slot, and the TPM2 opens the volume
// again.
func vmDisksAndTPM(t *testing.T, g *testhost.VMGuest, port int, password, pwFile string) {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	code, out, stderr := keystone(t, "disks", "root@"+addr, "-i", g.Image.ClientKeyPath, "--known-hosts", kh, "--accept-new", "--format", "json")
	var disks []struct {
		Path, Serial, Transport string
		Stable                  bool
	}
	if err := json.Unmarshal([]byte(out), &disks); code != 0 || err != nil || len(disks) == 0 ||
		disks[0].Path != "/dev/disk/by-id/virtio-ks-web1" || disks[0].Serial != "ks-web1" || !disks[0].Stable {
		t.Errorf("keystone disks in the VM: exit %d, %v\n%s%s", code, err, out, stderr)
	}

	host, tpmCheck := spareVolumeHost(t, g, "web1")
	if r := tpmCheck(); r.Status != verify.Warn || !strings.Contains(r.Evidence, "password only: asks at boot; run keystone enroll") {
		t.Errorf("before enrolling: %+v", r)
	}

	// OVMF without enrolled keys: UEFI, Secure Boot off (no platform key:
	// setup mode), so PCR 7 alone binds nothing of the boot chain: refused,
	// unless accepted by name. (A legacy BIOS boot is enroll's and verify's
	// unit tests'.)
	if sb := verify.ParseSecureBoot(g.MustRun(t, verify.SecureBootScript)); !sb.UEFI || sb.Enabled || !sb.SetupMode {
		t.Errorf("Secure Boot of web1 (OVMF, no keys enrolled): %s (%#v), want UEFI, SecureBoot=0, SetupMode=1", sb, sb)
	}
	var log bytes.Buffer
	if err := enroll.Run(context.Background(), host, enroll.Options{PasswordFile: pwFile}, &log); exit.Code(err) != enroll.ExitRefused ||
		!strings.Contains(err.Error(), "Secure Boot is off, setup mode, so PCRs 7 measure nothing of the boot chain") {
		t.Errorf("enroll of PCR 7 without Secure Boot: %v", err)
	}

	// The guest's process list, sampled every 20 ms while enroll runs.
	g.MustRun(t, "setsid sh -c 'echo $$ >/run/ps.pid; while :; do ps -eww -o args; sleep 0.02; done >/run/ps.log 2>&1' </dev/null >/dev/null 2>&1 &")
	err := enroll.Run(context.Background(), host, enroll.Options{PasswordFile: pwFile, AcceptUnverifiedBoot: true}, &log)
	ps := g.MustRun(t, "kill $(cat /run/ps.pid) && cat /run/ps.log && rm /run/ps.log /run/ps.pid")
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "secure boot off, setup mode: PCRs 7 measure nothing of the boot chain; as --accept-unverified-boot says") {
		t.Errorf("enroll's plan does not say what --accept-unverified-boot accepted:\n%s", log.String())
	}
	if !strings.Contains(ps, "systemd-cryptenroll --unlock-key-file=/run/keystone-enroll.") {
		t.Errorf("the process list sampled during enroll never shows systemd-cryptenroll:\n%s", ps)
	}
	if strings.Contains(ps, password) {
		t.Error("the password is in the guest's process list during enroll")
	}
	if strings.Contains(log.String(), password) {
		t.Errorf("enroll's output holds the password:\n%s", log.String())
	}
	g.MustRun(t, "cryptsetup open --test-passphrase --token-only --token-type systemd-tpm2 "+spareDevice+" </dev/null")
	if r := tpmCheck(); r.Status != verify.Warn || !strings.Contains(r.Evidence, "spare: TPM2 (PCRs 7) + password, but Secure Boot is off, setup mode: (PCRs 7) binds nothing of the boot chain") {
		t.Errorf("after enrolling, without Secure Boot: %+v", r)
	}
	if j := g.MustRun(t, "journalctl --no-pager -o cat; cat /root/.bash_history 2>/dev/null; true"); strings.Contains(j, password) {
		t.Error("the password is in the guest's journal or shell history")
	}
	err = enroll.Run(context.Background(), host, enroll.Options{PasswordFile: pwFile, AcceptUnverifiedBoot: true}, &log)
	if exit.Code(err) != enroll.ExitRefused || !strings.Contains(err.Error(), "already has a TPM2 slot") {
		t.Errorf("a second enroll: %v", err)
	}
	// --force replaces the TPM2 slot; the password slot stays.
	unlocks := func() verify.LUKSUnlock {
		u, err := verify.ParseLuksDumpJSON([]byte(g.MustRun(t, "cryptsetup luksDump --dump-json-metadata "+spareDevice)))
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	// --force replaces the slot (enroll_test also checks it with the PCRs
	// as they are, where systemd-cryptenroll alone would do nothing).
	force := func(what string) {
		t.Helper()
		before := unlocks()
		if err := enroll.Run(context.Background(), host, enroll.Options{PasswordFile: pwFile, Force: true, AcceptUnverifiedBoot: true}, &log); err != nil {
			t.Errorf("enroll --force %s: %v", what, err)
		}
		after := unlocks()
		if len(after.TPM2) != 1 || len(before.TPM2) != 1 || after.TPM2[0].Blob == before.TPM2[0].Blob ||
			!slices.Equal(after.Passwords, before.Passwords) || len(after.Passwords) != 1 {
			t.Errorf("enroll --force %s: before %+v, after %+v; want the TPM2 slot replaced and the password slot kept", what, before, after)
		}
	}
	g.MustRun(t, "printf %s '"+password+"' | cryptsetup open --test-passphrase --key-file - "+spareDevice)
	if strings.Contains(log.String(), password) {
		t.Errorf("enroll's output holds the password:\n%s", log.String())
	}

	// What a firmware update does to a PCR 7 policy.
	g.MustRun(t, "tpm2_pcrextend 7:sha256=0000000000000000000000000000000000000000000000000000000000000001")
	if _, err := g.Run(t, "cryptsetup open --test-passphrase --token-only --token-type systemd-tpm2 "+spareDevice+" </dev/null"); err == nil {
		t.Error("the TPM2 still opens the volume after PCR 7 changed")
	}
	g.MustRun(t, "printf %s '"+password+"' | cryptsetup open --test-passphrase --key-file - "+spareDevice)
	if r := tpmCheck(); r.Status != verify.Warn || !strings.Contains(r.Evidence, "the TPM2 does not open it now: the PCRs changed") {
		t.Errorf("after PCR 7 changed: %+v", r)
	}
	// Enrolled again, as after a firmware update: the TPM2 opens it again.
	force("after PCR 7 changed")
	g.MustRun(t, "cryptsetup open --test-passphrase --token-only --token-type systemd-tpm2 "+spareDevice+" </dev/null")
	if r := tpmCheck(); r.Status != verify.Warn || !strings.Contains(r.Evidence, "binds nothing of the boot chain") {
		t.Errorf("enrolled again after PCR 7 changed: %+v", r)
	}
	if strings.Contains(log.String(), password) {
		t.Errorf("enroll's output holds the password:\n%s", log.String())
	}
}

const spareDevice = "/dev/disk/by-partlabel/spare"

// spareVolumeHost is the VM as enroll and verify see it when its config
// marks a LUKS volume on the spare partition for the TPM2, and a function
// that runs verify's tpm check against it.
func spareVolumeHost(t *testing.T, g *testhost.VMGuest, name string) (*fleet.Host, func() verify.Result) {
	expect, _ := json.Marshal(map[string]any{"hostname": testhost.VMHostname, "luks": map[string]any{"devices": []string{},
		"volumes": []map[string]any{{"name": "spare", "device": spareDevice, "tpm2": true}}}})
	host := &fleet.Host{Name: name, Target: target.Target{User: "root", Host: "127.0.0.1", Port: g.Port},
		Expectations: expect, Identities: []string{g.Image.ClientKeyPath},
		HostKeys: sshx.HostKeys{Pinned: g.HostKey, PinnedFrom: "test"}}
	return host, func() verify.Result {
		t.Helper()
		e, _ := verify.ParseExpectations(expect)
		only, _ := verify.Select("tpm", "")
		r := verify.Run(context.Background(), e, verify.Options{Name: name, SSH: host.SSH(), Checks: only})
		for _, res := range r.Results {
			if res.Check == "tpm" {
				return res
			}
		}
		t.Fatalf("no tpm result: %+v", r)
		return verify.Result{}
	}
}
