// Package enroll binds a host's LUKS volumes to its TPM2 with
// systemd-cryptenroll, over SSH with the pinned host key, so that the boot
// unlocks them without the password. It runs on the installed system:
// PCRs measured under the installer or kexec differ from a real boot.
package enroll

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keystone-nix/keystone/deploy"
	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/text"
	"github.com/keystone-nix/keystone/verify"
)

// Exit statuses, as deploy's: 2 cannot connect, 3 refused with nothing
// changed, 4 systemd-cryptenroll failed on the host.
const (
	ExitRefused = deploy.ExitRefused
	ExitEnroll  = deploy.ExitInstall
)

// Options say how to enroll.
type Options struct {
	PCRs            string // PCRs the TPM2 policy binds to: "7", "0+2+7"
	Force           bool   // replace an existing TPM2 slot
	PasswordFile    string // the disk password, which unlocks the volume to add the slot
	RecoveryKeyFile string // also add a recovery key, written here (0600)
	DryRun          bool
	// TPM2Device is systemd-cryptenroll's --tpm2-device: "auto", a device
	// node, or a tss2 TCTI such as swtpm:host=…,port=…. With anything but
	// auto, the host's /sys/class/tpm is not asked whether it has one.
	TPM2Device string
	Timeout    time.Duration // for each command on the host
	// AcceptUnverifiedBoot enrolls a policy that measures nothing of the
	// boot chain (PCR 7 alone) while Secure Boot is off: the TPM2 then
	// protects a removed disk, not a tampered boot.
	AcceptUnverifiedBoot bool
}

// pcrSpec is what systemd-cryptenroll's --tpm2-pcrs takes, by number.
var pcrSpec = regexp.MustCompile(`^([0-9]|1[0-9]|2[0-3])(\+([0-9]|1[0-9]|2[0-3]))*$`)

// Check refuses what the command line alone shows to be wrong.
func (o Options) Check() error {
	pcrs := strings.ReplaceAll(o.PCRs, ",", "+")
	if pcrs != "" && !pcrSpec.MatchString(pcrs) {
		return exit.UsageError(hint.Errorf("e.g. --pcrs 7, or --pcrs 0+2+7", "--pcrs %q: PCRs are numbers from 0 to 23 joined by +", o.PCRs))
	}
	if slices.Contains(strings.Split(pcrs, "+"), "15") {
		// tpm2-measure-pcr=yes on the credstore's crypttab line extends
		// PCR 15 with the volume key after the unlock: what it holds now
		// no later boot has before it.
		return exit.UsageError(hint.Errorf("leave 15 out, e.g. --pcrs 7",
			"--pcrs %q: PCR 15 is extended once the credstore is unlocked (tpm2-measure-pcr=yes), so a key bound to it now could never be unsealed at a later boot", o.PCRs))
	}
	return nil
}

// volume is one LUKS volume meant for the TPM2, as the host has it.
type volume struct {
	verify.LUKSVolume
	unlock verify.LUKSUnlock
}

func refused(err error) error { return exit.With(ExitRefused, err) }

// Run enrolls every LUKS volume of h that its config marks for a TPM2.
func Run(ctx context.Context, h *fleet.Host, o Options, w io.Writer) error {
	if h.Err != nil {
		return refused(h.Err)
	}
	o.PCRs = strings.ReplaceAll(o.PCRs, ",", "+")
	if o.PCRs == "" {
		o.PCRs = "7"
	}
	if o.TPM2Device == "" {
		o.TPM2Device = "auto"
	}
	if err := o.Check(); err != nil {
		return err
	}
	e, err := verify.ParseExpectations(h.Expectations)
	if err != nil {
		return refused(err)
	}
	var meant []verify.LUKSVolume
	if e.LUKS != nil {
		for _, v := range e.LUKS.Volumes {
			if v.TPM2 {
				meant = append(meant, v)
			}
		}
	}
	if len(meant) == 0 {
		return refused(hint.Errorf("the zfs-encrypted and luks layouts of new-host have one",
			"the config marks no LUKS volume for a TPM2 (tpm2-device in its crypttab options), so there is nothing to enroll"))
	}
	var password []byte
	switch {
	case o.PasswordFile != "":
		pf, err := deploy.OpenPasswordFile(o.PasswordFile)
		if err != nil {
			return refused(err)
		}
		password, err = os.ReadFile(pf.Path)
		pf.Remove()
		if err != nil {
			return refused(err)
		}
	case !o.DryRun:
		return refused(hint.Errorf("pass --disk-password-file FILE, the password the boot asks for",
			"enrolling needs the disk password to unlock the volume"))
	}
	var recovery *os.File
	if o.RecoveryKeyFile != "" && !o.DryRun {
		// Made first, and never over an existing file: a recovery key
		// enrolled with nowhere to go would be a keyslot nobody can use.
		if recovery, err = os.OpenFile(o.RecoveryKeyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return refused(hint.Wrap(fmt.Errorf("--recovery-key-file: %w", err), "give a new file: a recovery key is never written over another"))
		}
		defer func() {
			if recovery != nil {
				recovery.Close()
				os.Remove(o.RecoveryKeyFile)
			}
		}()
	}

	client, err := sshx.Dial(ctx, h.SSH())
	if err != nil {
		return exit.With(verify.ExitCannotReach, err)
	}
	defer client.Close()
	r := remote.New(client.Client, h.Target.User != "root", max(o.Timeout, time.Minute))

	// Read-only first: a TPM2, and what unlocks each volume now.
	if o.TPM2Device == "auto" {
		out := r.Run(ctx, "cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null; true")
		if out.Err != nil {
			return exit.With(verify.ExitCannotReach, fmt.Errorf("reading /sys/class/tpm: %w", out.Err))
		}
		if strings.TrimSpace(out.Stdout) != "2" {
			return refused(hint.Errorf("that is expected in a VM started without --tpm (keystone vm up "+h.Name+" --tpm gives it one); on hardware, turn the TPM on in the firmware",
				"the host has no TPM2, so it keeps asking for its disk password on the console at boot; nothing was changed"))
		}
	}
	sbLine, err := secureBoot(ctx, r, o.PCRs, o.AcceptUnverifiedBoot)
	if err != nil {
		return err
	}
	var volumes []volume
	for _, v := range meant {
		out := r.Run(ctx, "cryptsetup luksDump --dump-json-metadata -- "+remote.Quote(v.Device))
		if out.Err != nil || out.Exit != 0 {
			return refused(fmt.Errorf("%s: reading the LUKS header of %s: %s; nothing was changed", v.Name, v.Device, why(out)))
		}
		u, err := verify.ParseLuksDumpJSON([]byte(out.Stdout))
		if err != nil {
			return refused(fmt.Errorf("%s: %w", v.Name, err))
		}
		switch {
		case len(u.TPM2) > 0 && !o.Force:
			return refused(hint.Errorf("--force replaces it (the password slot stays)",
				"%s already has a TPM2 slot (keyslot %s, PCRs %s); nothing was changed", v.Name, strings.Join(u.TPM2[0].Keyslots, ","), pcrList(u.TPM2[0].PCRs)))
		case len(u.Passwords) == 0:
			return refused(fmt.Errorf("%s has no password keyslot to unlock it with; nothing was changed", v.Name))
		}
		volumes = append(volumes, volume{v, u})
	}

	fmt.Fprintf(w, "Plan for %s:\n", h.Name)
	fmt.Fprintln(w, sbLine)
	for _, v := range volumes {
		line := fmt.Sprintf("  enroll     %s (%s): TPM2 bound to PCRs %s; the password (keyslot %s) stays", v.Name, v.Device, o.PCRs, strings.Join(v.unlock.Passwords, ","))
		if len(v.unlock.TPM2) > 0 {
			line += fmt.Sprintf("; replaces TPM2 keyslot %s", strings.Join(v.unlock.TPM2[0].Keyslots, ","))
		}
		if o.RecoveryKeyFile != "" {
			line += "; adds a recovery key, written to " + o.RecoveryKeyFile
		}
		fmt.Fprintln(w, line)
	}
	if o.DryRun {
		fmt.Fprintln(w, "dry run: nothing was changed")
		return nil
	}

	for _, v := range volumes {
		gone := ""
		if len(v.unlock.TPM2) > 0 {
			// systemd-cryptenroll enrolls nothing, and exits 0, while a
			// token of the same PCR policy is there, even one a cleared
			// TPM2 can no longer open, and only then wipes what
			// --wipe-slot names. So the old slot goes first, on its own,
			// once the password is known to open the volume.
			dev := remote.Quote(v.Device)
			if out := withPassword(ctx, r, `cryptsetup open --test-passphrase --key-file="$f" -- `+dev, password); out.Err != nil || out.Exit != 0 {
				return exit.With(ExitEnroll, fmt.Errorf("%s: the password does not open %s (%s); nothing was changed", v.Name, v.Device, why(out)))
			}
			if out := r.Run(ctx, "systemd-cryptenroll --wipe-slot=tpm2 -- "+dev); out.Err != nil || out.Exit != 0 {
				return exit.With(ExitEnroll, fmt.Errorf("%s: systemd-cryptenroll --wipe-slot=tpm2: %s", v.Name, why(out)))
			}
			gone = fmt.Sprintf("; its old TPM2 slot is gone, so it asks for its password at boot until keystone enroll %s succeeds", h.Name)
		}
		out := cryptenroll(ctx, r, v.Device, []string{"--tpm2-device=" + o.TPM2Device, "--tpm2-pcrs=" + o.PCRs}, password)
		if out.Err != nil || out.Exit != 0 {
			return exit.With(ExitEnroll, fmt.Errorf("%s: systemd-cryptenroll: %s%s", v.Name, why(out), gone))
		}
		if strings.Contains(out.Stderr, "executing no operation") {
			return exit.With(ExitEnroll, fmt.Errorf("%s: systemd-cryptenroll changed nothing: %s", v.Name, text.OneLine(out.Stderr)))
		}
		for _, l := range strings.Split(out.Stderr, "\n") {
			if strings.Contains(l, "unenforced") {
				// PCRs the firmware never set: the policy binds nothing.
				fmt.Fprintf(w, "warning: systemd-cryptenroll: %s\n", text.OneLine(l))
			}
		}
		fmt.Fprintf(w, "enrolled %s: the TPM2 unlocks it at boot while PCRs %s stay as they are now; the password still does\n", v.Name, o.PCRs)
		if recovery != nil {
			out := cryptenroll(ctx, r, v.Device, []string{"--recovery-key"}, password)
			key := recoveryKey.FindString(out.Stdout)
			if out.Err != nil || out.Exit != 0 || key == "" {
				return exit.With(ExitEnroll, fmt.Errorf("%s: systemd-cryptenroll --recovery-key: %s", v.Name, why(out)))
			}
			if _, err := fmt.Fprintf(recovery, "%s %s\n", v.Name, key); err != nil {
				return exit.With(ExitEnroll, fmt.Errorf("%s: a recovery key was enrolled but could not be written to %s: %w; remove its keyslot with systemd-cryptenroll --wipe-slot=recovery %s", v.Name, o.RecoveryKeyFile, err, v.Device))
			}
			fmt.Fprintf(w, "added a recovery key to %s, written to %s: keep it away from the host\n", v.Name, o.RecoveryKeyFile)
		}
	}
	if recovery != nil {
		err := recovery.Close()
		recovery = nil
		if err != nil {
			return exit.With(ExitEnroll, fmt.Errorf("writing %s: %w", o.RecoveryKeyFile, err))
		}
	}
	return nil
}

// recoveryKey is what systemd-cryptenroll prints on stdout: 8 groups of 8
// modhex characters.
var recoveryKey = regexp.MustCompile(`[cbdefghijklnrtuv]{8}(-[cbdefghijklnrtuv]{8}){7}`)

// cryptenroll runs systemd-cryptenroll on device, unlocking it with the
// password.
func cryptenroll(ctx context.Context, r *remote.Runner, device string, args []string, password []byte) remote.Output {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = remote.Quote(a)
	}
	return withPassword(ctx, r, `systemd-cryptenroll --unlock-key-file="$f" `+strings.Join(quoted, " ")+` -- `+remote.Quote(device), password)
}

// withPassword runs command with "$f" naming a file that holds the
// password, sent on stdin and kept on the host only in a private file on
// /run (a tmpfs) for as long as the command runs: never in a command line,
// an environment or a log.
func withPassword(ctx context.Context, r *remote.Runner, command string, password []byte) remote.Output {
	script := `set -eu
umask 077
f=$(mktemp /run/keystone-enroll.XXXXXX)
trap 'rm -f "$f"' EXIT
cat > "$f"
` + command
	return r.RunInput(ctx, script, password)
}

func why(o remote.Output) string {
	switch {
	case o.Err != nil:
		return o.Err.Error()
	case strings.TrimSpace(o.Stderr) != "":
		lines := strings.Split(strings.TrimSpace(o.Stderr), "\n")
		return lines[len(lines)-1]
	}
	return "exit status " + strconv.Itoa(o.Exit)
}

func pcrList(pcrs []int) string {
	if len(pcrs) == 0 {
		return "none"
	}
	s := make([]string, len(pcrs))
	for i, p := range pcrs {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, "+")
}
