package enroll_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/enroll"
	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/target"
	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/verify"
)

const password = "correct horse battery"

// TestEnroll enrolls for real: systemd-cryptenroll in a Debian host, on a
// LUKS2 volume on a block device, against a swtpm TPM2 that the host runs
// and reaches through the tss2 swtpm TCTI (this kernel has no vTPM for a
// /dev/tpmrm0; a VM test host has one). The host itself has no TPM2 in
// /sys/class/tpm, which is the other half: enroll refuses and says why.
func TestEnroll(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.Debian(t, testhost.DebianOptions{Hostname: "ks-enroll", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()},
		ExtraPackages: []string{"cryptsetup-bin", "swtpm", "tpm2-tools", "libtss2-tcti-swtpm0"}})
	disk := testhost.AttachDisk(t, h, 64<<20)
	fakeFirmware(t, h, 1, 0) // Secure Boot on: PCR 7 alone is fine (TestEnrollSecureBoot)
	run := func(args ...string) string {
		t.Helper()
		out, err := h.Run(t, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	run("sh", "-c", "umask 077; printf %s '"+password+"' > /root/pw && cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /root/pw "+disk+" && rm /root/pw")
	run("sh", "-c", "mkdir -p /run/swtpm && swtpm socket --tpm2 --tpmstate dir=/run/swtpm --server type=tcp,port=2321,bindaddr=127.0.0.1 --ctrl type=tcp,port=2322,bindaddr=127.0.0.1 --flags startup-clear --daemon")
	unlock := func() verify.LUKSUnlock {
		t.Helper()
		u, err := verify.ParseLuksDumpJSON([]byte(run("cryptsetup", "luksDump", "--dump-json-metadata", disk)))
		if err != nil {
			t.Fatal(err)
		}
		return u
	}

	expect, _ := json.Marshal(map[string]any{"hostname": h.Name, "luks": map[string]any{"devices": []string{},
		"volumes": []map[string]any{{"name": "credstore", "device": disk, "tpm2": true}}}})
	host := &fleet.Host{Name: "web1", Target: target.Target{User: "root", Host: h.Addr, Port: h.Port}, Expectations: expect,
		Identities: []string{key}, HostKeys: sshx.HostKeys{Pinned: h.HostKey, PinnedFrom: "test"}}
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte(password), 0o600)
	swtpm := "swtpm:host=127.0.0.1,port=2321"
	enrollWith := func(o enroll.Options) (string, error) {
		var out bytes.Buffer
		err := enroll.Run(context.Background(), host, o, &out)
		if strings.Contains(out.String(), password) || (err != nil && strings.Contains(err.Error(), password)) {
			t.Errorf("the password is in the output:\n%s%v", out.String(), err)
		}
		return out.String(), err
	}

	// The host's own /sys/class/tpm has none: refused, nothing changed.
	_, err := enrollWith(enroll.Options{PasswordFile: pw})
	if exit.Code(err) != enroll.ExitRefused || !strings.Contains(err.Error(), "the host has no TPM2, so it keeps asking for its disk password") {
		t.Errorf("no TPM2: %v (exit %d)", err, exit.Code(err))
	}

	// A dry run shows the plan and changes nothing.
	out, err := enrollWith(enroll.Options{TPM2Device: swtpm, PasswordFile: pw, DryRun: true})
	if err != nil || !strings.Contains(out, "enroll     credstore ("+disk+"): TPM2 bound to PCRs 7; the password (keyslot 0) stays") ||
		!strings.Contains(out, "dry run: nothing was changed") || len(unlock().TPM2) != 0 {
		t.Errorf("dry run: %v\n%s", err, out)
	}

	// The enrollment, with a recovery key.
	recovery := filepath.Join(dir, "web1.recovery")
	out, err = enrollWith(enroll.Options{TPM2Device: swtpm, PasswordFile: pw, PCRs: "0+7", RecoveryKeyFile: recovery})
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	u := unlock()
	if len(u.TPM2) != 1 || !slicesEqual(u.TPM2[0].PCRs, []int{0, 7}) || !slicesEqual(u.Passwords, []string{"0"}) || len(u.Recovery) != 1 {
		t.Errorf("after enroll: %+v\n%s", u, out)
	}
	first, firstBlob := u.TPM2[0].Keyslots, u.TPM2[0].Blob
	data, _ := os.ReadFile(recovery)
	st, _ := os.Stat(recovery)
	if !regexp.MustCompile(`^credstore [cbdefghijklnrtuv]{8}(-[cbdefghijklnrtuv]{8}){7}\n$`).Match(data) || st.Mode().Perm() != 0o600 {
		t.Errorf("recovery key file %q, mode %v", data, st.Mode())
	}
	if strings.Contains(out, strings.TrimSpace(strings.TrimPrefix(string(data), "credstore "))) {
		t.Error("the recovery key is in the output")
	}
	// Nothing of the password stays on the host: no file on /run, nothing
	// in the journal.
	if left := run("sh", "-c", "ls /run | grep keystone-enroll; true"); left != "" {
		t.Errorf("left on the host: %s", left)
	}
	if j := run("journalctl", "--no-pager", "-o", "cat"); strings.Contains(j, password) {
		t.Error("the password is in the host's journal")
	}

	// Again without --force: refused, the slot stays.
	_, err = enrollWith(enroll.Options{TPM2Device: swtpm, PasswordFile: pw})
	if exit.Code(err) != enroll.ExitRefused || !strings.Contains(err.Error(), "credstore already has a TPM2 slot (keyslot "+first[0]+", PCRs 0+7)") {
		t.Errorf("second enroll: %v (exit %d)", err, exit.Code(err))
	}
	// With --force the slot is replaced; the password and the recovery key stay.
	out, err = enrollWith(enroll.Options{TPM2Device: swtpm, PasswordFile: pw, Force: true})
	u = unlock()
	if err != nil || len(u.TPM2) != 1 || !slicesEqual(u.TPM2[0].PCRs, []int{7}) || u.TPM2[0].Blob == firstBlob ||
		!slicesEqual(u.Passwords, []string{"0"}) || len(u.Recovery) != 1 {
		t.Errorf("--force: %v, %+v\n%s", err, u, out)
	}
	// Again, the PCRs unchanged: systemd-cryptenroll alone would keep the
	// old slot of the same policy and do nothing; keystone replaces it.
	blob := u.TPM2[0].Blob
	// Nothing between the tools and swtpm here flushes what a process
	// leaves loaded, as the kernel's resource manager (/dev/tpmrm0) does.
	run("tpm2_flushcontext", "-T", swtpm, "--loaded-session")
	run("tpm2_flushcontext", "-T", swtpm, "--transient-object")
	out, err = enrollWith(enroll.Options{TPM2Device: swtpm, PasswordFile: pw, Force: true})
	if u = unlock(); err != nil || len(u.TPM2) != 1 || u.TPM2[0].Blob == blob || !slicesEqual(u.Passwords, []string{"0"}) {
		t.Errorf("--force, same PCRs: %v, %+v\n%s", err, u, out)
	}

	// A wrong password: systemd-cryptenroll refuses, exit 4.
	os.WriteFile(pw, []byte("wrong"), 0o600)
	blob = unlock().TPM2[0].Blob
	if _, err = enrollWith(enroll.Options{TPM2Device: swtpm, PasswordFile: pw, Force: true}); exit.Code(err) != enroll.ExitEnroll ||
		!strings.Contains(err.Error(), "the password does not open "+disk+" (") {
		t.Errorf("wrong password: %v (exit %d)", err, exit.Code(err))
	}
	// Checked before the old slot went: the TPM2 still opens it.
	if u = unlock(); len(u.TPM2) != 1 || u.TPM2[0].Blob != blob {
		t.Errorf("a wrong password with --force changed the TPM2 slot: %+v", u)
	}
	// A recovery key file that exists is never written over.
	if _, err = enrollWith(enroll.Options{TPM2Device: swtpm, PasswordFile: pw, Force: true, RecoveryKeyFile: recovery}); exit.Code(err) != enroll.ExitRefused {
		t.Errorf("existing recovery key file: %v", err)
	}
	if again, _ := os.ReadFile(recovery); !bytes.Equal(again, data) {
		t.Error("the recovery key file was changed")
	}
}

func slicesEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRefusals: what is wrong before any connection (the target answers
// nothing).
func TestRefusals(t *testing.T) {
	nowhere := target.Target{User: "root", Host: "192.0.2.1", Port: 22}
	noTPM := []byte(`{"hostname": "web1", "luks": {"devices": ["crypted"], "volumes": [{"name": "crypted", "device": "/dev/vda2", "tpm2": false}]}}`)
	tpm := []byte(`{"hostname": "web1", "luks": {"devices": [], "volumes": [{"name": "credstore", "device": "/dev/zvol/rpool/credstore", "tpm2": true}]}}`)
	for _, tc := range []struct {
		name   string
		expect []byte
		o      enroll.Options
		code   int
		says   string
	}{
		{"no TPM2 volume", noTPM, enroll.Options{}, enroll.ExitRefused, "marks no LUKS volume for a TPM2"},
		{"no password", tpm, enroll.Options{}, enroll.ExitRefused, "needs the disk password"},
		{"bad PCRs", tpm, enroll.Options{PCRs: "7;reboot"}, exit.Usage, "PCRs are numbers from 0 to 23"},
		{"PCR 24", tpm, enroll.Options{PCRs: "24"}, exit.Usage, "PCRs are numbers from 0 to 23"},
		{"PCR 15", tpm, enroll.Options{PCRs: "7+15"}, exit.Usage, "PCR 15 is extended once the credstore is unlocked"},
		{"missing password file", tpm, enroll.Options{PasswordFile: "/nonexistent"}, enroll.ExitRefused, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &fleet.Host{Name: "web1", Target: nowhere, Expectations: tc.expect}
			err := enroll.Run(context.Background(), h, tc.o, &bytes.Buffer{})
			if exit.Code(err) != tc.code || err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("%v (exit %d), want exit %d and %q", err, exit.Code(err), tc.code, tc.says)
			}
		})
	}
}
