// Package unlock gives a host's disk password to its initrd over SSH
// (keystone.unlock.ssh): it waits for the initrd's sshd with the pinned
// initrd key, finds the pending password request, answers it with
// systemd-tty-ask-password-agent reading the password on stdin, tells a
// wrong password (the request comes back) from a right one, and waits for
// the system that boot becomes.
package unlock

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/newboot"
	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/internal/sshx"
)

// Exit statuses, in the family of deploy's.
const (
	ExitCannotConnect = 2 // no initrd sshd or system answered, or a host key was refused
	ExitRefused       = 3 // nothing was sent: no initrd SSH, or the initrd asks for no password
	ExitWrongPassword = 4 // the host asked again: the password is wrong
	ExitNoReturn      = 5 // unlocked, but the system did not come up in time
)

// PinName is the initrd host key's pin, beside the main key's in vms/NAME/.
const PinName = "ssh_initrd_host_ed25519_key.pub"

// Options says how to unlock.
type Options struct {
	// Password gives the password for the attempt-th answer (0 first); an
	// error stops. A file gives one password and has no second attempt.
	Password func(attempt int) ([]byte, error)
	// Wait bounds the whole unlock of one host: the initrd coming up, its
	// request, and the system after it. Zero means DefaultWait.
	Wait time.Duration
	// AskWait bounds how long an initrd that asks nothing is waited for;
	// zero means the rest of Wait.
	AskWait time.Duration
	// Identities are the SSH keys to log in with (ssh-agent is used too).
	Identities []string
	// InitrdPort is where the initrd's sshd is reached when that is not
	// keystone.unlock.ssh.port (a VM's forward, a NAT); 0 for that port.
	InitrdPort int
	// Before is the boot identity (newboot.Identity) of a boot being
	// rebooted: its system, still answering while it goes down, is not
	// the one waited for. "" when nothing was rebooted.
	Before string
}

// DefaultWait bounds one host's unlock when Options.Wait is zero.
const DefaultWait = 10 * time.Minute

// poll is how often the host is asked again.
var poll = time.Second

// ErrNoPassword is what Options.Password returns when it has no other.
var ErrNoPassword = errors.New("no other password")

// Target is where one host's initrd and system are reached, and the keys
// each must show.
type Target struct {
	Name     string
	Hostname string // what the system must call itself
	Initrd   sshx.Options
	System   sshx.Options
}

// TargetOf works out where h's initrd listens, from its config
// (keystone.unlock.ssh) and the initrd pin beside its main pin.
func TargetOf(h *fleet.Host, o Options) (Target, error) {
	u := h.Config.Unlock.SSH
	if h.Evaluated && !u.Enable {
		return Target{}, exit.With(ExitRefused, hint.Errorf("set keystone.unlock.ssh.enable = true (the encrypted layouts have it) and redeploy",
			"its initrd runs no SSH server (keystone.unlock.ssh.enable is false)"))
	}
	port := cmp.Or(o.InitrdPort, u.Port, 2222)
	pin := filepath.Join(filepath.Dir(h.PinFile), PinName)
	key, err := sshx.ReadPinned(pin)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("%s: no pinned initrd key", pin)
		}
		return Target{}, exit.With(ExitRefused, hint.Wrap(err, "keystone deploy makes the initrd's host key and pins it there; a host deployed before that needs a redeploy"))
	}
	hostname := h.Config.Lint.HostName
	if hostname == "" {
		hostname = h.Name
	}
	sys := h.SSH()
	sys.Identities = append(sys.Identities, o.Identities...)
	return Target{
		Name:     h.Name,
		Hostname: hostname,
		Initrd: sshx.Options{
			Addr: joinPort(h.Target.Host, port), User: "root", Identities: sys.Identities,
			HostKeys: sshx.HostKeys{Pinned: key, PinnedFrom: pin},
		},
		System: sys,
	}, nil
}

func joinPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

// Result is how one host's unlock ended.
type Result struct {
	AlreadyUp bool
	Took      time.Duration // from the answer to the system answering
	BootID    string
}

// Run unlocks one host and says how it went on w.
func Run(ctx context.Context, t Target, o Options, w io.Writer) (Result, error) {
	if o.Wait == 0 {
		o.Wait = DefaultWait
	}
	ctx, cancel := context.WithTimeout(ctx, o.Wait)
	defer cancel()
	c, up, err := reach(ctx, t, o.Wait, o.Before)
	if err != nil {
		return Result{}, err
	}
	if up {
		fmt.Fprintf(w, "%s: already unlocked: the system answers on %s\n", t.Name, t.System.Addr)
		return Result{AlreadyUp: true}, nil
	}
	defer c.Close()
	r := remote.New(c.Client, false, 30*time.Second)
	id := r.Run(ctx, "test -e /etc/initrd-release && cat /proc/sys/kernel/random/boot_id")
	if id.Err != nil || id.Exit != 0 {
		return Result{}, exit.With(ExitRefused, fmt.Errorf("%s answers with the pinned initrd key but is not in its initrd (no /etc/initrd-release)", t.Initrd.Addr))
	}
	boot := strings.TrimSpace(id.Stdout)
	fmt.Fprintf(w, "%s: in its initrd at %s\n", t.Name, t.Initrd.Addr)

	var start time.Time
	for attempt := 0; ; attempt++ {
		req, err := pending(ctx, r, o.AskWait)
		if errors.Is(err, errGone) {
			// Switch-root while nothing was answered here: the TPM2, or
			// somebody at the console.
			fmt.Fprintf(w, "%s: its initrd went on without this password (a TPM2, or the console)\n", t.Name)
			start = time.Now()
			break
		}
		if err != nil {
			return Result{}, err
		}
		password, err := o.Password(attempt)
		if err != nil {
			if errors.Is(err, ErrNoPassword) {
				return Result{}, exit.With(ExitWrongPassword, hint.Errorf("check the password file; the host still waits at its prompt",
					"the host asked again: the password is wrong"))
			}
			return Result{}, err
		}
		start = time.Now()
		if err := answer(ctx, r, password); err != nil {
			return Result{}, err
		}
		clear(password)
		wrong, err := judge(ctx, r, req)
		if err != nil {
			return Result{}, err
		}
		if !wrong {
			break
		}
		fmt.Fprintf(w, "%s: the password is wrong: the host asks again\n", t.Name)
	}
	fmt.Fprintf(w, "%s: password accepted; waiting for the system\n", t.Name)
	if err := waitSystem(ctx, t, boot, o.Wait); err != nil {
		return Result{}, err
	}
	took := time.Since(start).Round(time.Second)
	fmt.Fprintf(w, "%s: unlocked: the system answers on %s %s after the password\n", t.Name, t.System.Addr, took)
	return Result{Took: took, BootID: boot}, nil
}

// reach waits for the initrd's sshd, or finds the system already up in a
// boot other than before. A host key either refuses ends the wait at once:
// it will not change.
func reach(ctx context.Context, t Target, wait time.Duration, before string) (*sshx.Client, bool, error) {
	last := "no answer yet"
	for {
		io := t.Initrd
		io.Timeout = 5 * time.Second
		c, err := sshx.Dial(ctx, io)
		if err == nil {
			return c, false, nil
		}
		if errors.Is(err, sshx.ErrHostKey) || errors.Is(err, sshx.ErrAuth) {
			return nil, false, exit.With(ExitCannotConnect, fmt.Errorf("the initrd's sshd: %w", err))
		}
		last = "the initrd's sshd at " + t.Initrd.Addr + ": " + err.Error()
		so := t.System
		so.Timeout = 5 * time.Second
		if s, err := sshx.Dial(ctx, so); err == nil {
			r := remote.New(s.Client, so.User != "root", 10*time.Second)
			inSystem := strings.TrimSpace(r.Run(ctx, "test -e /etc/initrd-release; echo $?").Stdout) == "1"
			boot := ""
			if inSystem && before != "" {
				boot, _, _ = newboot.Identity(ctx, r)
			}
			s.Close()
			if inSystem && (before == "" || boot != "" && boot != before) {
				return nil, true, nil
			} else if inSystem {
				last = "the system still runs the boot before the reboot"
			}
		} else if errors.Is(err, sshx.ErrHostKey) {
			return nil, false, exit.With(ExitCannotConnect, err)
		}
		select {
		case <-ctx.Done():
			return nil, false, exit.With(ExitCannotConnect, hint.Wrap(fmt.Errorf("neither its initrd nor its system answered within %s: %s", wait, last),
				"check that the host is powered on and booting, and that keystone.unlock.ssh.port is reachable"))
		case <-time.After(poll):
		}
	}
}

// request is one ask.* file of systemd's password agent protocol
// (/run/systemd/ask-password, docs/PASSWORD_AGENTS.md in systemd).
type request struct {
	File, Socket, Message, ID string
}

// listRequests prints every pending request: the file's name, then its
// [Ask] section; the protocol ignores requests past their NotAfter, and so
// does the agent.
const listRequests = `for f in /run/systemd/ask-password/ask.*; do [ -e "$f" ] || continue; echo "File=$f"; cat "$f"; echo; done`

func requests(ctx context.Context, r *remote.Runner) ([]request, error) {
	out := r.Run(ctx, listRequests)
	if out.Err != nil {
		return nil, out.Err
	}
	var reqs []request
	var cur *request
	for _, line := range strings.Split(out.Stdout, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch k {
		case "File":
			reqs = append(reqs, request{File: v})
			cur = &reqs[len(reqs)-1]
		case "Socket":
			cur.Socket = v
		case "Message":
			cur.Message = v
		case "Id":
			cur.ID = v
		}
	}
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].File < reqs[j].File })
	return reqs, nil
}

// errGone is the initrd's sshd gone while waiting for a request.
var errGone = errors.New("the initrd's sshd is gone")

// pending waits for a password request, bounded by askWait (0: the
// context's deadline).
func pending(ctx context.Context, r *remote.Runner, askWait time.Duration) (request, error) {
	waited := time.Now()
	for {
		reqs, err := requests(ctx, r)
		if err != nil && ctx.Err() == nil {
			return request{}, errGone
		}
		if err != nil {
			return request{}, exit.With(ExitCannotConnect, fmt.Errorf("reading the initrd's password requests: %w", err))
		}
		if len(reqs) > 0 {
			return reqs[0], nil
		}
		if askWait > 0 && time.Since(waited) >= askWait {
			return request{}, exit.With(ExitRefused, hint.Errorf("the initrd may be waiting for something else (a disk, a TPM2); look at its console",
				"the initrd asks for no password (nothing in /run/systemd/ask-password for %s)", askWait))
		}
		select {
		case <-ctx.Done():
			return request{}, exit.With(ExitRefused, hint.Errorf("the initrd may be waiting for something else (a disk, a TPM2); look at its console",
				"the initrd asked for no password before the wait ran out"))
		case <-time.After(poll):
		}
	}
}

// answer runs the agent with the password on stdin: never in a command
// line or the environment. Without a terminal, systemd's ask_password_tty
// reads the password from stdin up to the newline.
func answer(ctx context.Context, r *remote.Runner, password []byte) error {
	in := append(bytes.Clone(password), '\n')
	defer clear(in)
	out := r.RunInput(ctx, "systemd-tty-ask-password-agent --query", in)
	if out.Err != nil {
		return exit.With(ExitCannotConnect, fmt.Errorf("answering the password request: %w", out.Err))
	}
	if out.Exit != 0 {
		return exit.With(ExitRefused, fmt.Errorf("systemd-tty-ask-password-agent failed (exit %d): %s", out.Exit, firstLine(out.Stderr)))
	}
	return nil
}

// judge waits for what the answer did: the same request back (a wrong
// password), or the boot going on (the request gone and, at switch-root,
// the initrd's sshd with it).
func judge(ctx context.Context, r *remote.Runner, answered request) (wrong bool, err error) {
	for {
		reqs, err := requests(ctx, r)
		if err != nil && ctx.Err() == nil {
			return false, nil // the initrd's sshd is gone: switch-root
		}
		for _, q := range reqs {
			if q.File == answered.File {
				continue // the agent's answer not yet taken
			}
			if q.Message == answered.Message && q.ID == answered.ID {
				return true, nil
			}
		}
		if ctx.Err() != nil {
			return false, exit.With(ExitNoReturn, errors.New("the host neither asked again nor left its initrd before the wait ran out"))
		}
		select {
		case <-ctx.Done():
		case <-time.After(poll):
		}
	}
}

// waitSystem waits for the system the unlocked boot becomes: the pinned
// main key, the hostname, and the initrd's boot id (the same boot).
func waitSystem(ctx context.Context, t Target, boot string, wait time.Duration) error {
	last := "no answer yet"
	for {
		o := t.System
		o.Timeout = 5 * time.Second
		c, err := sshx.Dial(ctx, o)
		if err == nil {
			out := remote.New(c.Client, o.User != "root", 10*time.Second).Run(ctx,
				"test -e /etc/initrd-release && echo initrd; cat /proc/sys/kernel/hostname /proc/sys/kernel/random/boot_id")
			c.Close()
			f := strings.Fields(out.Stdout)
			switch {
			case out.Err != nil || len(f) < 2:
				last = "connected, but could not read its hostname and boot id"
			case f[0] == "initrd":
				last = "it still runs its initrd"
			case f[0] != t.Hostname:
				last = fmt.Sprintf("it answers with hostname %q, want %q", f[0], t.Hostname)
			case f[1] != boot:
				last = "it answers with another boot than the one unlocked"
			default:
				return nil
			}
		} else if errors.Is(err, sshx.ErrHostKey) {
			return exit.With(ExitCannotConnect, err)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return exit.With(ExitNoReturn, hint.Wrap(fmt.Errorf("the password was accepted, but the system did not answer within %s: %s", wait, last),
				"look at the host's console; keystone verify tells what runs once it is up"))
		case <-time.After(poll):
		}
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
