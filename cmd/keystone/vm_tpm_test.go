package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
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

// vmDisksAndTPM runs, in a booted VM with a TPM2 (swtpm) and an open LUKS2
// volume on its spare partition, what needs a real machine: keystone
// disks sees the virtio disk by its serial; keystone enroll binds the
// volume to the TPM2, which then opens it without the password; a second
// enroll is refused; and once PCR 7 is extended the TPM2 no longer opens
// it, the password still does, and verify's tpm check says so.
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

	device := "/dev/disk/by-partlabel/spare"
	expect, _ := json.Marshal(map[string]any{"hostname": testhost.VMHostname, "luks": map[string]any{"devices": []string{},
		"volumes": []map[string]any{{"name": "spare", "device": device, "tpm2": true}}}})
	host := &fleet.Host{Name: "web1", Target: target.Target{User: "root", Host: "127.0.0.1", Port: port},
		Expectations: expect, Identities: []string{g.Image.ClientKeyPath},
		HostKeys: sshx.HostKeys{Pinned: g.HostKey, PinnedFrom: "test"}}
	tpmCheck := func() verify.Result {
		t.Helper()
		e, _ := verify.ParseExpectations(expect)
		var only []verify.Check
		for _, c := range verify.All() {
			if c.Name == "tpm" {
				only = append(only, c)
			}
		}
		r := verify.Run(context.Background(), e, verify.Options{Name: "web1", SSH: host.SSH(), Checks: only})
		for _, res := range r.Results {
			if res.Check == "tpm" {
				return res
			}
		}
		t.Fatalf("no tpm result: %+v", r)
		return verify.Result{}
	}
	if r := tpmCheck(); r.Status != verify.Warn || !strings.Contains(r.Evidence, "password only: asks at boot; run keystone enroll") {
		t.Errorf("before enrolling: %+v", r)
	}

	var log bytes.Buffer
	if err := enroll.Run(context.Background(), host, enroll.Options{PasswordFile: pwFile}, &log); err != nil {
		t.Fatalf("enroll: %v\n%s", err, log.String())
	}
	if strings.Contains(log.String(), password) {
		t.Errorf("enroll's output holds the password:\n%s", log.String())
	}
	g.MustRun(t, "cryptsetup open --test-passphrase --token-only --token-type systemd-tpm2 "+device+" </dev/null")
	if r := tpmCheck(); r.Status != verify.Pass || !strings.Contains(r.Evidence, "spare: TPM2 (PCRs 7) + password") {
		t.Errorf("after enrolling: %+v", r)
	}
	if j := g.MustRun(t, "journalctl --no-pager -o cat; cat /root/.bash_history 2>/dev/null; true"); strings.Contains(j, password) {
		t.Error("the password is in the guest's journal or shell history")
	}
	err := enroll.Run(context.Background(), host, enroll.Options{PasswordFile: pwFile}, &log)
	if exit.Code(err) != enroll.ExitRefused || !strings.Contains(err.Error(), "already has a TPM2 slot") {
		t.Errorf("a second enroll: %v", err)
	}

	// What a firmware update does to a PCR 7 policy.
	g.MustRun(t, "tpm2_pcrextend 7:sha256=0000000000000000000000000000000000000000000000000000000000000001")
	if _, err := g.Run(t, "cryptsetup open --test-passphrase --token-only --token-type systemd-tpm2 "+device+" </dev/null"); err == nil {
		t.Error("the TPM2 still opens the volume after PCR 7 changed")
	}
	g.MustRun(t, "printf %s '"+password+"' | cryptsetup open --test-passphrase --key-file - "+device)
	if r := tpmCheck(); r.Status != verify.Warn || !strings.Contains(r.Evidence, "the TPM2 does not open it now: the PCRs changed") {
		t.Errorf("after PCR 7 changed: %+v", r)
	}
}
