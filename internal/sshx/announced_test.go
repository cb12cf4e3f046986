package sshx

import (
	"errors"
	"net"
	"slices"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/testhost"
)

// An announced fingerprint admits that ed25519 key and no other, and asks
// the server for an ed25519 key.
func TestAnnouncedFingerprint(t *testing.T) {
	good, _ := testhost.GenerateKey(t)
	other, _ := testhost.GenerateKey(t)
	cb, algos, err := HostKeys{Announced: ssh.FingerprintSHA256(good.PublicKey())}.config("192.0.2.10:22")
	if err != nil || !slices.Equal(algos, []string{ssh.KeyAlgoED25519}) {
		t.Fatalf("config: %v, %v", algos, err)
	}
	if err := cb("192.0.2.10:22", &net.TCPAddr{}, good.PublicKey()); err != nil {
		t.Errorf("the announced key: %v", err)
	}
	if err := cb("192.0.2.10:22", &net.TCPAddr{}, other.PublicKey()); !errors.Is(err, ErrHostKey) {
		t.Errorf("another key: %v", err)
	}
}
