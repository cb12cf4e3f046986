package verify

import (
	"strings"
)

// ParseSSHDConfig reads `sshd -T`: one lower-case "key value" line per
// setting. Each key maps to its lines' values in order, as keys such as
// port and listenaddress repeat; a value keeps its inner spaces
// ("authorizedkeysfile" → "%h/.ssh/authorized_keys /etc/…/%u"). Lines whose
// first word is not a lower-case keyword (warnings that `2>&1` mixes in)
// are skipped.
//
// permitrootlogin without-password (OpenSSH ≤ 10.0's spelling) is
// normalised to prohibit-password (the spelling after).
func ParseSSHDConfig(out string) map[string][]string {
	cfg := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		k, v, _ := strings.Cut(line, " ")
		if !isSSHDKeyword(k) {
			continue
		}
		v = strings.TrimSpace(v)
		if k == "permitrootlogin" && v == "without-password" {
			v = "prohibit-password"
		}
		cfg[k] = append(cfg[k], v)
	}
	return cfg
}

func isSSHDKeyword(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
