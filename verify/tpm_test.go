package verify

import (
	"cmp"
	"context"
	"reflect"
	"strings"
	"testing"
)

// luksDump is a luksDump fixture without gen.sh's comment line.
func luksDump(t *testing.T, name string) string {
	_, dump, _ := strings.Cut(fixture(t, "luksdump", name+".json"), "\n")
	return dump
}

func TestParseLuksDumpJSON(t *testing.T) {
	for _, tc := range []struct {
		file string
		want LUKSUnlock
	}{
		{"password-only", LUKSUnlock{Keyslots: []string{"0"}, Passwords: []string{"0"}}},
		{"tpm2-pcr7", LUKSUnlock{Keyslots: []string{"0", "1"}, Passwords: []string{"0"},
			TPM2: []TPM2Token{{Keyslots: []string{"1"}, PCRs: []int{7}}}}},
		{"tpm2-pcr027-recovery", LUKSUnlock{Keyslots: []string{"0", "1", "2"}, Passwords: []string{"0"},
			TPM2: []TPM2Token{{Keyslots: []string{"1"}, PCRs: []int{0, 2, 7}}}, Recovery: []string{"2"}}},
		{"tpm2-two-passwords", LUKSUnlock{Keyslots: []string{"0", "1", "2"}, Passwords: []string{"0", "1"},
			TPM2: []TPM2Token{{Keyslots: []string{"2"}, PCRs: []int{7}}}}},
		{"tpm2-only", LUKSUnlock{Keyslots: []string{"1"}, TPM2: []TPM2Token{{Keyslots: []string{"1"}, PCRs: []int{7}}}}},
		{"recovery-no-tpm2", LUKSUnlock{Keyslots: []string{"0", "1"}, Passwords: []string{"0"}, Recovery: []string{"1"}}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			dump := luksDump(t, tc.file)
			got, err := ParseLuksDumpJSON([]byte(dump))
			// The blobs are the fixture's, each enrollment's own.
			for i, tok := range got.TPM2 {
				if tok.Blob == "" || !strings.Contains(dump, `"tpm2-blob":"`+tok.Blob+`"`) {
					t.Errorf("TPM2 token %d: blob %q is not the fixture's", i, tok.Blob)
				}
				got.TPM2[i].Blob = ""
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
	// What newer systemd and other tools write.
	got, err := ParseLuksDumpJSON([]byte(`{"keyslots": {"10": {}, "9": {}, "2": {}}, "tokens": {"0": {"type": "systemd-tpm2",
		"keyslots": [10], "tpm2-hash-pcrs": [7], "tpm2-pubkey-pcrs": [11]}, "1": {"type": "systemd-fido2", "keyslots": ["9"]}}}`))
	want := LUKSUnlock{Keyslots: []string{"2", "9", "10"}, Passwords: []string{"2"},
		TPM2: []TPM2Token{{Keyslots: []string{"10"}, PCRs: []int{7, 11}}}, Other: []string{"systemd-fido2"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("newer systemd: got %+v, %v", got, err)
	}
	for _, bad := range []string{"", "{}", `{"keyslots": {"x": 1}, "tokens": {"0": {"keyslots": [true]}}}`, "not json"} {
		if _, err := ParseLuksDumpJSON([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// SecureBootScript's output: the efivarfs values of a firmware with Secure
// Boot on, off, and in setup mode (OVMF's Microsoft-enrolled variables
// read SecureBoot=1 SetupMode=0; its plain ones 0 and 1).
const (
	sbOn    = "uefi=yes\nSecureBoot=1\nSetupMode=0\n"
	sbOff   = "uefi=yes\nSecureBoot=0\nSetupMode=0\n"
	sbSetup = "uefi=yes\nSecureBoot=1\nSetupMode=1\n"
)

func TestParseSecureBoot(t *testing.T) {
	for out, want := range map[string]string{
		sbOn: "on", sbOff: "off", sbSetup: "setup mode (no platform key): nothing enforced",
		"uefi=yes\nSecureBoot=0\nSetupMode=1\n":             "off, setup mode",
		"uefi=yes\nSecureBoot=missing\nSetupMode=missing\n": "off",
		"uefi=no\n": "unavailable (a legacy BIOS boot, no UEFI)",
		"":          "unknown",
	} {
		sb := ParseSecureBoot(out)
		if sb.String() != want || sb.On() != (want == "on") {
			t.Errorf("%q: %q (on %v), want %q", out, sb, sb.On(), want)
		}
	}
}

func TestJudgeTPM(t *testing.T) {
	// SecureBootScript's output per case; the others have Secure Boot on.
	secureBoot := map[string]string{
		"PCR 7, BIOS":            "uefi=no\n",
		"PCR 7, Secure Boot off": sbOff,
		"PCR 7, setup mode":      sbSetup,
		"PCRs 0+2+7, Secure Boot off: still nothing of the boot chain": sbOff,
		"not enrolled, Secure Boot off: the enroll warning":            sbOff,
		"Secure Boot state unreadable":                                 " ",
	}
	credstore := LUKSVolume{Name: "credstore", Device: "/dev/zvol/rpool/credstore", TPM2: true}
	data := LUKSVolume{Name: "data", Device: "/dev/vdb", TPM2: false}
	dump := func(name string) Output { return Output{Stdout: luksDump(t, name)} }
	tpm2, none := Output{Stdout: "2\n"}, Output{}
	for _, tc := range []struct {
		name    string
		volumes []LUKSVolume
		outs    []Output
		status  Status
		says    string
	}{
		{"enrolled", []LUKSVolume{credstore}, []Output{tpm2, dump("tpm2-pcr7")}, Pass, "credstore: TPM2 (PCRs 7) + password"},
		{"enrolled, recovery key", []LUKSVolume{credstore}, []Output{tpm2, dump("tpm2-pcr027-recovery")}, Pass, "TPM2 (PCRs 0+2+7) + password + recovery key"},
		{"not enrolled", []LUKSVolume{credstore}, []Output{tpm2, dump("password-only")}, Warn, "credstore: password only: asks at boot; run keystone enroll web1"},
		{"no TPM2 on the host", []LUKSVolume{credstore}, []Output{none, dump("password-only")}, Pass, "credstore: no TPM2: password at boot"},
		{"a TPM 1.2", []LUKSVolume{credstore}, []Output{{Stdout: "1\n"}, dump("password-only")}, Pass, "no TPM2: password at boot"},
		{"enrolled, TPM gone", []LUKSVolume{credstore}, []Output{none, dump("tpm2-pcr7")}, Warn, "the host does not have: password at boot"},
		{"TPM2 alone", []LUKSVolume{credstore}, []Output{tpm2, dump("tpm2-only")}, Fail, "no keyslot left besides it"},
		{"missing device", []LUKSVolume{credstore}, []Output{tpm2, {Exit: 4, Stderr: "Device /dev/zvol/rpool/credstore does not exist or access denied.\n"}},
			Fail, "cryptsetup luksDump /dev/zvol/rpool/credstore: Device /dev/zvol/rpool/credstore does not exist"},
		{"not a LUKS2 header", []LUKSVolume{credstore}, []Output{tpm2, {Stdout: "garbage"}}, Fail, "reading the LUKS2 metadata"},
		{"worst of two", []LUKSVolume{data, credstore}, []Output{tpm2, dump("tpm2-two-passwords"), dump("password-only")}, Warn,
			"data: TPM2 (PCRs 7) + 2 passwords; credstore: password only"},
		{"enrolled, opens now", []LUKSVolume{credstore}, []Output{tpm2, {Stdout: luksDump(t, "tpm2-pcr7") + unlockMarker + " 0\n"}}, Pass, "credstore: TPM2 (PCRs 7) + password"},
		{"enrolled, PCRs changed", []LUKSVolume{credstore}, []Output{tpm2, {Stdout: luksDump(t, "tpm2-pcr7") + unlockMarker + " 2\n"}}, Warn,
			"the TPM2 does not open it now: the PCRs changed (a firmware or bootloader update?), so the boot asks for the password; run keystone enroll web1 --force"},
		{"not meant for TPM2", []LUKSVolume{data}, []Output{tpm2, dump("recovery-no-tpm2")}, Pass, "data: password + recovery key"},
		{"PCR 7, Secure Boot off", []LUKSVolume{credstore}, []Output{tpm2, dump("tpm2-pcr7")}, Warn,
			"credstore: TPM2 (PCRs 7) + password, but Secure Boot is off: (PCRs 7) binds nothing of the boot chain, so the TPM2 protects a removed disk, not a tampered boot"},
		{"PCR 7, setup mode", []LUKSVolume{credstore}, []Output{tpm2, dump("tpm2-pcr7")}, Warn, "Secure Boot is setup mode (no platform key): nothing enforced"},
		{"PCR 7, BIOS", []LUKSVolume{credstore}, []Output{tpm2, dump("tpm2-pcr7")}, Warn, "Secure Boot is unavailable (a legacy BIOS boot, no UEFI)"},
		{"PCRs 0+2+7, Secure Boot off: still nothing of the boot chain", []LUKSVolume{credstore}, []Output{tpm2, dump("tpm2-pcr027-recovery")}, Warn, "binds nothing of the boot chain"},
		{"not enrolled, Secure Boot off: the enroll warning", []LUKSVolume{credstore}, []Output{tpm2, dump("password-only")}, Warn, "password only: asks at boot"},
		{"Secure Boot state unreadable", []LUKSVolume{credstore}, []Output{tpm2, dump("tpm2-pcr7")}, Pass, "credstore: TPM2 (PCRs 7) + password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &Expectations{Hostname: "web1", LUKS: &LUKS{Volumes: tc.volumes}}
			outs := append(tc.outs, Output{Stdout: cmp.Or(secureBoot[tc.name], sbOn)})
			if n := len(tpmCheck.Commands(e)); n != len(outs) {
				t.Fatalf("%d commands for %d outputs", n, len(outs))
			}
			st, ev := tpmCheck.Judge(e, outs)
			if st != tc.status || !strings.Contains(ev, tc.says) {
				t.Errorf("%s %q, want %s %q", st, ev, tc.status, tc.says)
			}
		})
	}
}

func TestLUKSVolumeExpectations(t *testing.T) {
	for _, bad := range []string{
		`{"hostname": "h", "luks": {"volumes": [{"name": "-x", "device": "/dev/vda"}]}}`,
		`{"hostname": "h", "luks": {"volumes": [{"name": "c", "device": "vda; reboot"}]}}`,
		`{"hostname": "h", "luks": {"volumes": [{"name": "c", "device": "/dev/vda\n"}]}}`,
	} {
		if _, err := ParseExpectations([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	e, err := ParseExpectations([]byte(`{"hostname": "h", "luks": {"devices": [], "volumes": [{"name": "credstore", "device": "/dev/zvol/rpool/credstore", "tpm2": true}]}}`))
	if err != nil || len(e.LUKS.Volumes) != 1 || !e.LUKS.Volumes[0].TPM2 {
		t.Errorf("%+v, %v", e, err)
	}
}

// A target on loopback is a port forward: scanning it would judge this
// machine. The probe does not scan, and the check says why.
func TestExposureSkipsALoopbackForward(t *testing.T) {
	e := &Expectations{Hostname: "web1", Firewall: &Firewall{Enable: true, Backend: "nftables", TCP: []int{22}}}
	for _, addr := range []string{"127.0.0.1", "::1"} {
		o := scanProbe(context.Background(), e, Host{Addr: addr, SSHPort: 2222})
		st, ev := exposureCheck.Judge(e, []Output{{}, {}, o})
		if st != Skip || !strings.Contains(ev, "port forward on loopback") {
			t.Errorf("%s: %s %q", addr, st, ev)
		}
	}
}
