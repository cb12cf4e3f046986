package main

import (
	"errors"
	"os"
	"os/exec"

	"github.com/urfave/cli/v2"

	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/vm"
)

// vmCommand: the flags of every action are the vm command's own, so that
// intersperse moves them in front of `up NAME`; the actions read them
// through their parent.
func vmCommand() *cli.Command {
	name := func(c *cli.Context) (string, error) {
		if c.NArg() < 1 {
			return "", usageError{hint.Errorf("see keystone vm --help", "%s needs the VM's NAME", c.Command.Name)}
		}
		return c.Args().First(), nil
	}
	act := func(f func(c *cli.Context, dir, name string) error) cli.ActionFunc {
		return func(c *cli.Context) error {
			n, err := name(c)
			if err != nil {
				return err
			}
			return f(c, c.String("flake"), n)
		}
	}
	return &cli.Command{
		Name:      "vm",
		Usage:     "run a local QEMU VM to deploy to: vm up NAME --iso FILE, then deploy and verify",
		ArgsUsage: "up|down|reset|status|console|ssh|destroy|unlock NAME",
		Description: `Each VM keeps its disk, UEFI variables, TPM state, sockets and console log in
.keystone/vm/NAME/ of the flake. Its port 22 is forwarded to 127.0.0.1:PORT,
also after kexec, so deploy and verify take --target root@127.0.0.1:PORT.

--secure-boot starts it with OVMF's Secure Boot firmware and Microsoft's keys
enrolled (Debian's ovmf package ships them): the firmware starts only boot
loaders signed with keys it holds, such as Debian's shim. NixOS's installer
ISO and systemd-boot are not signed by Microsoft, so a NixOS install does not
boot under it unless its boot chain is signed with keys the firmware holds
(lanzaboote signs with your own, which you would enroll first). It is for
seeing what keystone enroll and verify say of a host with Secure Boot on.

Examples:
   keystone vm up web1 --iso result/iso/nixos.iso --tpm
   keystone deploy web1 --target root@127.0.0.1:22420
   keystone vm unlock web1 --disk-password-file pw   # TPM-less boot asks on the console
   keystone vm ssh web1 -- uname -a
   keystone vm down web1`,
		OnUsageError: commandUsageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "flake", Value: ".", Usage: "`DIR` of the flake; state goes in DIR/.keystone/vm"},
			&cli.StringFlag{Name: "iso", Usage: "up: boot installer ISO `FILE` while the disk holds no system"},
			&cli.StringFlag{Name: "image", Usage: "up: start the disk as an overlay on prepared disk image `FILE`"},
			&cli.BoolFlag{Name: "tpm", Usage: "up: give the VM a TPM2 (swtpm); --tpm=false takes it away (default: as last started)"},
			&cli.BoolFlag{Name: "bios", Usage: "up: SeaBIOS instead of UEFI (default: as last started)"},
			&cli.BoolFlag{Name: "secure-boot", Usage: "up: UEFI that enforces Secure Boot, Microsoft's keys enrolled; only signed boot loaders start (default: as last started)"},
			&cli.StringFlag{Name: "memory", Usage: "up: RAM `SIZE` (default 4G, or as last started)"},
			&cli.IntFlag{Name: "cpus", Usage: "up: `N` virtual CPUs (default 2, or as last started)"},
			&cli.StringFlag{Name: "disk-size", Usage: "up: `SIZE` of a new disk (default 20G, or the image's); a larger one grows the disk"},
			&cli.IntFlag{Name: "ssh-port", Usage: "up: forward 127.0.0.1:`PORT` (default: the VM's, or a free one)"},
			&cli.BoolFlag{Name: "fresh", Usage: "up: throw away the disk, UEFI variables and TPM state first"},
			&cli.StringFlag{Name: "accel", Value: "auto", Usage: "up: kvm, tcg or auto (KVM if it really works)"},
			&cli.DurationFlag{Name: "wait", Value: vm.DefaultWait, Usage: "up: how long to wait for SSH; unlock: for the prompt"},
			&cli.StringFlag{Name: "kernel", Hidden: true}, &cli.StringFlag{Name: "initrd", Hidden: true}, &cli.StringFlag{Name: "append", Hidden: true},
			&cli.StringFlag{Name: "format", Value: "table", Usage: "status: table or json"},
			&cli.BoolFlag{Name: "yes", Usage: "destroy: do not ask"},
			&cli.StringFlag{Name: "disk-password-file", Usage: "unlock: type the password in `FILE` at the console's prompt"},
		},
		Subcommands: []*cli.Command{
			{Name: "up", Usage: "start the VM and wait for SSH", Action: act(func(c *cli.Context, dir, n string) error {
				_, err := vm.Up(c.Context, vm.Options{Dir: dir, Name: n, ISO: c.String("iso"), Image: c.String("image"),
					TPM: boolIfSet(c, "tpm"), BIOS: boolIfSet(c, "bios"), SecureBoot: boolIfSet(c, "secure-boot"), Memory: c.String("memory"), CPUs: c.Int("cpus"),
					DiskSize: c.String("disk-size"), SSHPort: c.Int("ssh-port"), Fresh: c.Bool("fresh"), Accel: c.String("accel"),
					Kernel: c.String("kernel"), Initrd: c.String("initrd"), Append: c.String("append"),
					Wait: c.Duration("wait"), Out: c.App.Writer})
				return err
			})},
			{Name: "down", Usage: "power the VM off (ACPI), then stop QEMU", Action: act(func(c *cli.Context, dir, n string) error {
				return vm.Down(c.Context, dir, n, 0, c.App.Writer)
			})},
			{Name: "reset", Usage: "hard-reset the VM", Action: act(func(c *cli.Context, dir, n string) error { return vm.Reset(dir, n) })},
			{Name: "status", Usage: "show one VM or all", Action: func(c *cli.Context) error { return vmStatus(c) }},
			{Name: "console", Usage: "attach to the serial console (Ctrl-] leaves)", Action: act(func(c *cli.Context, dir, n string) error {
				return vm.Console(c.Context, dir, n, os.Stdin, c.App.Writer)
			})},
			{Name: "ssh", Usage: "log in as root: vm ssh NAME [-- CMD...]", Action: act(func(c *cli.Context, dir, n string) error {
				var exit *exec.ExitError
				if err := vm.SSH(c.Context, dir, n, c.Args().Tail()); errors.As(err, &exit) {
					return silentExit(exit.ExitCode())
				} else {
					return err
				}
			})},
			{Name: "destroy", Usage: "stop the VM and remove all its state", Action: act(func(c *cli.Context, dir, n string) error {
				return vm.Destroy(c.Context, dir, n, vm.DestroyOptions{Yes: c.Bool("yes"), In: os.Stdin, Out: c.App.Writer})
			})},
			{Name: "unlock", Usage: "type the disk password at the console's prompt", Action: act(func(c *cli.Context, dir, n string) error {
				if c.String("disk-password-file") == "" {
					return usageError{hint.Errorf("see keystone vm --help", "unlock needs --disk-password-file")}
				}
				return vm.Unlock(c.Context, vm.UnlockOptions{Dir: dir, Name: n, PasswordFile: c.String("disk-password-file"),
					Timeout: c.Duration("wait"), Out: c.App.Writer})
			})},
		},
	}
}

func vmStatus(c *cli.Context) error {
	var infos []*vm.Info
	var err error
	if c.NArg() > 0 {
		var i *vm.Info
		i, err = vm.Status(c.String("flake"), c.Args().First())
		infos = []*vm.Info{i}
	} else {
		infos, err = vm.List(c.String("flake"))
	}
	if err != nil && (c.NArg() > 0 || len(infos) == 0) {
		return err
	}
	// The VMs that could be read are shown even when one could not.
	if err := vm.WriteStatus(c.App.Writer, infos, c.String("format")); err != nil {
		return usageError{err}
	}
	return err
}

// boolIfSet is the flag's value if it was given, nil if not.
func boolIfSet(c *cli.Context, name string) *bool {
	if !c.IsSet(name) {
		return nil
	}
	v := c.Bool(name)
	return &v
}

// silentExit passes a program's exit status on without a message of ours.
type silentExit int

func (e silentExit) Error() string { return "" }
func (e silentExit) ExitCode() int { return int(e) }
