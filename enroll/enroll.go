// Package enroll binds a host's LUKS volumes to its TPM2 with
// systemd-cryptenroll, over SSH with the pinned host key, so that the boot
// unlocks them without the password. It runs on the installed system:
// PCRs measured under the installer or kexec differ from a real boot.
package enroll

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keystone-nix/keystone/deploy"
	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/diskpw"
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
	PCRs  string // PCRs the TPM2 policy binds to: "7", "0+2+7"; Run takes "" as 7
	Force bool   // replace an existing TPM2 slot and recovery key
	// Password is the disk password, which unlocks the volume to add the
	// slot; when nil it is read from PasswordFile.
	Password        []byte
	PasswordFile    string
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

// Check refuses what the command line alone shows to be wrong; an empty
// PCRs is a --pcrs "" there.
func (o Options) Check() error {
	pcrs := strings.ReplaceAll(o.PCRs, ",", "+")
	switch {
	case pcrs == "":
		// systemd-cryptenroll reads an empty list as no PCRs at all.
		return exit.UsageError(hint.Errorf("e.g. --pcrs 7, or --pcrs 0+2+7",
			"--pcrs is empty: a key bound to no PCR is unsealed by whatever system boots on the machine"))
	case !pcrSpec.MatchString(pcrs):
		return exit.UsageError(hint.Errorf("e.g. --pcrs 7, or --pcrs 0+2+7", "--pcrs %q: PCRs are numbers from 0 to 23 joined by +", o.PCRs))
	case slices.Contains(strings.Split(pcrs, "+"), "15"):
		// systemd-cryptsetup's tpm2-measure-pcr=yes, on the credstore's
		// crypttab line, extends PCR 15 with the volume key after the
		// unlock (on a boot from a measured UKI): now, after the unlock, it
		// never holds what the next boot has before it.
		return exit.UsageError(hint.Errorf("leave 15 out, e.g. --pcrs 7",
			"--pcrs %q: PCR 15 is extended once the credstore is unlocked (tpm2-measure-pcr=yes), so a key bound to it now could never be unsealed at a later boot", o.PCRs))
	case o.Password == nil && o.PasswordFile == "" && !o.DryRun:
		return exit.UsageError(hint.Errorf("pass --disk-password-file FILE, the password the boot asks for",
			"enrolling needs the disk password to unlock the volume"))
	}
	return nil
}

// ReadPassword reads the disk password file (internal/diskpw's rules); a
// bad one is a usage error, found before the flake or the host is asked
// anything.
func ReadPassword(path string) ([]byte, error) {
	pw, err := diskpw.Read(path)
	if err != nil {
		return nil, exit.UsageError(err)
	}
	return pw, nil
}

// volume is one LUKS volume meant for the TPM2, as the host has it.
type volume struct {
	verify.LUKSVolume
	unlock verify.LUKSUnlock
}

func refused(err error) error { return exit.With(ExitRefused, err) }

// Run enrolls every LUKS volume of h that its config marks for a TPM2.
// Everything that can be known before a change is checked first, on every
// volume (the password included), so that a refusal changes nothing; a
// failure after that says which volumes were changed already.
func Run(ctx context.Context, h *fleet.Host, o Options, w io.Writer) error {
	if h.Err != nil {
		return refused(h.Err)
	}
	o.PCRs = strings.ReplaceAll(o.PCRs, ",", "+")
	if o.PCRs == "" {
		o.PCRs = "7" // the command line's default; Check refuses an empty --pcrs
	}
	if o.TPM2Device == "" {
		o.TPM2Device = "auto"
	}
	if err := o.Check(); err != nil {
		return err
	}
	password := o.Password
	if password == nil && o.PasswordFile != "" {
		var err error
		if password, err = ReadPassword(o.PasswordFile); err != nil {
			return err
		}
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
	var recovery *os.File
	written := false // the file holds a key that a keyslot opens: it must stay
	if o.RecoveryKeyFile != "" && !o.DryRun {
		// Made first, and never over an existing file: a recovery key
		// enrolled with nowhere to go would be a keyslot nobody can use.
		if recovery, err = os.OpenFile(o.RecoveryKeyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			fix := "give a new file: a recovery key is never written over another"
			if errors.Is(err, fs.ErrNotExist) {
				fix = "give a file in a folder that exists"
			}
			return refused(hint.Wrap(fmt.Errorf("--recovery-key-file: %w", err), fix))
		}
		defer func() {
			if recovery != nil {
				recovery.Close()
				if !written {
					os.Remove(o.RecoveryKeyFile)
				}
			}
		}()
	}

	client, err := sshx.Dial(ctx, h.SSH())
	if err != nil {
		return exit.With(verify.ExitCannotReach, err)
	}
	defer client.Close()
	r := remote.New(client.Client, h.Target.User != "root", max(o.Timeout, time.Minute))

	// Read-only first: a TPM2, what unlocks each volume now, and that the
	// password opens every one of them.
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
		case len(u.Recovery) > 0 && o.RecoveryKeyFile != "" && !o.Force:
			return refused(hint.Errorf("--force replaces it: the old recovery key then stops opening the volume",
				"%s already has a recovery key (keyslot %s); nothing was changed", v.Name, strings.Join(u.Recovery, ",")))
		case len(u.Passwords) == 0:
			return refused(fmt.Errorf("%s has no password keyslot to unlock it with; nothing was changed", v.Name))
		}
		volumes = append(volumes, volume{v, u})
	}
	if password != nil {
		for _, v := range volumes {
			out := withPassword(ctx, r, `cryptsetup open --test-passphrase --key-file="$f" -- `+remote.Quote(v.Device), password)
			if out.Err != nil || out.Exit != 0 {
				return refused(fmt.Errorf("%s: the password does not open %s (%s); nothing was changed", v.Name, v.Device, why(out)))
			}
		}
	}

	fmt.Fprintf(w, "Plan for %s:\n", h.Name)
	fmt.Fprintln(w, sbLine)
	for _, v := range volumes {
		line := fmt.Sprintf("  enroll     %s (%s): TPM2 bound to PCRs %s; the password (keyslot %s) stays", v.Name, v.Device, o.PCRs, strings.Join(v.unlock.Passwords, ","))
		if len(v.unlock.TPM2) > 0 {
			line += fmt.Sprintf("; replaces TPM2 keyslot %s", strings.Join(v.unlock.TPM2[0].Keyslots, ","))
		}
		switch {
		case o.RecoveryKeyFile != "" && len(v.unlock.Recovery) > 0:
			line += fmt.Sprintf("; replaces its recovery key (keyslot %s, which then no longer opens it) with a new one, written to %s", strings.Join(v.unlock.Recovery, ","), o.RecoveryKeyFile)
		case o.RecoveryKeyFile != "":
			line += "; adds a recovery key, written to " + o.RecoveryKeyFile
		}
		fmt.Fprintln(w, line)
	}
	if o.DryRun {
		fmt.Fprintln(w, "dry run: nothing was changed")
		return nil
	}

	var changed []string // what is done, volume by volume, for a failure's message
	fail := func(err error) error {
		if len(changed) > 0 {
			err = fmt.Errorf("%w; changed before this failure: %s", err, strings.Join(changed, "; "))
		}
		return exit.With(ExitEnroll, err)
	}
	for _, v := range volumes {
		dev := remote.Quote(v.Device)
		gone := ""
		if len(v.unlock.TPM2) > 0 {
			// systemd-cryptenroll enrolls nothing, and exits 0, while a
			// token of the same PCR policy is there, even one a cleared
			// TPM2 can no longer open, and only then wipes what
			// --wipe-slot names. So the old slot goes first, on its own;
			// the password is known to open the volume.
			if out := r.Run(ctx, "systemd-cryptenroll --wipe-slot=tpm2 -- "+dev); out.Err != nil || out.Exit != 0 {
				return fail(fmt.Errorf("%s: systemd-cryptenroll --wipe-slot=tpm2: %s", v.Name, why(out)))
			}
			gone = fmt.Sprintf("; its old TPM2 slot is gone, so it asks for its password at boot until keystone enroll %s succeeds", h.Name)
		}
		out := cryptenroll(ctx, r, v.Device, []string{"--tpm2-device=" + o.TPM2Device, "--tpm2-pcrs=" + o.PCRs}, password)
		if out.Err != nil || out.Exit != 0 {
			return fail(fmt.Errorf("%s: systemd-cryptenroll: %s%s", v.Name, why(out), gone))
		}
		if strings.Contains(out.Stderr, "executing no operation") {
			return fail(fmt.Errorf("%s: systemd-cryptenroll changed nothing: %s%s", v.Name, text.OneLine(out.Stderr), gone))
		}
		for _, l := range strings.Split(out.Stderr, "\n") {
			if strings.Contains(l, "unenforced") {
				// PCRs the firmware never set: the policy binds nothing.
				fmt.Fprintf(w, "warning: systemd-cryptenroll: %s\n", text.OneLine(l))
			}
		}
		fmt.Fprintf(w, "enrolled %s: the TPM2 unlocks it at boot while PCRs %s stay as they are now; the password still does\n", v.Name, o.PCRs)
		changed = append(changed, v.Name+" enrolled for the TPM2")
		if recovery == nil {
			continue
		}
		out = cryptenroll(ctx, r, v.Device, []string{"--recovery-key"}, password)
		key := recoveryKey.FindString(out.Stdout)
		if out.Err != nil || out.Exit != 0 || key == "" {
			return fail(fmt.Errorf("%s: systemd-cryptenroll --recovery-key: %s", v.Name, why(out)))
		}
		// On disk before anything more happens: from here on a keyslot
		// opens with this key, and the file is never removed.
		written = true
		_, err := fmt.Fprintf(recovery, "%s %s\n", v.Name, key)
		if err == nil {
			err = recovery.Sync()
		}
		if err != nil {
			return fail(fmt.Errorf("%s: a recovery key was enrolled but could not be written to %s: %w; remove its keyslot with systemd-cryptenroll --wipe-slot=recovery %s (that also removes any older recovery key)", v.Name, o.RecoveryKeyFile, err, v.Device))
		}
		changed[len(changed)-1] += ", its recovery key in " + o.RecoveryKeyFile
		if old := v.unlock.Recovery; len(old) > 0 {
			// By number: --wipe-slot=recovery would take the new one too.
			if out := r.Run(ctx, "systemd-cryptenroll --wipe-slot="+strings.Join(old, ",")+" -- "+dev); out.Err != nil || out.Exit != 0 {
				return fail(fmt.Errorf("%s: removing the old recovery key (keyslot %s): %s; it still opens the volume: systemd-cryptenroll --wipe-slot=%s %s removes it",
					v.Name, strings.Join(old, ","), why(out), strings.Join(old, ","), v.Device))
			}
			fmt.Fprintf(w, "replaced the recovery key of %s (keyslot %s is gone), written to %s: keep it away from the host\n", v.Name, strings.Join(old, ","), o.RecoveryKeyFile)
			continue
		}
		fmt.Fprintf(w, "added a recovery key to %s, written to %s: keep it away from the host\n", v.Name, o.RecoveryKeyFile)
	}
	if recovery != nil {
		err := recovery.Close()
		recovery = nil
		if err != nil {
			return fail(fmt.Errorf("writing %s: %w", o.RecoveryKeyFile, err))
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

// withPassword runs command with "$f" naming a private file on /run that
// holds the password (remote's RunSecret).
func withPassword(ctx context.Context, r *remote.Runner, command string, password []byte) remote.Output {
	return r.RunSecret(ctx, "keystone-enroll", command, password)
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
