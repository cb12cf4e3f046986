package verify

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// InitrdPinName is the initrd host key's pin beside the main key's.
const InitrdPinName = "ssh_initrd_host_ed25519_key.pub"

// InitrdPin is the initrd pin of the host whose main pin is pinFile.
func InitrdPin(pinFile string) string {
	if pinFile == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(pinFile), InitrdPinName)
}

// initrdKeyCheck: the initrd's host key sits on the host where the config
// says (the bootloader copies it into the initrd from there), private
// (0600: the initrd's sshd refuses others, and it is the key that proves
// the initrd to keystone unlock), and is the pinned one.
var initrdKeyCheck = Check{
	Name: "initrd",
	Applies: func(e *Expectations) (bool, string) {
		return e.Unlock != nil, "no initrd SSH in the config"
	},
	Commands: func(e *Expectations) []string {
		return []string{fmt.Sprintf(`p=%s; stat -c '%%a' -- "$p" && ssh-keygen -y -f "$p"`, shellQuote(e.Unlock.HostKey))}
	},
	// The pin is on this machine: the probe reads it.
	Probe: func(_ context.Context, _ *Expectations, h Host) Output {
		if h.InitrdPin == "" {
			return Output{}
		}
		data, err := os.ReadFile(h.InitrdPin)
		if err != nil {
			return Output{Err: err}
		}
		return Output{Stdout: string(data), Stderr: h.InitrdPin}
	},
	Judge: judgeInitrdKey,
}

func judgeInitrdKey(e *Expectations, outs []Output) (Status, string) {
	if msg, ok := failed("reading "+e.Unlock.HostKey, outs[0]); !ok {
		return Fail, msg + ": the next bootloader install cannot put it in the initrd, and keystone unlock cannot reach it"
	}
	mode, pub, _ := strings.Cut(strings.TrimSpace(outs[0].Stdout), "\n")
	onHost, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub))
	if err != nil {
		return Fail, "ssh-keygen -y " + e.Unlock.HostKey + " printed no public key"
	}
	if mode != "600" && mode != "400" {
		return Fail, fmt.Sprintf("%s has mode %s: others can read the initrd's private key; chmod 600 it", e.Unlock.HostKey, mode)
	}
	p := outs[1]
	switch {
	case p.Err != nil && os.IsNotExist(p.Err):
		return Warn, fmt.Sprintf("%s on the host (%s, mode %s), but no pin to compare it with: keystone deploy pins it", e.Unlock.HostKey, ssh.FingerprintSHA256(onHost), mode)
	case p.Err != nil:
		return Fail, "reading the pin: " + p.Err.Error()
	case p.Stdout == "":
		return Pass, fmt.Sprintf("%s, mode %s, %s (no pin asked for)", e.Unlock.HostKey, mode, ssh.FingerprintSHA256(onHost))
	}
	pinned, _, _, _, err := ssh.ParseAuthorizedKey([]byte(p.Stdout))
	if err != nil {
		return Fail, p.Stderr + ": not a public key"
	}
	if string(pinned.Marshal()) != string(onHost.Marshal()) {
		return Fail, fmt.Sprintf("%s is %s, but %s pins %s: keystone unlock will refuse the initrd", e.Unlock.HostKey, ssh.FingerprintSHA256(onHost), p.Stderr, ssh.FingerprintSHA256(pinned))
	}
	return Pass, fmt.Sprintf("%s, mode %s, the pinned %s", e.Unlock.HostKey, mode, ssh.FingerprintSHA256(onHost))
}
