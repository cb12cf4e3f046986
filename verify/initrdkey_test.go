package verify

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io/fs"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func newPub(t *testing.T) string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ssh.NewPublicKey(pub)
	return string(ssh.MarshalAuthorizedKey(k))
}

// TestInitrdKeyJudge: the key on the host (stat's mode, then ssh-keygen
// -y's public key) against the pin the probe read.
func TestInitrdKeyJudge(t *testing.T) {
	key, other := newPub(t), newPub(t)
	e := &Expectations{Unlock: &Unlock{Port: 2222, HostKey: "/etc/ssh/initrd_ssh_host_ed25519_key"}}
	pin := Output{Stdout: key, Stderr: "vms/web1/ssh_initrd_host_ed25519_key.pub"}
	for _, tc := range []struct {
		name   string
		host   Output
		pin    Output
		status Status
		says   string
	}{
		{"pinned", Output{Stdout: "600\n" + key}, pin, Pass, "mode 600, the pinned SHA256:"},
		{"another key", Output{Stdout: "600\n" + other}, pin, Fail, "but vms/web1/ssh_initrd_host_ed25519_key.pub pins"},
		{"readable by others", Output{Stdout: "644\n" + key}, pin, Fail, "has mode 644: others can read"},
		{"missing on the host", Output{Exit: 1, Stderr: "stat: cannot statx '/etc/ssh/initrd_ssh_host_ed25519_key': No such file or directory"}, pin, Fail,
			"the next bootloader install cannot put it in the initrd"},
		{"no pin", Output{Stdout: "600\n" + key}, Output{Err: &fs.PathError{Op: "open", Path: "p", Err: fs.ErrNotExist}}, Warn, "no pin to compare it with"},
		{"pin unreadable", Output{Stdout: "600\n" + key}, Output{Err: errors.New("permission denied")}, Fail, "reading the pin"},
	} {
		st, ev := initrdKeyCheck.Judge(e, []Output{tc.host, tc.pin})
		if st != tc.status || !strings.Contains(ev, tc.says) {
			t.Errorf("%s: %s %q, want %s %q", tc.name, st, ev, tc.status, tc.says)
		}
	}
	if ok, why := initrdKeyCheck.Applies(&Expectations{}); ok || why != "no initrd SSH in the config" {
		t.Errorf("applies without unlock: %v %q", ok, why)
	}
}
