package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/keystone-nix/keystone/deploy"
	"github.com/keystone-nix/keystone/internal/flake"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/target"
	"github.com/keystone-nix/keystone/internal/text"
	"github.com/keystone-nix/keystone/verify"
)

// deploy's exit codes, after verify's 0, 1 and 2.
const (
	exitRefused    = 3
	exitInstall    = 4
	exitNoReturn   = 5
	defaultWait    = 10 * time.Minute
	defaultTimeout = 60 * time.Minute
)

type codeError struct {
	error
	code int
}

func (e codeError) ExitCode() int { return e.code }
func (e codeError) Unwrap() error { return e.error }

func refused(err error) error { return codeError{err, exitRefused} }

// errReported is an error already shown in a report: nothing more to print.
var errReported = errors.New("")

func deployCommand() *cli.Command {
	return &cli.Command{
		Name:      "deploy",
		Usage:     "install a host with nixos-anywhere after read-only pre-flight checks",
		ArgsUsage: "NAME [-- NIXOS-ANYWHERE-ARGS...]",
		Description: `Reads the host's target and disks from one nix eval of
nixosConfigurations.NAME.config.keystone, checks the target over SSH without
changing it (a live installer or a Linux nixos-anywhere can kexec; every disk
present, big enough and not the running system), prints the plan, and asks
you to type the host name. Then it makes the host's SSH key, installs with
nixos-anywhere, pins the key in vms/NAME/ssh_host_ed25519_key.pub, waits for
the new system to boot, and verifies it.

Exit status: 0 verified, 1 verify failed, 2 cannot connect, 3 pre-flight
refused (nothing changed), 4 nixos-anywhere failed, 5 the host did not come
back in time, 64 bad usage.

Examples:
   keystone deploy web1
   keystone deploy web1 --target root@192.0.2.10 --disk-password-file ~/secrets/web1.pw
   keystone deploy web1 --dry-run
   keystone deploy --all --parallel 4 --yes --disk-password-file pw
   keystone deploy web1 -- --print-build-logs`,
		OnUsageError: commandUsageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "flake", Value: ".", Usage: "`FLAKE` holding nixosConfigurations.NAME"},
			&cli.StringFlag{Name: "target", Usage: "install at `[USER@]HOST[:PORT]` instead of keystone.deploy.*"},
			&cli.StringSliceFlag{Name: "identity", Aliases: []string{"i"}, Usage: "private key `FILE` to log in with (once: nixos-anywhere takes one; ssh-agent is used too)"},
			&cli.BoolFlag{Name: "yes", Usage: "do not ask for the host name before wiping"},
			&cli.BoolFlag{Name: "dry-run", Usage: "check and print the plan and the nixos-anywhere command; change nothing"},
			&cli.BoolFlag{Name: "reinstall", Usage: "allow wiping a host that is already installed"},
			&cli.StringFlag{Name: "disk-password-file", Usage: "disk encryption password `FILE` (no trailing newline)"},
			&cli.StringFlag{Name: "build-on", Usage: "where to build: auto, local or remote (default: keystone.deploy.buildOn)"},
			&cli.BoolFlag{Name: "hardware-config", Usage: "write vms/NAME/facter.json with nixos-facter during the install"},
			&cli.BoolFlag{Name: "no-verify", Usage: "do not verify the host after it comes back"},
			&cli.DurationFlag{Name: "wait", Value: defaultWait, Usage: "how long to wait for the new system to boot"},
			&cli.DurationFlag{Name: "timeout", Value: defaultTimeout, Usage: "limit for the whole nixos-anywhere run"},
			&cli.BoolFlag{Name: "all", Usage: "install every host of the flake"},
			&cli.IntFlag{Name: "parallel", Value: 1, Usage: "with --all, install `N` hosts at a time"},
			&cli.StringFlag{Name: "config", Hidden: true, Usage: "read config.keystone from JSON `FILE` instead of nix eval (tests)"},
		},
		Action: func(c *cli.Context) error {
			names, extra := c.Args().Slice(), []string(nil)
			if i := slices.Index(names, "--"); i >= 0 {
				names, extra = names[:i], names[i+1:]
			}
			o := deployOptions{
				Names: names, Extra: extra, Flake: c.String("flake"), Target: c.String("target"),
				Identities: nonEmpty(c.StringSlice("identity")), Yes: c.Bool("yes"), DryRun: c.Bool("dry-run"), Reinstall: c.Bool("reinstall"),
				PasswordFile: c.String("disk-password-file"), BuildOn: c.String("build-on"),
				HardwareConfig: c.Bool("hardware-config"), NoVerify: c.Bool("no-verify"),
				Wait: c.Duration("wait"), Timeout: c.Duration("timeout"), All: c.Bool("all"),
				Parallel: c.Int("parallel"), Config: c.String("config"),
			}
			if err := o.check(); err != nil {
				return err
			}
			return runDeploy(c.Context, os.Stdin, c.App.Writer, c.App.ErrWriter, o)
		},
	}
}

// check refuses what the command line alone shows to be wrong.
func (o deployOptions) check() error {
	names := o.Names
	switch {
	case o.All && o.Target != "":
		return usageError{hint.Errorf("set keystone.deploy.targetHost per host", "--target applies to one host, not --all")}
	case len(o.Identities) > 1:
		return usageError{hint.Errorf("pass the one key the target accepts; ssh-agent offers the rest",
			"deploy takes one -i, got %d: nixos-anywhere logs in with a single key file", len(o.Identities))}
	case o.All && len(names) > 0:
		return usageError{hint.Errorf("keystone deploy --all [-- NIXOS-ANYWHERE-ARGS...]", "give a host name or --all, not both")}
	case !o.All && len(names) == 0:
		return usageError{hint.Errorf("keystone deploy NAME [-- NIXOS-ANYWHERE-ARGS...]", "deploy needs a host name, or --all")}
	case len(names) > 1:
		return usageError{hint.Errorf("deploy one host by name, or every host with --all; nixos-anywhere's own flags go after --",
			"deploy takes one host name, got %d: %s", len(names), strings.Join(names, " "))}
	case !slices.Contains([]string{"", "auto", "local", "remote"}, o.BuildOn):
		return usageError{hint.Errorf("--build-on takes auto, local or remote", "--build-on %q is not supported", o.BuildOn)}
	case o.Timeout <= 0 || o.Wait <= 0:
		return usageError{hint.Errorf("e.g. --timeout 60m --wait 10m", "--timeout and --wait must be more than 0")}
	case o.Parallel < 1:
		return usageError{hint.Errorf("--parallel 4 installs four hosts at a time", "--parallel must be 1 or more, got %d", o.Parallel)}
	}
	if o.Target != "" {
		if _, err := target.Parse(o.Target); err != nil {
			return usageError{err}
		}
	}
	return nil
}

type deployOptions struct {
	Names                    []string
	Flake, Target            string
	Identities               []string // at most one: nixos-anywhere's -i
	Yes, DryRun, Reinstall   bool
	PasswordFile, BuildOn    string
	HardwareConfig, NoVerify bool
	Wait, Timeout            time.Duration
	All                      bool
	Parallel                 int
	Config                   string
	Extra                    []string

	secret string // the password file nixos-anywhere reads: PasswordFile, or a private copy of a pipe's
}

// hostPlan is one host, checked and ready to install.
type hostPlan struct {
	name     string
	cfg      *flake.Keystone
	expect   *verify.Expectations
	target   target.Target
	facts    *deploy.Facts
	hostKey  ssh.PublicKey // what the target answered with in pre-flight
	install  deploy.Install
	pinned   string // vms/NAME/ssh_host_ed25519_key.pub
	hostname string
}

func runDeploy(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, o deployOptions) error {
	program, err := exec.LookPath("nixos-anywhere")
	if err != nil && !o.DryRun {
		return refused(hint.Errorf("run keystone through `nix run .#deploy`, which brings it, or install nixos-anywhere",
			"nixos-anywhere is not on PATH"))
	}
	if o.PasswordFile != "" {
		pf, err := deploy.OpenPasswordFile(o.PasswordFile)
		if err != nil {
			return refused(err)
		}
		defer pf.Remove()
		if pf.OthersCanRead {
			fmt.Fprintf(stderr, "keystone: warning: --disk-password-file %s can be read by other users; chmod 600 it\n", o.PasswordFile)
		}
		o.secret = pf.Path
		if o.DryRun {
			o.secret = o.PasswordFile // what the printed command can be run with
		}
	}
	names := o.Names
	if o.All {
		if names, err = flake.Names(ctx, o.Flake); err != nil {
			return refused(err)
		}
	}

	// Pre-flight every host before anything changes anywhere.
	plans := make([]*hostPlan, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			plans[i], errs[i] = preflight(ctx, name, o)
		}()
	}
	wg.Wait()
	if err := reportEach(stderr, errs); err != nil {
		return err
	}
	for _, p := range plans {
		printPlan(stdout, p, o)
	}
	if o.DryRun {
		for _, p := range plans {
			words := shellWords(p.install.Argv())
			for i, w := range words {
				if w == extraFilesPlaceholder {
					words[i] = `"$EXTRA_FILES"`
				}
			}
			fmt.Fprintf(stdout, "\n# EXTRA_FILES: a folder holding etc/ssh/ssh_host_ed25519_key, which deploy makes new for the install\nnixos-anywhere %s\n",
				strings.Join(words, " "))
		}
		fmt.Fprintln(stdout, "dry run: nothing was changed")
		return nil
	}
	if err := confirm(stdin, stdout, plans, o.Yes); err != nil {
		return err
	}

	sem := make(chan struct{}, o.Parallel)
	codes := make([]error, len(plans))
	for i, p := range plans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			prefix := ""
			if len(plans) > 1 {
				prefix = "[" + p.name + "] "
			}
			codes[i] = install(ctx, program, p, o, stdout, prefix)
		}()
	}
	wg.Wait()
	return reportEach(stderr, codes)
}

// reportEach returns the one error there is, or reports each of several
// (one host each) and returns the worst exit code.
func reportEach(stderr io.Writer, errs []error) error {
	var failed []error
	for _, err := range errs {
		if err != nil {
			failed = append(failed, err)
		}
	}
	switch len(failed) {
	case 0:
		return nil
	case 1:
		return failed[0]
	}
	for _, err := range failed {
		report(stderr, err)
	}
	return codeError{errReported, worstCode(failed)}
}

// worstCode is the highest exit code among errs; 0 when none failed.
func worstCode(errs []error) int {
	code := 0
	for _, err := range errs {
		if err != nil {
			code = max(code, exitCodeOf(err))
		}
	}
	return code
}

func preflight(ctx context.Context, name string, o deployOptions) (*hostPlan, error) {
	cfg, err := readKeystone(ctx, o, name)
	if err != nil {
		return nil, refused(err)
	}
	p := &hostPlan{name: name, cfg: cfg}
	if p.expect, err = verify.ParseExpectations(cfg.Verify.Expectations); err != nil {
		return nil, refused(fmt.Errorf("%s: %w", name, err))
	}
	p.hostname = p.expect.Hostname
	switch {
	case o.Target != "":
		t, err := target.Parse(o.Target)
		if err != nil {
			return nil, usageError{err}
		}
		p.target = *t
	default:
		t, err := configTarget(name, cfg)
		if err != nil {
			return nil, refused(err)
		}
		p.target = *t
	}
	switch {
	case cfg.Deploy.DiskSecret && o.PasswordFile == "":
		return nil, refused(hint.Errorf("pass --disk-password-file FILE with the password the boot will ask for",
			"%s's disk layout is encrypted and reads its password at install time", name))
	case !cfg.Deploy.DiskSecret && o.PasswordFile != "":
		// Someone who believes the disk will be encrypted must learn it will not.
		return nil, refused(hint.Errorf("drop --disk-password-file, or render the host with --layout zfs-encrypted or luks",
			"%s's disk layout reads no password: its disks would not be encrypted with it", name))
	}
	if len(cfg.Deploy.Disks) == 0 {
		return nil, refused(hint.Errorf("import a disko layout (new-host renders disk-config.nix)", "%s has no disko disks", name))
	}
	dir := flake.HostDir(o.Flake, name)
	if dir == "" {
		// A remote flake: the pin goes where a local checkout would have it.
		dir = filepath.Join("vms", name)
	}
	p.pinned = filepath.Join(dir, flake.PinnedKeyFile)

	// Trust on first use: the installer's key is new every boot. The key is
	// shown in the plan and compared with the pinned one.
	client, err := sshx.Dial(ctx, sshx.Options{Addr: p.target.Addr(), User: p.target.User,
		Identities: o.Identities, HostKeys: sshx.HostKeys{Insecure: true}})
	if err != nil {
		return nil, codeError{fmt.Errorf("%s: %w", name, err), verify.ExitCannotReach}
	}
	defer client.Close()
	p.hostKey = client.HostKey
	r := remote.New(client.Client, p.target.User != "root", 30*time.Second)
	if p.facts, err = deploy.Gather(ctx, r, cfg.Deploy.Disks); err != nil {
		return nil, codeError{fmt.Errorf("%s: pre-flight: %w", name, err), verify.ExitCannotReach}
	}
	policy := deploy.Policy{Reinstall: o.Reinstall, MinDiskBytes: map[string]int64{}}
	if pinned, err := sshx.ReadPinned(p.pinned); err == nil {
		policy.PinnedKey = string(pinned.Marshal()) == string(client.HostKey.Marshal())
	}
	for disk, sizes := range cfg.Deploy.PartitionSizes {
		n, err := deploy.MinDiskBytes(sizes)
		if err != nil {
			return nil, refused(hint.Wrap(fmt.Errorf("%s: disk %s: %w", name, disk, err),
				"disko sizes are a number with K, M, G, T or P, or a percentage; fix disk-config.nix"))
		}
		policy.MinDiskBytes[disk] = n
	}
	if refusals := deploy.Judge(p.facts, policy); len(refusals) > 0 {
		var lines []string
		for _, r := range refusals {
			lines = append(lines, r.What)
		}
		return nil, refused(hint.Wrap(fmt.Errorf("%s: refused, nothing was changed: %s", name, strings.Join(lines, "; ")), refusals[0].Hint))
	}

	buildOn := o.BuildOn
	if buildOn == "" {
		buildOn = cfg.Deploy.BuildOn
	}
	p.install = deploy.Install{
		Flake: o.Flake, Name: name, Target: p.target, Identity: first(o.Identities), BuildOn: buildOn,
		DiskSecret: o.secret, Extra: o.Extra,
	}
	if o.HardwareConfig {
		p.install.HardwareConfig = filepath.Join(filepath.Dir(p.pinned), "facter.json")
	}
	p.install.ExtraFiles = extraFilesPlaceholder
	return p, nil
}

func readKeystone(ctx context.Context, o deployOptions, name string) (*flake.Keystone, error) {
	if o.Config == "" {
		return flake.Host(ctx, o.Flake, name)
	}
	data, err := os.ReadFile(o.Config)
	if err != nil {
		return nil, err
	}
	var k flake.Keystone
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", o.Config, err)
	}
	return &k, nil
}

func first(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	return ss[0]
}

func printPlan(w io.Writer, p *hostPlan, o deployOptions) {
	f := p.facts
	// Whatever answers at the target wrote these: no escape sequence of
	// its may redraw the lines the user confirms.
	q := text.OneLine
	system := q(cmp.Or(f.OS["PRETTY_NAME"], f.OS["ID"]))
	if f.Installer() {
		system += " (installer)"
	}
	fmt.Fprintf(w, "Plan for %s:\n", p.name)
	fmt.Fprintf(w, "  target     %s: %s, %s, %s RAM\n", p.target.String(), system, q(f.Arch), gib(f.MemTotal))
	fmt.Fprintf(w, "  host key   %s (check it on the console if in doubt)\n", ssh.FingerprintSHA256(p.hostKey))
	for _, d := range f.Disks {
		fmt.Fprintf(w, "  WIPE       %s -> %s, %s, %s, serial %s\n", q(d.Path), q(d.Resolved), gib(d.Size),
			q(cmp.Or(d.Model, "unknown model")), q(cmp.Or(d.Serial, "none")))
	}
	layout := "unencrypted"
	if p.cfg.Deploy.DiskSecret {
		layout = "encrypted, password from " + q(o.PasswordFile)
	}
	fmt.Fprintf(w, "  layout     %s\n", layout)
	fmt.Fprintf(w, "  build on   %s\n", cmp.Or(p.install.BuildOn, "auto"))
	if p.install.HardwareConfig != "" {
		fmt.Fprintf(w, "  hardware   nixos-facter writes %s before the build; mkHosts makes it hardware.facter.reportPath\n", p.install.HardwareConfig)
	}
	fmt.Fprintf(w, "  then       pin the new host key in %s, wait up to %s for the new boot, ", p.pinned, o.Wait)
	if o.NoVerify {
		fmt.Fprintln(w, "no verify")
	} else {
		fmt.Fprintln(w, "verify")
	}
}

func gib(n int64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }

// confirm asks for the host names to be typed; --yes skips it, and without
// a terminal it refuses.
func confirm(stdin io.Reader, w io.Writer, plans []*hostPlan, yes bool) error {
	if yes {
		return nil
	}
	if f, ok := stdin.(*os.File); !ok || !isTerminal(f) {
		return refused(hint.Errorf("run it in a terminal, or pass --yes to skip the question",
			"no terminal to confirm on, and wiping disks needs a confirmation; nothing was changed"))
	}
	var names []string
	for _, p := range plans {
		names = append(names, p.name)
	}
	fmt.Fprintf(w, "\nThis wipes the disks above. Type %s to go on: ", strings.Join(names, " "))
	line, _ := bufio.NewReader(stdin).ReadString('\n')
	typed := strings.Fields(line)
	sort.Strings(typed)
	sort.Strings(names)
	if strings.Join(typed, " ") != strings.Join(names, " ") {
		return refused(hint.Errorf("run deploy again and type the host name exactly", "confirmation did not match; nothing was changed"))
	}
	return nil
}

// isTerminal is isatty(3): /dev/null is a character device too.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func install(ctx context.Context, program string, p *hostPlan, o deployOptions, w io.Writer, prefix string) error {
	key, err := deploy.NewHostKey("root@" + p.name)
	if err != nil {
		return err
	}
	defer key.Remove()
	p.install.ExtraFiles = key.ExtraFiles
	fmt.Fprintf(w, "%sthe new system's host key is %s\n", prefix, ssh.FingerprintSHA256(key.Public))

	runCtx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var progress deploy.Progress
	err = deploy.RunInstall(runCtx, program, p.install, w, prefix, &progress)
	key.Remove() // installed or not, the private key has no other use
	// The pin follows the host: replaced only once the new key may be there,
	// so a run that stopped early leaves verify trusting the old one.
	if err == nil || progress.MayHaveNewKey() {
		if perr := pinKey(p.pinned, key.AuthorizedLine("root@"+p.name)); perr != nil {
			if err != nil {
				return codeError{fmt.Errorf("%s: %w; and pinning its new host key failed: %v", p.name, err, perr), exitInstall}
			}
			return fmt.Errorf("%s: installed, but pinning its new host key failed: %w", p.name, perr)
		}
		fmt.Fprintf(w, "%spinned the new host key in %s\n", prefix, p.pinned)
	}
	if err != nil {
		return codeError{fmt.Errorf("%s: %w", p.name, err), exitInstall}
	}

	pinned := sshx.Options{Addr: p.target.Addr(), User: p.target.User, Identities: o.Identities,
		HostKeys: sshx.HostKeys{Pinned: key.Public, PinnedFrom: p.pinned}}
	fmt.Fprintf(w, "%swaiting up to %s for %s to boot its new system\n", prefix, o.Wait, p.name)
	if p.cfg.Deploy.DiskSecret {
		// Both encrypted layouts ask on the console at boot; nothing else can answer.
		fmt.Fprintf(w, "%s%s asks for its disk password on its console at boot: type it there\n", prefix, p.name)
	}
	if err := deploy.WaitForNewBoot(ctx, pinned, p.hostname, p.facts.BootID, o.Wait); err != nil {
		return codeError{hint.Wrap(fmt.Errorf("%s: %w", p.name, err),
			"look at its console: it may be waiting for the disk password; then run keystone verify "+p.name+" --wait 10m"), exitNoReturn}
	}
	fmt.Fprintf(w, "%s%s is up with its new system\n", prefix, p.name)
	if o.NoVerify {
		return nil
	}
	rep := verify.Run(ctx, p.expect, verify.Options{Name: p.name, SSH: pinned, Wait: time.Minute})
	verify.WriteTable(w, []verify.Report{rep})
	if code := rep.ExitCode(); code != 0 {
		return codeError{fmt.Errorf("%s: installed, but verify failed", p.name), code}
	}
	return nil
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

// shellWords quotes argv for display only.
// extraFilesPlaceholder stands for the host key folder until the install
// makes it.
const extraFilesPlaceholder = "EXTRA_FILES"

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
