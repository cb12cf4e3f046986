package enroll

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/verify"
)

// secureBoot reads the firmware's Secure Boot state (read-only) and judges
// the PCR policy against it: with Secure Boot not enforced, PCR 7 records
// only that it is off, so a policy without a boot-chain PCR unseals the key
// for whatever kernel and initrd boot, a tampered one on the unencrypted
// ESP included. It is refused unless accept says the user knows the TPM2
// then protects a removed disk, not a tampered boot. The line is the plan's.
func secureBoot(ctx context.Context, r *remote.Runner, pcrs string, accept bool) (line string, err error) {
	out := r.Run(ctx, verify.SecureBootScript)
	if out.Err != nil {
		return "", exit.With(verify.ExitCannotReach, fmt.Errorf("reading the Secure Boot state: %w", out.Err))
	}
	sb := verify.ParseSecureBoot(out.Stdout)
	line = "  secure boot " + sb.String()
	var list []int
	for _, p := range strings.Split(pcrs, "+") {
		if n, err := strconv.Atoi(p); err == nil {
			list = append(list, n)
		}
	}
	switch {
	case sb.On():
		return line + ": PCR 7 binds the key to the Secure Boot keys that check the boot chain", nil
	case verify.BindsBootChain(list):
		return line + ": PCRs " + pcrs + " measure the boot chain themselves; every kernel or boot loader update needs keystone enroll --force", nil
	case accept:
		return line + ": PCRs " + pcrs + " measure nothing of the boot chain; as --accept-unverified-boot says, the TPM2 protects a removed disk, not a tampered boot", nil
	}
	return "", refused(hint.Errorf(
		"turn Secure Boot on and enroll then; or pass --accept-unverified-boot to accept that; or add boot-chain PCRs (--pcrs 4+7) knowing every kernel update then needs keystone enroll --force",
		"Secure Boot is %s, so PCRs %s measure nothing of the boot chain: the TPM2 would unseal the key for a kernel or initrd swapped on the unencrypted ESP (it protects a removed disk, not a tampered boot); nothing was changed", sb, pcrs))
}
