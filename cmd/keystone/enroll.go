package main

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keystone-nix/keystone/enroll"
	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/hint"
)

func enrollCommand() *cli.Command {
	return &cli.Command{
		Name:      "enroll",
		Usage:     "let the host's TPM2 unlock its disks at boot (systemd-cryptenroll over SSH)",
		ArgsUsage: "NAME",
		Description: `Run after the first boot of the installed system: PCRs measured under the
installer or kexec differ from a real boot. Connects with the pinned host key,
checks read-only that the host has a TPM2 and which LUKS volumes its config
marks for one, shows the plan, then adds a TPM2 keyslot to each, unlocking
with the disk password (sent on stdin, kept on the host only in a private
file on /run while systemd-cryptenroll runs). The password slot always stays.

Everything is checked on every volume before anything changes, the password
included (cryptsetup open --test-passphrase). --recovery-key-file adds a
recovery key to each, written to FILE as it is made; with --force it replaces
a volume's recovery key, so the old one stops opening it.

With Secure Boot off (or in setup mode, or no UEFI), PCR 7 records only that
it is off: a policy without a boot-chain PCR (4, 8, 9, 11) unseals the key for
any kernel and initrd, so enroll refuses it unless --accept-unverified-boot.

Exit status: 0 enrolled, 2 cannot connect, 3 refused (nothing changed: no
TPM2, a TPM2 slot or recovery key there already without --force, a password
that does not open a volume, Secure Boot off with PCR 7 alone), 4 systemd-cryptenroll failed (the error says
which volumes were changed before; a recovery key file that holds a key is
kept), 64 bad usage (flags, the password file, --pcrs with 15 or empty).

Examples:
   keystone enroll web1 --disk-password-file ~/secrets/web1
   keystone enroll web1 --disk-password-file pw --pcrs 0+2+7 --recovery-key-file web1.recovery
   keystone enroll web1 --dry-run`,
		OnUsageError: commandUsageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "flake", Value: ".", Usage: "`FLAKE` holding nixosConfigurations.NAME"},
			&cli.StringFlag{Name: "target", Usage: "reach the host at `[USER@]HOST[:PORT]` instead of keystone.deploy.*"},
			&cli.StringSliceFlag{Name: "identity", Aliases: []string{"i"}, Usage: "private key `FILE` to log in with (repeatable; ssh-agent is used too)"},
			&cli.StringFlag{Name: "known-hosts", Usage: "known_hosts `FILE` for a host without a pinned key (default ~/.ssh/known_hosts)"},
			&cli.StringFlag{Name: "disk-password-file", Usage: "the disk password `FILE` (no trailing newline)"},
			&cli.StringFlag{Name: "pcrs", Value: "7", Usage: "`PCRS` the TPM2 policy binds to, such as 7 or 0+2+7"},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing TPM2 slot"},
			&cli.StringFlag{Name: "recovery-key-file", Usage: "also add a recovery key, written to the new `FILE` (mode 0600)"},
			&cli.StringFlag{Name: "tpm2-device", Value: "auto", Usage: "systemd-cryptenroll's --tpm2-device: auto, a `DEVICE`, or a tss2 TCTI"},
			&cli.BoolFlag{Name: "accept-unverified-boot", Usage: "with Secure Boot off, enroll PCRs that measure nothing of the boot chain (7 alone) all the same: the TPM2 then protects a removed disk, not a tampered boot"},
			&cli.BoolFlag{Name: "dry-run", Usage: "check and show the plan; change nothing"},
			&cli.DurationFlag{Name: "timeout", Value: time.Minute, Usage: "limit for each command on the host"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError{hint.Errorf("keystone enroll NAME --disk-password-file FILE", "enroll takes one host name, got %d", c.NArg())}
			}
			o := enroll.Options{PCRs: c.String("pcrs"), Force: c.Bool("force"), PasswordFile: c.String("disk-password-file"),
				RecoveryKeyFile: c.String("recovery-key-file"), DryRun: c.Bool("dry-run"), TPM2Device: c.String("tpm2-device"),
				Timeout: c.Duration("timeout"), AcceptUnverifiedBoot: c.Bool("accept-unverified-boot")}
			if err := o.Check(); err != nil {
				return err
			}
			if o.PasswordFile != "" {
				// Before the flake's evaluation: a bad file is a usage error.
				var err error
				if o.Password, err = enroll.ReadPassword(o.PasswordFile); err != nil {
					return err
				}
			}
			hosts, err := loadFleet(c.Context, fleet.Options{Flake: c.String("flake"), Names: c.Args().Slice(),
				Target: c.String("target"), Identities: nonEmpty(c.StringSlice("identity")), KnownHosts: c.String("known-hosts")}, enroll.ExitRefused)
			if err != nil {
				return err
			}
			return fleet.Named(hosts[0].Name, enroll.Run(c.Context, &hosts[0], o, c.App.Writer))
		},
	}
}
