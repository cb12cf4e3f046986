package verify

import (
	"strings"
)

// SecureBootScript reads the firmware's Secure Boot state, read-only: the
// EFI global variables SecureBoot and SetupMode
// (8be4df61-93ca-11d2-aa0d-00e098032b8c, UEFI spec 3.3), whose efivarfs
// files hold 4 bytes of attributes, then the one-byte value.
const SecureBootScript = `[ -d /sys/firmware/efi ] || { echo uefi=no; exit 0; }
echo uefi=yes
for v in SecureBoot SetupMode; do
  f=/sys/firmware/efi/efivars/$v-8be4df61-93ca-11d2-aa0d-00e098032b8c
  if [ -r "$f" ]; then echo "$v=$(od -An -tu1 -j4 -N1 "$f" | tr -d ' \n')"; else echo "$v=missing"; fi
done`

// SecureBoot is what the firmware says of Secure Boot.
type SecureBoot struct {
	Known     bool // the script ran and said something
	UEFI      bool
	Enabled   bool // SecureBoot = 1: the firmware checks the boot loader's signature
	SetupMode bool // SetupMode = 1: no platform key, so nothing is enforced
}

// ParseSecureBoot reads SecureBootScript's output.
func ParseSecureBoot(out string) SecureBoot {
	var sb SecureBoot
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		sb.Known = true
		switch k {
		case "uefi":
			sb.UEFI = v == "yes"
		case "SecureBoot":
			sb.Enabled = v == "1"
		case "SetupMode":
			sb.SetupMode = v == "1"
		}
	}
	return sb
}

// On says Secure Boot is enforced: on, and not in setup mode.
func (sb SecureBoot) On() bool { return sb.UEFI && sb.Enabled && !sb.SetupMode }

// String says the state in a few words.
func (sb SecureBoot) String() string {
	switch {
	case !sb.Known:
		return "unknown"
	case !sb.UEFI:
		return "unavailable (a legacy BIOS boot, no UEFI)"
	case sb.Enabled && sb.SetupMode:
		return "setup mode (no platform key): nothing enforced"
	case sb.Enabled:
		return "on"
	case sb.SetupMode:
		return "off, setup mode"
	}
	return "off"
}

// BootChainPCRs measure what the host boots, not only the firmware's
// Secure Boot state: 4 the boot loader and kernel images the firmware
// loads, 8 and 9 GRUB's commands and files (and the initrd the kernel's
// EFI stub loads, into 9), 11 a unified kernel image (systemd-stub). With
// one of them a swapped kernel or initrd does not unseal the key; every
// kernel update then needs a re-enroll.
var BootChainPCRs = []int{4, 8, 9, 11}

// BindsBootChain says whether a PCR policy measures some of the boot chain.
func BindsBootChain(pcrs []int) bool {
	for _, p := range pcrs {
		for _, b := range BootChainPCRs {
			if p == b {
				return true
			}
		}
	}
	return false
}
