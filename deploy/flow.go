package deploy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/text"
	"github.com/keystone-nix/keystone/unlock"
	"github.com/keystone-nix/keystone/verify"
)

// Exit statuses of deploy, after verify's 0 (verified), 1 (verify
// failed) and 2 (cannot connect).
const (
	ExitRefused  = 3 // pre-flight refused: nothing was changed
	ExitInstall  = 4 // nixos-anywhere failed
	ExitNoReturn = 5 // the host did not come back in time
)

// Options say how to deploy; the hosts say what and where.
type Options struct {
	Yes            bool   // do not ask before wiping
	DryRun         bool   // print the plan and the nixos-anywhere command, change nothing
	Reinstall      bool   // allow wiping a host that is already installed
	PasswordFile   string // the disk password, for the encrypted layouts
	BuildOn        string // auto, local or remote; "" takes keystone.deploy.buildOn
	HardwareConfig bool   // nixos-facter writes vms/NAME/facter.json
	NoVerify       bool
	Wait           time.Duration // for the new system to boot
	Timeout        time.Duration // for the whole nixos-anywhere run
	Parallel       int           // hosts installed at a time
	Extra          []string      // nixos-anywhere's own arguments, after --
	PostKexecPort  int           // where the kexec installer's sshd is reached; 0 takes keystone.deploy.postKexecSSHPort, else 22
	InitrdPort     int           // where the initrd's sshd is reached; 0 takes keystone.unlock.ssh.port
	Program        string        // nixos-anywhere; "" looks it up on PATH
}

// Check refuses what the command line alone shows to be wrong, before any
// evaluation or connection: hosts are the hosts it names.
func (o Options) Check(hosts fleet.Options) error {
	names := hosts.Names
	switch {
	case hosts.All && hosts.Target != "":
		return exit.UsageError(hint.Errorf("set keystone.deploy.targetHost per host", "--target applies to one host, not --all"))
	case len(hosts.Identities) > 1:
		return exit.UsageError(hint.Errorf("pass the one key the target accepts; ssh-agent offers the rest",
			"deploy takes one -i, got %d: nixos-anywhere logs in with a single key file", len(hosts.Identities)))
	case hosts.All && len(names) > 0:
		return exit.UsageError(hint.Errorf("keystone deploy --all [-- NIXOS-ANYWHERE-ARGS...]", "give a host name or --all, not both"))
	case !hosts.All && len(names) == 0:
		return exit.UsageError(hint.Errorf("keystone deploy NAME [-- NIXOS-ANYWHERE-ARGS...]", "deploy needs a host name, or --all"))
	case len(names) > 1:
		return exit.UsageError(hint.Errorf("deploy one host by name, or every host with --all; nixos-anywhere's own flags go after --",
			"deploy takes one host name, got %d: %s", len(names), strings.Join(names, " ")))
	case !slices.Contains([]string{"", "auto", "local", "remote"}, o.BuildOn):
		return exit.UsageError(hint.Errorf("--build-on takes auto, local or remote", "--build-on %q is not supported", o.BuildOn))
	case o.Timeout <= 0 || o.Wait <= 0:
		return exit.UsageError(hint.Errorf("e.g. --timeout 60m --wait 10m", "--timeout and --wait must be more than 0"))
	case o.Parallel < 1:
		return exit.UsageError(hint.Errorf("--parallel 4 installs four hosts at a time", "--parallel must be 1 or more, got %d", o.Parallel))
	case o.InitrdPort < 0 || o.InitrdPort > 65535:
		return exit.UsageError(hint.Errorf("e.g. --initrd-port 2222 for the initrd's sshd behind a forward", "--initrd-port %d is not a port", o.InitrdPort))
	case o.PostKexecPort < 0 || o.PostKexecPort > 65535:
		return exit.UsageError(hint.Errorf("e.g. --post-kexec-ssh-port 2222 for a port forwarded to the host's 22", "--post-kexec-ssh-port %d is not a port", o.PostKexecPort))
	}
	if err := CheckExtra(o.Extra); err != nil {
		return exit.UsageError(err)
	}
	return nil // a bad --target: fleet.Load says so before any evaluation
}

// UI is the person running deploy: the plan, progress and nixos-anywhere's
// output are written to it, warnings go to Warn, and Ask reads the typed
// confirmation.
type UI interface {
	io.Writer
	Warn(msg string)
	// Ask shows question and returns the line typed in answer, or
	// ErrNoTerminal when nobody can answer.
	Ask(question string) (string, error)
}

// ErrNoTerminal is Ask's answer when there is no terminal to ask on.
var ErrNoTerminal = errors.New("no terminal")

func refused(err error) error { return exit.With(ExitRefused, err) }

// plan is one host, checked and ready to install.
type plan struct {
	host    *fleet.Host
	expect  *verify.Expectations
	facts   *Facts
	hostKey ssh.PublicKey // what the target answered with in pre-flight
	install Install
	nic     NIC // the card the target was reached through
}

func (p *plan) name() string { return p.host.Name }

// Run deploys hosts: pre-flight every one, show the plans, confirm once,
// then install (o.Parallel at a time), pin, wait and verify each. Several
// hosts' errors come back joined, one a host.
func Run(ctx context.Context, hosts []fleet.Host, o Options, ui UI) error {
	program := o.Program
	if program == "" {
		var err error
		if program, err = exec.LookPath("nixos-anywhere"); err != nil && !o.DryRun {
			return refused(hint.Errorf("run keystone through `nix run .#deploy`, which brings it, or install nixos-anywhere",
				"nixos-anywhere is not on PATH"))
		}
	}
	for _, h := range hosts {
		for _, id := range h.Identities {
			if err := CheckIdentity(id); err != nil {
				return refused(err)
			}
		}
	}
	secret := ""
	if o.PasswordFile != "" {
		pf, err := OpenPasswordFile(o.PasswordFile)
		if err != nil {
			return refused(err)
		}
		defer pf.Remove()
		if pf.OthersCanRead {
			ui.Warn(fmt.Sprintf("--disk-password-file %s can be read by other users; chmod 600 it", o.PasswordFile))
		}
		secret = pf.Path
		if o.DryRun {
			secret = o.PasswordFile // what the printed command can be run with
		}
	}

	// Pre-flight every host before anything changes anywhere.
	plans := make([]*plan, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Go(func() {
			plans[i], errs[i] = preflight(ctx, &hosts[i], o, secret)
			errs[i] = named(hosts[i].Name, errs[i])
		})
	}
	wg.Wait()
	if err := joined(errs); err != nil {
		return err
	}
	for _, p := range plans {
		printPlan(ui, p, o)
	}
	if o.DryRun {
		for _, p := range plans {
			words := shellWords(p.install.Argv())
			for i, w := range words {
				if w == extraFilesPlaceholder {
					words[i] = `"$EXTRA_FILES"`
				}
			}
			fmt.Fprintf(ui, "\n# EXTRA_FILES: a folder holding etc/ssh/ssh_host_ed25519_key (and the initrd's key, with keystone.unlock.ssh), which deploy makes new for the install\nnixos-anywhere %s\n",
				strings.Join(words, " "))
		}
		fmt.Fprintln(ui, "dry run: nothing was changed")
		return nil
	}
	if err := confirm(ui, plans, o.Yes); err != nil {
		return err
	}

	sem := make(chan struct{}, max(o.Parallel, 1))
	for i, p := range plans {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			prefix := ""
			if len(plans) > 1 {
				prefix = "[" + p.name() + "] "
			}
			errs[i] = named(p.name(), install(ctx, program, p, o, ui, prefix))
		})
	}
	wg.Wait()
	return joined(errs)
}

// named puts the host's name in front of err, once.
func named(name string, err error) error {
	var he *fleet.HostError
	if err == nil || errors.As(err, &he) {
		return err
	}
	return exit.With(exit.Code(err), fleet.Named(name, err))
}

// joined is the one error there is, or several joined: the CLI shows each
// on its own line and exits with the worst status.
func joined(errs []error) error {
	var failed []error
	for _, err := range errs {
		if err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) == 1 {
		return failed[0]
	}
	return errors.Join(failed...)
}

func preflight(ctx context.Context, h *fleet.Host, o Options, secret string) (*plan, error) {
	if h.Err != nil {
		return nil, refused(h.Err)
	}
	cfg := &h.Config
	p := &plan{host: h}
	var err error
	if p.expect, err = verify.ParseExpectations(cfg.Verify.Expectations); err != nil {
		return nil, refused(err)
	}
	switch {
	case cfg.Deploy.DiskSecret && o.PasswordFile == "":
		return nil, refused(hint.Errorf("pass --disk-password-file FILE with the password the boot will ask for",
			"the disk layout is encrypted and reads its password at install time"))
	case !cfg.Deploy.DiskSecret && o.PasswordFile != "":
		// Someone who believes the disk will be encrypted must learn it will not.
		return nil, refused(hint.Errorf("drop --disk-password-file, or render the host with --layout zfs-encrypted or luks",
			"the disk layout reads no password: its disks would not be encrypted with it"))
	case len(cfg.Deploy.Disks) == 0:
		return nil, refused(hint.Errorf("import a disko layout (new-host renders disk-config.nix)", "no disko disks"))
	case o.HardwareConfig && fleet.HostDir(h.Flake, h.Name) == "":
		// nixos-facter's report would land here, where that flake never looks.
		return nil, refused(hint.Errorf("run deploy in a checkout of the flake: --flake PATH",
			"--hardware-config needs a flake in a local folder, not %s: the flake would never see vms/%s/facter.json", h.Flake, h.Name))
	}

	// Trust on first use: the installer's key is new every boot. The key is
	// shown in the plan and compared with the pinned one.
	client, err := sshx.Dial(ctx, sshx.Options{Addr: h.Target.Addr(), User: h.Target.User,
		Identities: h.Identities, HostKeys: sshx.HostKeys{Insecure: true}})
	if err != nil {
		return nil, exit.With(verify.ExitCannotReach, err)
	}
	defer client.Close()
	p.hostKey = client.HostKey
	r := remote.New(client.Client, h.Target.User != "root", 30*time.Second)
	if p.facts, err = Gather(ctx, r, cfg.Deploy.Disks); err != nil {
		return nil, exit.With(verify.ExitCannotReach, fmt.Errorf("pre-flight: %w", err))
	}
	policy := Policy{Reinstall: o.Reinstall, MinDiskBytes: map[string]int64{}, Extra: o.Extra}
	if z := p.expect.ZFS; z != nil {
		for _, t := range z.Topology {
			policy.Redundant = policy.Redundant || (t.Vdev != "single" && t.Vdev != "stripe")
		}
	}
	if pinned, err := sshx.ReadPinned(h.PinFile); err == nil {
		policy.PinnedKey = string(pinned.Marshal()) == string(client.HostKey.Marshal())
	}
	for disk, sizes := range cfg.Deploy.PartitionSizes {
		n, err := MinDiskBytes(sizes)
		if err != nil {
			return nil, refused(hint.Wrap(fmt.Errorf("disk %s: %w", disk, err),
				"disko sizes are a number with K, M, G, T or P, or a percentage; fix disk-config.nix"))
		}
		policy.MinDiskBytes[disk] = n
	}
	if refusals := Judge(p.facts, policy); len(refusals) > 0 {
		var lines []string
		for _, r := range refusals {
			lines = append(lines, r.What)
		}
		return nil, refused(hint.Wrap(fmt.Errorf("refused, nothing was changed: %s", strings.Join(lines, "; ")), refusals[0].Hint))
	}
	if cfg.Unlock.SSH.Enable {
		if err := CheckInitrdKeyPath(cfg.Unlock.SSH.HostKey); err != nil {
			return nil, refused(err)
		}
		if p.nic, err = ReadNIC(ctx, r); err != nil {
			return nil, exit.With(verify.ExitCannotReach, fmt.Errorf("pre-flight: %w", err))
		}
		if r := JudgeNIC(p.nic, *cfg, o.HardwareConfig); r != nil {
			return nil, refused(hint.Wrap(fmt.Errorf("refused, nothing was changed: %s", r.What), r.Hint))
		}
	}

	p.install = Install{
		Flake: h.Flake, Name: h.Name, Target: h.Target, Identity: first(h.Identities),
		BuildOn: cmp.Or(o.BuildOn, cfg.Deploy.BuildOn), DiskSecret: secret, Extra: o.Extra,
		ExtraFiles: extraFilesPlaceholder, PostKexecPort: o.PostKexecPort,
	}
	if p.install.PostKexecPort == 0 && cfg.Deploy.PostKexecSSHPort != nil {
		p.install.PostKexecPort = *cfg.Deploy.PostKexecSSHPort
	}
	// nixos-anywhere goes where pre-flight looked, whatever a name
	// resolves to later or ~/.ssh/config says.
	if addr, ok := client.RemoteAddr().(*net.TCPAddr); ok {
		p.install.HostAddr = addr.IP.String()
	}
	if o.HardwareConfig {
		p.install.HardwareConfig = filepath.Join(filepath.Dir(h.PinFile), "facter.json")
	}
	return p, nil
}

func first(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	return ss[0]
}

func printPlan(w io.Writer, p *plan, o Options) {
	f := p.facts
	// Whatever answers at the target wrote these: no escape sequence of
	// its may redraw the lines the user confirms.
	q := text.OneLine
	system := q(cmp.Or(f.OS["PRETTY_NAME"], f.OS["ID"]))
	if f.Installer() {
		system += " (installer)"
	}
	fmt.Fprintf(w, "Plan for %s:\n", p.name())
	fmt.Fprintf(w, "  target     %s: %s, %s, %s RAM\n", p.host.Target.String(), system, q(f.Arch), gib(f.MemTotal))
	fmt.Fprintf(w, "  host key   %s (check it on the console if in doubt)\n", ssh.FingerprintSHA256(p.hostKey))
	for _, d := range f.Disks {
		fmt.Fprintf(w, "  WIPE       %s -> %s, %s, %s, serial %s\n", q(d.Path), q(d.Resolved), gib(d.Size),
			q(cmp.Or(d.Model, "unknown model")), q(cmp.Or(d.Serial, "none")))
	}
	if z := p.expect.ZFS; z != nil && len(f.Disks) > 1 {
		for _, pool := range z.Pools {
			t, ok := z.Topology[pool]
			if !ok || t.Disks < 2 {
				continue
			}
			small := Smallest(f.Disks)
			share := fmt.Sprintf("the smallest disk, %s (%s), sets each disk's share", q(small.Path), gib(small.Size))
			if t.Vdev == "stripe" {
				share = "no redundancy: one failed disk loses the pool"
			}
			fmt.Fprintf(w, "  pool       %s: %s of %d disks; %s\n", q(pool), t.Vdev, t.Disks, share)
		}
	}
	layout := "unencrypted"
	if p.host.Config.Deploy.DiskSecret {
		layout = "encrypted, password from " + q(o.PasswordFile)
	}
	fmt.Fprintf(w, "  layout     %s\n", layout)
	fmt.Fprintf(w, "  build on   %s\n", cmp.Or(p.install.BuildOn, "auto"))
	if u := p.host.Config.Unlock.SSH; u.Enable {
		reached := ""
		if o.InitrdPort != 0 && o.InitrdPort != u.Port {
			reached = " (reached at " + net.JoinHostPort(p.host.Target.Host, strconv.Itoa(o.InitrdPort)) + ")"
		}
		fmt.Fprintf(w, "  unlock     the initrd's sshd on port %d%s, its own new key at %s, pinned in %s; network card %s (%s)\n",
			u.Port, reached, q(u.HostKey), initrdPin(p.host), q(cmp.Or(p.nic.Interface, "unknown")), q(cmp.Or(p.nic.Module, p.nic.Driver, "no module")))
	}
	if p.install.HardwareConfig != "" {
		fmt.Fprintf(w, "  hardware   nixos-facter writes %s before the build; mkHosts makes it hardware.facter.reportPath\n", p.install.HardwareConfig)
	}
	fmt.Fprintf(w, "  then       pin the new host key in %s, wait up to %s for the new boot, ", p.host.PinFile, o.Wait)
	if o.NoVerify {
		fmt.Fprintln(w, "no verify")
	} else {
		fmt.Fprintln(w, "verify")
	}
}

func gib(n int64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }

// confirm asks for the host names to be typed; yes skips it, and without
// a terminal it refuses.
func confirm(ui UI, plans []*plan, yes bool) error {
	if yes {
		return nil
	}
	var names []string
	for _, p := range plans {
		names = append(names, p.name())
	}
	line, err := ui.Ask(fmt.Sprintf("\nThis wipes the disks above. Type %s to go on: ", strings.Join(names, " ")))
	if errors.Is(err, ErrNoTerminal) {
		return refused(hint.Errorf("run it in a terminal, or pass --yes to skip the question",
			"no terminal to confirm on, and wiping disks needs a confirmation; nothing was changed"))
	}
	typed := strings.Fields(line)
	slices.Sort(typed)
	slices.Sort(names)
	if err != nil || !slices.Equal(typed, names) {
		return refused(hint.Errorf("run deploy again and type the host name exactly", "confirmation did not match; nothing was changed"))
	}
	return nil
}

func install(ctx context.Context, program string, p *plan, o Options, w io.Writer, prefix string) error {
	name := p.name()
	key, err := NewHostKey("root@" + name)
	if err != nil {
		return err
	}
	defer key.Remove()
	p.install.ExtraFiles = key.ExtraFiles
	fmt.Fprintf(w, "%sthe new system's host key is %s\n", prefix, ssh.FingerprintSHA256(key.Public))
	var initrdKey *InitrdKey
	if u := p.host.Config.Unlock.SSH; u.Enable {
		if initrdKey, err = key.AddInitrdKey(u.HostKey, "root@"+name+"-initrd"); err != nil {
			return err
		}
		fmt.Fprintf(w, "%sthe initrd's host key is %s\n", prefix, ssh.FingerprintSHA256(initrdKey.Public))
	}

	runCtx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var progress Progress
	err = RunInstall(runCtx, program, p.install, w, prefix, &progress)
	key.Remove() // installed or not, the private key has no other use
	// The pin follows the host: replaced only once the new key may be there,
	// so a run that stopped early leaves verify trusting the old one.
	if err == nil || progress.MayHaveNewKey() {
		if perr := pinKey(p.host.PinFile, key.AuthorizedLine("root@"+name)); perr != nil {
			if err != nil {
				return exit.With(ExitInstall, fmt.Errorf("%w; and pinning its new host key failed: %v", err, perr))
			}
			return fmt.Errorf("installed, but pinning its new host key failed: %w", perr)
		}
		fmt.Fprintf(w, "%spinned the new host key in %s\n", prefix, p.host.PinFile)
		if initrdKey != nil {
			if perr := pinKey(initrdPin(p.host), initrdKey.Line("root@"+name+"-initrd")); perr != nil {
				return exit.With(ExitInstall, fmt.Errorf("installed, but pinning the initrd's host key failed: %w", perr))
			}
			fmt.Fprintf(w, "%spinned the initrd's host key in %s\n", prefix, initrdPin(p.host))
		}
	}
	if err != nil {
		return exit.With(ExitInstall, err)
	}

	pinned := sshx.Options{Addr: p.host.Target.Addr(), User: p.host.Target.User, Identities: p.host.Identities,
		HostKeys: sshx.HostKeys{Pinned: key.Public, PinnedFrom: p.host.PinFile}}
	fmt.Fprintf(w, "%swaiting up to %s for %s to boot its new system\n", prefix, o.Wait, name)
	encrypted := p.host.Config.Deploy.DiskSecret
	switch {
	case encrypted && initrdKey != nil:
		// The first boot asks for the password: nothing is enrolled yet.
		fmt.Fprintf(w, "%sanswering %s's disk password request over its initrd's SSH\n", prefix, name)
		if err := unlockFirstBoot(ctx, p, initrdKey, pinned, o, w, prefix); err != nil {
			return err
		}
	case encrypted:
		// Both encrypted layouts ask on the console at boot; nothing else can answer.
		fmt.Fprintf(w, "%s%s asks for its disk password on its console at boot: type it there\n", prefix, name)
	}
	if err := WaitForNewBoot(ctx, pinned, p.expect.Hostname, p.facts.BootID, o.Wait); err != nil {
		next := "look at its console; then run keystone verify " + name + " --wait 10m"
		if encrypted {
			next = "look at its console: it may be waiting for the disk password; then run keystone verify " + name + " --wait 10m"
		}
		return exit.With(ExitNoReturn, hint.Wrap(err, next))
	}
	fmt.Fprintf(w, "%s%s is up with its new system\n", prefix, name)
	if o.NoVerify {
		return nil
	}
	// The system was just built: the host must run exactly it.
	rep := verify.Run(ctx, p.expect, verify.Options{Name: name, SSH: pinned, Wait: time.Minute, System: p.host.Config.System,
		InitrdPin: verify.InitrdPin(p.host.PinFile)})
	verify.WriteTable(w, []verify.Report{rep})
	if code := rep.ExitCode(); code != 0 {
		return exit.With(code, errors.New("installed, but verify failed"))
	}
	if rep.Status("tpm") == verify.Warn {
		// A TPM2 and a layout for one, not enrolled yet: until then the
		// boot asks for the password.
		fmt.Fprintf(w, "%snext: keystone enroll %s --disk-password-file FILE, so that its TPM2 unlocks the disks at boot\n", prefix, name)
	}
	return nil
}

// initrdPin is where the initrd's host key is pinned, beside the main key.
func initrdPin(h *fleet.Host) string {
	return filepath.Join(filepath.Dir(h.PinFile), unlock.PinName)
}

// unlockFirstBoot answers the first boot's password request with
// --disk-password-file, over the initrd's SSH pinned to its new key.
func unlockFirstBoot(ctx context.Context, p *plan, key *InitrdKey, system sshx.Options, o Options, w io.Writer, prefix string) error {
	// DiskSecret, not the user's path: a pipe's contents were read once,
	// into a private copy.
	password, err := unlock.FilePassword(p.install.DiskSecret)
	if err != nil {
		return refused(err)
	}
	initrd := system
	initrd.Addr = net.JoinHostPort(p.host.Target.Host, strconv.Itoa(cmp.Or(o.InitrdPort, p.host.Config.Unlock.SSH.Port)))
	initrd.User = "root"
	initrd.HostKeys = sshx.HostKeys{Pinned: key.Public, PinnedFrom: initrdPin(p.host)}
	t := unlock.Target{Name: p.name(), Hostname: p.expect.Hostname, Initrd: initrd, System: system}
	_, err = unlock.Run(ctx, t, unlock.Options{Password: password, Wait: o.Wait}, prefixed{w, prefix})
	if err != nil {
		return hint.Wrap(err, "look at its console; keystone unlock "+p.name()+" answers the request again, then keystone verify "+p.name())
	}
	return nil
}

// prefixed writes each line with prefix, for several hosts at once.
type prefixed struct {
	w      io.Writer
	prefix string
}

func (p prefixed) Write(b []byte) (int, error) {
	if p.prefix == "" {
		return p.w.Write(b)
	}
	lines := strings.SplitAfter(string(b), "\n")
	for _, l := range lines {
		if l != "" {
			io.WriteString(p.w, p.prefix+l)
		}
	}
	return len(b), nil
}

// pinKey writes the host's public key next to its configuration, and tells
// git about it so the flake sees it.
func pinKey(path string, line []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, line, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if git, err := exec.LookPath("git"); err == nil {
		exec.Command(git, "-C", filepath.Dir(path), "add", "--intent-to-add", "--", filepath.Base(path)).Run()
	}
	return nil
}

// extraFilesPlaceholder stands for the host key folder until the install
// makes it.
const extraFilesPlaceholder = "EXTRA_FILES"

// shellWords quotes argv for display only.
func shellWords(argv []string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`;&|<>(){}*?#~") {
			a = remote.Quote(a)
		}
		out[i] = a
	}
	return out
}
