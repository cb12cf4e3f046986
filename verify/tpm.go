package verify

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/keystone-nix/keystone/internal/text"
)

// tpmCheck says what unlocks each LUKS volume at boot: a TPM2 (and which
// PCRs it is bound to), a password typed on the console, a recovery key.
// A TPM2 volume that is not enrolled on a host that has a TPM2 is a WARN:
// it boots, but only with somebody at the console.
var tpmCheck = Check{
	Name: "tpm",
	Applies: func(e *Expectations) (bool, string) {
		return e.LUKS != nil && len(e.LUKS.Volumes) > 0, "no LUKS volumes in the config"
	},
	Commands: func(e *Expectations) []string {
		// The TPM's major version; nothing when there is none.
		cmds := []string{"cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null; true"}
		for _, v := range e.LUKS.Volumes {
			cmds = append(cmds, fmt.Sprintf(volumeScript, shellQuote(v.Device)))
		}
		return append(cmds, SecureBootScript)
	},
	Judge: judgeTPM,
}

// volumeScript prints a volume's LUKS2 metadata and, when the host has a
// TPM2 and the volume a TPM2 token, whether the TPM2 opens it now (a test
// that activates nothing): after a firmware or bootloader update the PCRs
// differ from the ones enrolled, and only the password is left.
const volumeScript = `d=%s
cryptsetup luksDump --dump-json-metadata -- "$d" || exit
if [ -e /dev/tpmrm0 ] && cryptsetup luksDump --dump-json-metadata -- "$d" | grep -q '"systemd-tpm2"'; then
  cryptsetup open --test-passphrase --token-only --token-type systemd-tpm2 -- "$d" </dev/null >/dev/null 2>&1
  echo "` + unlockMarker + ` $?"
fi`

// unlockMarker starts the line with the TPM2 unlock test's exit status.
const unlockMarker = "#keystone-tpm2-unlock"

func judgeTPM(e *Expectations, outs []Output) (Status, string) {
	if msg, ok := failed("reading /sys/class/tpm", outs[0]); !ok {
		return Fail, msg
	}
	hasTPM2 := strings.TrimSpace(outs[0].Stdout) == "2"
	var sb SecureBoot
	if n := len(e.LUKS.Volumes) + 1; len(outs) > n && outs[n].Err == nil {
		sb = ParseSecureBoot(outs[n].Stdout)
	}
	worst, lines := Pass, []string{}
	for i, v := range e.LUKS.Volumes {
		st, line := judgeVolume(e.Hostname, v, hasTPM2, outs[i+1])
		if st == Pass {
			st, line = judgeSecureBoot(e.Hostname, sb, outs[i+1], line)
		}
		worst = max(worst, st)
		lines = append(lines, v.Name+": "+line)
	}
	return worst, strings.Join(lines, "; ")
}

func judgeVolume(host string, v LUKSVolume, hasTPM2 bool, o Output) (Status, string) {
	if msg, ok := failed("cryptsetup luksDump "+v.Device, o); !ok {
		return Fail, msg
	}
	dump, unlocks := o.Stdout, ""
	if i := strings.LastIndex(dump, unlockMarker+" "); i >= 0 {
		dump, unlocks = dump[:i], strings.TrimSpace(dump[i+len(unlockMarker)+1:])
	}
	u, err := ParseLuksDumpJSON([]byte(dump))
	if err != nil {
		return Fail, err.Error()
	}
	fallback := unlockers(u)
	switch {
	case len(u.TPM2) > 0 && fallback != "" && unlocks != "" && unlocks != "0":
		return Warn, "enrolled with TPM2 " + pcrs(u.TPM2[0]) + ", but the TPM2 does not open it now: the PCRs changed (a firmware or bootloader update?), so the boot asks for the " + fallback + "; run keystone enroll " + host + " --force"
	case len(u.TPM2) > 0 && fallback == "":
		return Fail, "TPM2 " + pcrs(u.TPM2[0]) + " and no keyslot left besides it: a firmware update or another boot path locks it for good; add a password with systemd-cryptenroll --password"
	case len(u.TPM2) > 0 && !hasTPM2:
		return Warn, "enrolled for a TPM2 (" + pcrs(u.TPM2[0]) + ") the host does not have: " + fallback + " at boot"
	case len(u.TPM2) > 0:
		return Pass, "TPM2 " + pcrs(u.TPM2[0]) + " + " + fallback
	case fallback == "":
		return Fail, "no keyslot opens it"
	case v.TPM2 && hasTPM2:
		return Warn, fallback + " only: asks at boot; run keystone enroll " + host
	case v.TPM2:
		return Pass, "no TPM2: " + fallback + " at boot"
	}
	return Pass, fallback
}

// judgeSecureBoot warns about a TPM2 policy that, with Secure Boot off,
// measures nothing of the boot chain: PCR 7 then records only "Secure Boot
// off", so a kernel or initrd swapped on the unencrypted ESP still gets the
// key unsealed. The TPM2 protects a removed disk, not a tampered boot.
func judgeSecureBoot(host string, sb SecureBoot, o Output, line string) (Status, string) {
	dump := o.Stdout
	if i := strings.LastIndex(dump, unlockMarker+" "); i >= 0 {
		dump = dump[:i]
	}
	u, err := ParseLuksDumpJSON([]byte(dump))
	if err != nil || len(u.TPM2) == 0 || !sb.Known || sb.On() || BindsBootChain(u.TPM2[0].PCRs) {
		return Pass, line
	}
	return Warn, line + ", but Secure Boot is " + sb.String() + ": " + pcrs(u.TPM2[0]) +
		" binds nothing of the boot chain, so the TPM2 protects a removed disk, not a tampered boot (a swapped initrd gets the key); turn Secure Boot on and run keystone enroll " +
		host + " --force, or enroll with boot-chain PCRs (4, 8, 9, 11) knowing every kernel update then needs a re-enroll"
}

// unlockers names what opens a volume without a TPM2, or "".
func unlockers(u LUKSUnlock) string {
	var what []string
	switch n := len(u.Passwords); {
	case n == 1:
		what = append(what, "password")
	case n > 1:
		what = append(what, strconv.Itoa(n)+" passwords")
	}
	if len(u.Recovery) > 0 {
		what = append(what, "recovery key")
	}
	for _, t := range u.Other {
		what = append(what, text.OneLine(t))
	}
	return strings.Join(what, " + ")
}

func pcrs(t TPM2Token) string {
	if len(t.PCRs) == 0 {
		return "(no PCRs)"
	}
	var s []string
	for _, p := range t.PCRs {
		s = append(s, strconv.Itoa(p))
	}
	return fmt.Sprintf("(PCRs %s)", strings.Join(s, "+"))
}
