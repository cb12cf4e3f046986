package lint

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func readFleet(t *testing.T, name string) map[string]Host {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fleet, err := ReadFleet(f)
	if err != nil {
		t.Fatal(err)
	}
	return fleet
}

func TestFleetGood(t *testing.T) {
	if got := Fleet(readFleet(t, "good.json")); len(got) != 0 {
		t.Errorf("a good fleet has findings: %v", got)
	}
}

func TestFleetBad(t *testing.T) {
	var got []string
	for _, f := range Fleet(readFleet(t, "bad.json")) {
		got = append(got, f.String())
	}
	want := []string{
		`Web2: host name: host name "Web2" has upper-case letters`,
		`Web2: authorized key 1: DSA keys are refused: OpenSSH has disabled them`,
		`Web2: no disko disks: deploy would have nothing to install on`,
		`db1: networking.hostId "XYZ" is not 8 hex digits other than 00000000; set one, e.g. ` + "`head -c 8 /etc/machine-id`",
		`db1: authorized key 1: not an SSH public key`,
		`db1: disko disk /dev/vda1 is a partition; give the whole disk; the layout creates its own partitions`,
		`db1: disko disk /dev/disk/by-id/ata-X is named by two disks of the layout; name each disk once`,
		`db1: keystone.deploy.targetUser "Root" is not a user name`,
		`web1: root has no SSH key: nobody can log in after the install`,
		"web1: disko disk /dev/sda is a kernel name that can change between boots, so the wrong disk could be wiped; " +
			"use its /dev/disk/by-id/ name (`ls -l /dev/disk/by-id/` on the target), or keystone.vm = true for a virtio disk without a serial",
		`web1: keystone.deploy.targetHost "bad host": host "bad host" is not a DNS name or IP address`,
		`Web2, web1: networking.hostName "web1" is used by more than one host`,
		`Web2, web1: networking.hostId "1a2b3c4d" is used by more than one host`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestReadFleetRefusesUnknownFields(t *testing.T) {
	if _, err := ReadFleet(strings.NewReader(`{"a": {"host_name": "a"}}`)); err == nil {
		t.Error("a misspelt field was accepted")
	}
}

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, _ := ssh.MarshalPrivateKey(priv, "")
	encrypted, _ := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("pw"))
	der, _ := asn1.Marshal(struct {
		Algorithm  pkix.AlgorithmIdentifier
		Ciphertext []byte
	}{pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}}, make([]byte, 64)}) // PBES2
	pkcs8 := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der})
	files := map[string]string{
		"secrets/pkcs8.pem":    string(pkcs8),
		"fixtures/pkcs8.txtar": "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
		"keys/id.ppk": "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: me\nPublic-Lines: 2\n" +
			"AAAAC3NzaC1lZDI1NTE5AAAAIN6d9Bt6FtzY8O0GiDWS2ZDMEY5LHg6xnZaRBPYg\ndFzK\nPrivate-Lines: 1\nAAAAIHNlY3JldHNlY3JldHNlY3JldHNlY3JldA==\nPrivate-MAC: 00\n",
		"vms/web1/ssh_host_ed25519_key":     string(pem.EncodeToMemory(block)),
		"secrets/encrypted":                 "prefix\n" + string(pem.EncodeToMemory(encrypted)),
		"age.txt":                           "# created: 2026\n" + "AGE-SECRET-KEY-1" + strings.Repeat("Q", 58) + "\n",
		"fixtures/fake.txtar":               "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n",
		"vms/web1/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6d9Bt6FtzY8O0GiDWS2ZDMEY5LHg6xnZaRBPYgdFzK",
		".git/objects/x":                    string(pem.EncodeToMemory(block)),
		// across the first window's end, and at the end of a big file
		"big/straddle": strings.Repeat("x", maxScan-100) + string(pem.EncodeToMemory(block)),
		"big/tail":     strings.Repeat("x\n", maxScan) + string(pem.EncodeToMemory(block)),
		"big/clean":    strings.Repeat("x\n", maxScan),
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(data), 0o600)
	}
	got, err := Secrets(dir)
	if err != nil {
		t.Fatal(err)
	}
	var where []string
	for _, f := range got {
		where = append(where, f.Where)
	}
	want := []string{"age.txt", "big/straddle", "big/tail", "keys/id.ppk", "secrets/encrypted", "secrets/pkcs8.pem", "vms/web1/ssh_host_ed25519_key"}
	if !reflect.DeepEqual(where, want) {
		t.Errorf("secrets found in %q, want %q", where, want)
	}
}

func TestRepositoryHoldsNoSecrets(t *testing.T) {
	got, err := Secrets("..") // the repository: lint/ sits at its top
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > 0 {
		t.Errorf("private key material in the repository: %v", got)
	}
}
