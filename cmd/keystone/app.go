package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/text"
	"github.com/keystone-nix/keystone/verify"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// Main runs keystone with args (os.Args form) and returns the exit code.
func Main(args []string) int {
	ctx := context.Background()
	if len(args) > 1 && signalGrace[args[1]] > 0 {
		// Ctrl-C or SIGTERM cancels the context: deploy stops
		// nixos-anywhere and says what state the target may be in, verify
		// reports what it has. Whatever still waits after the grace
		// period, or after a second signal, is cut short by exiting.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		sigs := make(chan os.Signal, 2)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sigs)
		go stopOnSignal(sigs, cancel, signalGrace[args[1]], os.Stderr, os.Exit)
	}
	return run(ctx, args, os.Stdout, os.Stderr)
}

// stopOnSignal cancels the run at the first signal, and exits after
// grace or at the second signal, whichever comes first.
func stopOnSignal(sigs <-chan os.Signal, cancel func(), grace time.Duration, stderr io.Writer, exit func(int)) {
	sig, ok := <-sigs
	if !ok {
		return
	}
	cancel()
	fmt.Fprintf(stderr, "keystone: stopping (%s): exiting within %s, or at once on a second signal\n", sig, grace)
	select {
	case <-sigs:
	case <-time.After(grace):
	}
	exit(exitSignal(sig))
}

// signalGrace is how long a command that talks to hosts may take to stop
// after a signal: deploy gives nixos-anywhere 10 s to stop, enroll may be
// in the middle of systemd-cryptenroll; verify and disks only read.
var signalGrace = map[string]time.Duration{
	"deploy": 15 * time.Second, "enroll": 15 * time.Second,
	"verify": 3 * time.Second, "disks": 3 * time.Second,
	"switch": 15 * time.Second, // Ctrl-C stops waiting; the host rolls back without a verdict
}

// exitSignal is the shell's exit status for a process ended by sig.
func exitSignal(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 128 + int(syscall.SIGINT)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	if len(args) > 1 && args[1] == "help" {
		// `keystone help [COMMAND]`, which the hidden help command gets wrong.
		args = append(append([]string{args[0]}, args[2:]...), "--help")
	}
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") && app.Command(args[1]) == nil {
		var names []string
		for _, c := range app.Commands {
			names = append(names, c.Name)
		}
		return report(stderr, usageError{hint.Errorf("commands are: "+strings.Join(names, ", "), "unknown command %q", args[1])})
	}
	args, err := intersperse(app, args)
	if err != nil {
		return report(stderr, err)
	}
	return report(stderr, app.RunContext(ctx, args))
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:    "keystone",
		Usage:   "install a NixOS server with nixos-anywhere and verify it",
		Version: version,
		Description: `keystone renders a host into vms/NAME/, installs it with nixos-anywhere after
read-only pre-flight checks, and verifies the live host over SSH.

   keystone new-host web1 --disk /dev/disk/by-id/nvme-X --key ~/.ssh/id_ed25519.pub --target 192.0.2.10`,
		Writer:                    stdout,
		ErrWriter:                 stderr,
		ExitErrHandler:            func(*cli.Context, error) {}, // errors flow back to report
		OnUsageError:              onUsageError,
		DisableSliceFlagSeparator: true, // a key line may hold commas
		HideHelpCommand:           true,
		Commands:                  []*cli.Command{newHostCommand(), deployCommand(), verifyCommand(), checkCommand(), enrollCommand(), unlockCommand(), disksCommand(), vmCommand(), isoCommand(), discoverCommand(), switchCommand()},
	}
}

// usageError is a bad command line: exit status 64.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }
func (e usageError) ExitCode() int { return exit.Usage }

func onUsageError(_ *cli.Context, err error, _ bool) error {
	return usageError{hint.Wrap(err, "see keystone --help")}
}

func commandUsageError(c *cli.Context, err error, _ bool) error {
	return usageError{hint.Wrap(err, "see keystone "+c.Command.Name+" --help")}
}

// report prints err the way age does, a lower-case error line and an
// optional hint line, and returns the exit code. Joined errors (one a host)
// are shown one after the other, and the worst status wins.
func report(stderr io.Writer, err error) int {
	if errs, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range errs.Unwrap() {
			report(stderr, e)
		}
		return exit.Worst(errs.Unwrap())
	}
	if err == nil {
		return exit.OK
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintf(stderr, "keystone: error: %s\n", text.OneLine(msg))
	}
	if h := hint.Of(err); h != "" {
		fmt.Fprintf(stderr, "keystone: hint: %s\n", text.OneLine(h))
	}
	return exit.Code(err)
}

// intersperse moves a subcommand's flags in front of its arguments, so that
// `new-host web1 --disk …` works: urfave/cli v2 stops parsing flags at the
// first argument.
func intersperse(app *cli.App, args []string) ([]string, error) {
	if len(args) < 2 {
		return args, nil
	}
	cmd := app.Command(args[1])
	if cmd == nil {
		return args, nil
	}
	var flags, positional []string
	seen := map[string]bool{}
	rest := args[2:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		switch {
		case a == "--" && passesThrough[cmd.Name]:
			// Kept: what follows goes to another program, not to us.
			positional = append(positional, rest[i:]...)
			i = len(rest)
		case a == "--":
			positional = append(positional, rest[i+1:]...)
			i = len(rest)
		case len(a) > 1 && a[0] == '-':
			flag, _, _ := strings.Cut(a, "=")
			name := strings.TrimLeft(flag, "-")
			if f := flagNamed(cmd, name); f != nil && !isSlice(f) {
				// urfave/cli lets the last one win without a word, so
				// --target a --target b would silently drop a.
				if seen[f.Names()[0]] {
					return nil, usageError{hint.Errorf("see keystone "+cmd.Name+" --help", "%s is given more than once: it takes one value, give it once", flag)}
				}
				seen[f.Names()[0]] = true
			}
			flags = append(flags, a)
			if !strings.Contains(a, "=") && takesValue(cmd, name) {
				if i+1 == len(rest) {
					return nil, usageError{hint.Errorf("see keystone "+cmd.Name+" --help", "flag needs an argument: %s", a)}
				}
				i++
				flags = append(flags, rest[i])
			}
		default:
			positional = append(positional, a)
		}
	}
	out := append([]string{args[0], args[1]}, flags...)
	if slices.Contains(flags, "-h") || slices.Contains(flags, "--help") {
		return out, nil // urfave would take the arguments for help topics
	}
	if len(positional) > 0 {
		out = append(out, "--")
	}
	return append(out, positional...), nil
}

// loadFleet is fleet.Load for the commands that change hosts: a bad
// command line stays a usage error, any other failure to read the fleet is
// the command's refusal (refused), before anything changed.
func loadFleet(ctx context.Context, o fleet.Options, refused int) ([]fleet.Host, error) {
	hosts, err := fleet.Load(ctx, o)
	if err != nil && exit.Code(err) != exit.Usage {
		err = exit.With(refused, err)
	}
	return hosts, err
}

// checkOptions reads --only, --skip and --ports, which verify and switch
// share.
func checkOptions(c *cli.Context) ([]verify.Check, []int, error) {
	checks, err := verify.Select(c.String("only"), c.String("skip"))
	if err != nil {
		return nil, nil, err
	}
	ports, err := verify.ParsePorts(c.String("ports"))
	if err != nil {
		return nil, nil, usageError{hint.Errorf("e.g. --ports 1-1024,8080", "--ports: %v", err)}
	}
	return checks, ports, nil
}

// nonEmpty drops empty values, such as -i "", which mean "none".
func nonEmpty(ss []string) []string {
	return slices.DeleteFunc(ss, func(s string) bool { return s == "" })
}

// passesThrough: commands whose arguments after "--" are another
// program's (deploy's go to nixos-anywhere).
var passesThrough = map[string]bool{"deploy": true}

func takesValue(cmd *cli.Command, name string) bool {
	f := flagNamed(cmd, name)
	_, isBool := f.(*cli.BoolFlag)
	return f != nil && !isBool
}

func flagNamed(cmd *cli.Command, name string) cli.Flag {
	for _, f := range cmd.Flags {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

// isSlice: a flag that may be given several times, such as --key.
func isSlice(f cli.Flag) bool {
	s, ok := f.(cli.DocGenerationSliceFlag)
	return ok && s.IsSliceFlag()
}
