package switcher

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/remote"
)

// facts is what pre-flight reads of the host, changing nothing.
type facts struct {
	Current        string // the running system, /run/current-system resolved
	Variant        string // VARIANT_ID of /etc/os-release
	Kernel, Initrd string // where the running system's links point
	Inhibitors     string // its switch-inhibitors
	OurLock        bool   // a keystone switch holds switchLock
	NixOSLock      string // who holds NixOS's switch lock ("" nobody): "pid 42 (perl)"
	Units          []string
	AvailKiB       int64 // free in /nix/store
	Tools          []string
	Missing        []pathInfo // the closure's paths the host lacks
}

// gatherScript prints key=value lines; nothing in it writes anything.
const gatherScript = `echo "current=$(readlink -f /run/current-system 2>/dev/null)"
echo "variant=$( (. /etc/os-release; echo "${VARIANT_ID:-}") 2>/dev/null)"
echo "kernel=$(readlink /run/current-system/kernel 2>/dev/null)"
echo "initrd=$(readlink /run/current-system/initrd 2>/dev/null)"
echo "inhibitors=$(tr -d '\n' </run/current-system/switch-inhibitors 2>/dev/null)"
for t in systemd-run nix-store nix-env flock timeout journalctl; do command -v $t >/dev/null || echo "missing=$t"; done
[ -d /run/systemd/system ] || echo "missing=systemd as PID 1"
if [ -e ` + switchLock + ` ] && ! flock -n ` + switchLock + ` true; then echo ourlock=held; fi
if [ -e ` + nixosLock + ` ] && ! flock -n ` + nixosLock + ` true; then
  holders=$(lslocks -n -o PID,PATH 2>/dev/null | while read -r pid path; do [ "$path" = ` + nixosLock + ` ] && printf 'pid %s (%s) ' "$pid" "$(cat /proc/$pid/comm 2>/dev/null)"; done)
  echo "nixoslock=${holders:-held}"
fi
systemctl list-units --plain --no-legend --state=active,activating,deactivating 'keystone-switch-*' 'nixos-rebuild-switch-to-configuration*' 2>/dev/null | while read -r u rest; do echo "unit=$u"; done
echo "avail=$(df -Pk /nix/store 2>/dev/null | tail -n 1 | tr -s ' ' | cut -d' ' -f4)"`

// gather reads the host's facts, and which of closure it lacks.
func gather(ctx context.Context, r *remote.Runner, closure []pathInfo) (*facts, error) {
	out := r.Run(ctx, gatherScript)
	if out.Err != nil {
		return nil, fmt.Errorf("reading the host: %w", out.Err)
	}
	f := &facts{}
	for _, l := range strings.Split(out.Stdout, "\n") {
		k, v, _ := strings.Cut(l, "=")
		switch k {
		case "current":
			f.Current = v
		case "variant":
			f.Variant = v
		case "kernel":
			f.Kernel = v
		case "initrd":
			f.Initrd = v
		case "inhibitors":
			f.Inhibitors = v
		case "missing":
			f.Tools = append(f.Tools, v)
		case "ourlock":
			f.OurLock = true
		case "nixoslock":
			f.NixOSLock = strings.TrimSpace(v)
		case "unit":
			f.Units = append(f.Units, v)
		case "avail":
			f.AvailKiB, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if len(f.Tools) > 0 || f.Current == "" {
		return f, nil
	}
	var list strings.Builder
	size := map[string]pathInfo{}
	for _, p := range closure {
		list.WriteString(p.Path + "\n")
		size[p.Path] = p
	}
	out = r.RunInput(ctx, "xargs -r nix-store --check-validity --print-invalid", []byte(list.String()))
	if out.Err != nil || out.Exit != 0 {
		return nil, fmt.Errorf("asking the host's store which paths it lacks: %v%s", out.Err, strings.TrimSpace(out.Stderr))
	}
	for _, p := range strings.Fields(out.Stdout) {
		f.Missing = append(f.Missing, size[p])
	}
	return f, nil
}

// judge refuses a host that cannot take the switch now; nil means go.
// The boot path takes any inhibitors: they are about a live switch.
func judge(f *facts, sys systemFacts, boot bool) error {
	switch {
	case len(f.Tools) > 0:
		return hint.Errorf("switch updates an installed NixOS host (keystone deploy installs one)",
			"the host lacks %s", strings.Join(f.Tools, ", "))
	case f.Current == "":
		return hint.Errorf("switch updates an installed NixOS host; install it with keystone deploy first",
			"no /run/current-system: not an installed NixOS")
	case f.Variant == "installer":
		return hint.Errorf("install it with keystone deploy first", "the host runs the NixOS installer, not an installed system")
	case f.OurLock || hasPrefix(f.Units, unitPrefix):
		return hint.Errorf("wait for it to end (systemctl status 'keystone-switch-*' on the host), then switch again",
			"another keystone switch is running on the host%s", units(f.Units, unitPrefix))
	case f.NixOSLock != "":
		return hint.Errorf("if no switch is running, the process holding it is stuck (deploy-rs #390): look at it, kill it, then switch again",
			"%s is held by %s: a switch-to-configuration is running or hung", nixosLock, f.NixOSLock)
	case hasPrefix(f.Units, "nixos-rebuild-switch-to-configuration"):
		return hint.Errorf("wait for it to end, or look at it with systemctl status on the host",
			"a nixos-rebuild switch is running on the host%s", units(f.Units, "nixos-rebuild"))
	case sys.Inhibitors != f.Inhibitors && !boot:
		return hint.Errorf("switch through a reboot: keystone switch --boot",
			"the switch inhibitors differ between the running and the new system: NixOS refuses to switch to it live")
	}
	var need int64
	for _, p := range f.Missing {
		need += p.NarSize
	}
	// A tenth more for the database and the file system's blocks.
	if needKiB := need/1024 + need/10240; needKiB > f.AvailKiB {
		return hint.Errorf("free space on the host: nix-collect-garbage --delete-older-than 30d",
			"the host has %s free in /nix/store, the copy needs about %s", size(f.AvailKiB*1024), size(needKiB*1024))
	}
	return nil
}

func hasPrefix(ss []string, prefix string) bool {
	for _, s := range ss {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func units(ss []string, prefix string) string {
	var us []string
	for _, s := range ss {
		if strings.HasPrefix(s, prefix) {
			us = append(us, s)
		}
	}
	if len(us) == 0 {
		return ""
	}
	return " (" + strings.Join(us, ", ") + ")"
}

func size(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", b/1024)
}
