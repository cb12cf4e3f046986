package enroll_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/enroll"
	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/target"
	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/verify"
)

const (
	password      = "correct horse battery"
	otherPassword = "another volume password"
)

// TestEnroll enrolls for real: systemd-cryptenroll in a Debian host, on a
// LUKS2 volume on a block device, against a swtpm TPM2 that the host runs
// and reaches through the tss2 swtpm TCTI (this kernel has no vTPM for a
// /dev/tpmrm0; a VM test host has one). The host itself has no TPM2 in
// /sys/class/tpm, which is the other half: enroll refuses and says why.
func TestEnroll(t *testing.T) {
	th := newEnrollHost(t, password)
	disk, run, unlock, enrollWith, swtpm := th.disks[0], th.run, th.unlock(th.disks[0]), th.enroll, th.swtpm
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte(password), 0o600)

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

	// A wrong password: refused before anything changes, exit 3.
	os.WriteFile(pw, []byte("wrong"), 0o600)
	blob = unlock().TPM2[0].Blob
	if _, err = enrollWith(enroll.Options{TPM2Device: swtpm, PasswordFile: pw, Force: true}); exit.Code(err) != enroll.ExitRefused ||
		!strings.Contains(err.Error(), "the password does not open "+disk+" (") || !strings.Contains(err.Error(), "nothing was changed") {
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

	// A second recovery key replaces the first, with --force only: the
	// volume never holds two.
	os.WriteFile(pw, []byte(password), 0o600)
	old := unlock().Recovery
	recovery2 := filepath.Join(dir, "web1.recovery2")
	if _, err = enrollWith(enroll.Options{TPM2Device: swtpm, PasswordFile: pw, Force: true, DryRun: true, RecoveryKeyFile: recovery2}); err != nil {
		t.Fatal(err)
	}
	if _, err = enrollWith(enroll.Options{TPM2Device: swtpm, PasswordFile: pw, RecoveryKeyFile: recovery2}); exit.Code(err) != enroll.ExitRefused {
		t.Errorf("a second recovery key without --force: %v", err)
	}
	out, err = enrollWith(enroll.Options{TPM2Device: swtpm, PasswordFile: pw, Force: true, RecoveryKeyFile: recovery2})
	u = unlock()
	if err != nil || len(u.Recovery) != 1 || slicesEqual(u.Recovery, old) || !strings.Contains(out, "replaces its recovery key (keyslot "+old[0]+", which then no longer opens it)") {
		t.Errorf("--force --recovery-key-file: %v, %+v (was %v)\n%s", err, u, old, out)
	}
	data2, _ := os.ReadFile(recovery2)
	key1 := strings.Fields(string(data))[1]
	key2 := strings.Fields(string(data2))[1]
	if run("sh", "-c", "printf %s "+key1+" | cryptsetup open --test-passphrase --key-file=- "+disk+" && echo opens; true") != "" {
		t.Error("the replaced recovery key still opens the volume")
	}
	if run("sh", "-c", "printf %s "+key2+" | cryptsetup open --test-passphrase --key-file=- "+disk+" && echo opens; true") == "" {
		t.Error("the new recovery key does not open the volume")
	}
}

// TestEnrollSeveralVolumes: every volume's password is tried before any
// is changed, and a failure half-way keeps the recovery keys already
// enrolled and says which volumes were changed.
func TestEnrollSeveralVolumes(t *testing.T) {
	th := newEnrollHost(t, password, otherPassword)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte(password), 0o600)
	first, second := th.unlock(th.disks[0]), th.unlock(th.disks[1])

	// The password opens the first volume and not the second: refused,
	// nothing changed on either, no recovery key file left.
	recovery := filepath.Join(dir, "web1.recovery")
	out, err := th.enroll(enroll.Options{TPM2Device: th.swtpm, PasswordFile: pw, RecoveryKeyFile: recovery})
	if exit.Code(err) != enroll.ExitRefused || !strings.Contains(err.Error(), "vol2: the password does not open "+th.disks[1]) ||
		!strings.Contains(err.Error(), "nothing was changed") {
		t.Errorf("a password for one volume only: %v (exit %d)\n%s", err, exit.Code(err), out)
	}
	for i, u := range []verify.LUKSUnlock{first(), second()} {
		if len(u.TPM2) != 0 || len(u.Recovery) != 0 || len(u.Keyslots) != 1 {
			t.Errorf("volume %d changed: %+v", i+1, u)
		}
	}
	if _, err := os.Stat(recovery); !os.IsNotExist(err) {
		t.Errorf("the recovery key file is there: %v", err)
	}

	// Both made anew with the same password; the second has room for no
	// more keyslots (its keyslots area holds one), so systemd-cryptenroll
	// fails there after the first volume was enrolled.
	format := "umask 077; printf %s '" + password + "' > /root/pw && cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /root/pw"
	th.run("sh", "-c", format+" "+th.disks[0]+" && "+format+" --luks2-keyslots-size 256k "+th.disks[1]+" && rm /root/pw")
	os.Remove(recovery)
	// What the first try left loaded in the TPM2 (no resource manager
	// flushes it here, see TestEnroll).
	th.run("tpm2_flushcontext", "-T", th.swtpm, "--loaded-session")
	th.run("tpm2_flushcontext", "-T", th.swtpm, "--transient-object")
	out, err = th.enroll(enroll.Options{TPM2Device: th.swtpm, PasswordFile: pw, RecoveryKeyFile: recovery})
	if exit.Code(err) != enroll.ExitEnroll || !strings.Contains(err.Error(), "vol2: systemd-cryptenroll: ") ||
		!strings.Contains(err.Error(), "changed before this failure: credstore enrolled for the TPM2, its recovery key in "+recovery) {
		t.Errorf("a failure on the second volume: %v (exit %d)\n%s", err, exit.Code(err), out)
	}
	u := first()
	data, _ := os.ReadFile(recovery)
	if len(u.TPM2) != 1 || len(u.Recovery) != 1 || !regexp.MustCompile(`^credstore [cbdefghijklnrtuv]{8}(-[cbdefghijklnrtuv]{8}){7}\n$`).Match(data) {
		t.Fatalf("after the failure: credstore %+v, recovery key file %q", u, data)
	}
	key := strings.Fields(string(data))[1]
	if th.run("sh", "-c", "printf %s "+key+" | cryptsetup open --test-passphrase --key-file=- "+th.disks[0]+" && echo opens; true") == "" {
		t.Error("the recovery key in the file does not open credstore")
	}
}

// enrollHost is a Debian test host with a swtpm TPM2 and one LUKS2 volume
// on a block device for each password given (keyslot 0), and what the
// tests do with it.
type enrollHost struct {
	h     *testhost.Host
	disks []string
	host  *fleet.Host // web1, whose expectations mark every disk for a TPM2
	swtpm string      // the TCTI that reaches the host's swtpm
	t     *testing.T
}

func newEnrollHost(t *testing.T, passwords ...string) *enrollHost {
	signer, key := testhost.ClientKey(t)
	h := testhost.Debian(t, testhost.DebianOptions{Hostname: "ks-enroll", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()},
		ExtraPackages: []string{"cryptsetup-bin", "swtpm", "tpm2-tools", "libtss2-tcti-swtpm0"}})
	e := &enrollHost{h: h, swtpm: "swtpm:host=127.0.0.1,port=2321", t: t}
	fakeFirmware(t, h, 1, 0) // Secure Boot on: PCR 7 alone is fine (TestEnrollSecureBoot)
	var volumes []map[string]any
	for i, pw := range passwords {
		disk := testhost.AttachDisk(t, h, 64<<20)
		e.run("sh", "-c", "umask 077; printf %s '"+pw+"' > /root/pw && cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /root/pw "+disk+" && rm /root/pw")
		e.disks = append(e.disks, disk)
		name := "credstore"
		if i > 0 {
			name = fmt.Sprintf("vol%d", i+1)
		}
		volumes = append(volumes, map[string]any{"name": name, "device": disk, "tpm2": true})
	}
	e.run("sh", "-c", "mkdir -p /run/swtpm && swtpm socket --tpm2 --tpmstate dir=/run/swtpm --server type=tcp,port=2321,bindaddr=127.0.0.1 --ctrl type=tcp,port=2322,bindaddr=127.0.0.1 --flags startup-clear --daemon")
	expect, _ := json.Marshal(map[string]any{"hostname": h.Name, "luks": map[string]any{"devices": []string{}, "volumes": volumes}})
	e.host = &fleet.Host{Name: "web1", Target: target.Target{User: "root", Host: h.Addr, Port: h.Port}, Expectations: expect,
		Identities: []string{key}, HostKeys: sshx.HostKeys{Pinned: h.HostKey, PinnedFrom: "test"}}
	return e
}

func (e *enrollHost) run(args ...string) string {
	e.t.Helper()
	out, err := e.h.Run(e.t, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// unlock reads what unlocks disk now.
func (e *enrollHost) unlock(disk string) func() verify.LUKSUnlock {
	return func() verify.LUKSUnlock {
		e.t.Helper()
		u, err := verify.ParseLuksDumpJSON([]byte(e.run("cryptsetup", "luksDump", "--dump-json-metadata", disk)))
		if err != nil {
			e.t.Fatal(err)
		}
		return u
	}
}

// enroll runs enroll.Run (PCR 7 unless o says) and fails the test if a
// disk password shows in what it says.
func (e *enrollHost) enroll(o enroll.Options) (string, error) {
	if o.PCRs == "" {
		o.PCRs = "7"
	}
	var out bytes.Buffer
	err := enroll.Run(context.Background(), e.host, o, &out)
	for _, pw := range []string{password, otherPassword} {
		if strings.Contains(out.String(), pw) || (err != nil && strings.Contains(err.Error(), pw)) {
			e.t.Errorf("a password is in the output:\n%s%v", out.String(), err)
		}
	}
	return out.String(), err
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
		{"no TPM2 volume", noTPM, enroll.Options{PCRs: "7", DryRun: true}, enroll.ExitRefused, "marks no LUKS volume for a TPM2"},
		{"no password", tpm, enroll.Options{PCRs: "7"}, exit.Usage, "needs the disk password"},
		{"bad PCRs", tpm, enroll.Options{PCRs: "7;reboot"}, exit.Usage, "PCRs are numbers from 0 to 23"},
		{"PCR 24", tpm, enroll.Options{PCRs: "24"}, exit.Usage, "PCRs are numbers from 0 to 23"},
		{"PCR 15", tpm, enroll.Options{PCRs: "15", DryRun: true}, exit.Usage, "PCR 15 is extended once the credstore is unlocked"},
		{"PCR 15 among others", tpm, enroll.Options{PCRs: "0,7,15", DryRun: true}, exit.Usage, "PCR 15 is extended"},
		{"missing password file", tpm, enroll.Options{PCRs: "7", PasswordFile: "/nonexistent"}, exit.Usage, "no such file"},
		{"recovery key file in a missing folder", tpm, enroll.Options{PCRs: "7", Password: []byte("pw"), RecoveryKeyFile: "/nonexistent/web1.recovery"},
			enroll.ExitRefused, "give a file in a folder that exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &fleet.Host{Name: "web1", Target: nowhere, Expectations: tc.expect}
			err := enroll.Run(context.Background(), h, tc.o, &bytes.Buffer{})
			if exit.Code(err) != tc.code || err == nil || !strings.Contains(err.Error()+" "+hint.Of(err), tc.says) {
				t.Errorf("%v (exit %d), want exit %d and %q", err, exit.Code(err), tc.code, tc.says)
			}
		})
	}
}

// TestCheck: what the command line alone shows to be wrong.
func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		o    enroll.Options
		says string // "": accepted
	}{
		{enroll.Options{PCRs: "7", PasswordFile: "pw"}, ""},
		{enroll.Options{PCRs: "0,2,7", DryRun: true}, ""},
		{enroll.Options{PCRs: "14+16", DryRun: true}, ""},
		// systemd-cryptenroll takes "" as no PCRs at all, not as the default.
		{enroll.Options{PCRs: "", DryRun: true}, "--pcrs is empty"},
		{enroll.Options{PCRs: "15", DryRun: true}, "PCR 15 is extended once the credstore is unlocked"},
		{enroll.Options{PCRs: "7+15", DryRun: true}, "PCR 15 is extended"},
		{enroll.Options{PCRs: "0,15", DryRun: true}, "PCR 15 is extended"},
		{enroll.Options{PCRs: "24", DryRun: true}, "PCRs are numbers from 0 to 23"},
		{enroll.Options{PCRs: "7"}, "enrolling needs the disk password"},
	} {
		err := tc.o.Check()
		switch {
		case tc.says == "" && err != nil:
			t.Errorf("%+v: %v", tc.o, err)
		case tc.says != "" && (exit.Code(err) != exit.Usage || !strings.Contains(err.Error(), tc.says)):
			t.Errorf("%+v: %v (exit %d), want exit 64 and %q", tc.o, err, exit.Code(err), tc.says)
		}
	}
}

// TestReadPassword: a bad password file (internal/diskpw's rules) is a
// usage error, before anything is asked of the flake or the host.
func TestReadPassword(t *testing.T) {
	dir := t.TempDir()
	for _, data := range []string{"", "s3cret-pw\n"} {
		p := filepath.Join(dir, "pw")
		os.WriteFile(p, []byte(data), 0o600)
		if _, err := enroll.ReadPassword(p); exit.Code(err) != exit.Usage || !strings.HasPrefix(err.Error(), "--disk-password-file "+p) {
			t.Errorf("%q: %v (exit %d), want exit 64", data, err, exit.Code(err))
		}
	}
	p := filepath.Join(dir, "ok")
	os.WriteFile(p, []byte("s3cret-pw"), 0o600)
	if got, err := enroll.ReadPassword(p); err != nil || string(got) != "s3cret-pw" {
		t.Errorf("a good file: %q, %v", got, err)
	}
}
