// Package verify checks a live host over one SSH connection against what
// its NixOS configuration says it must be.
package verify

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"
)

// Expectations is the contract with nix/expectations.nix, the JSON that
// `nix eval --json …config.keystone.verify.expectations` prints and
// `--expect FILE` takes (docs/expectations.md). A nil field is "not
// applicable to this host".
type Expectations struct {
	Hostname string    `json:"hostname"`
	Services []string  `json:"services"`
	Firewall *Firewall `json:"firewall"`
	SSHD     *SSHD     `json:"sshd"`
	ZFS      *ZFS      `json:"zfs"`
	LUKS     *LUKS     `json:"luks"`
	Mounts   []string  `json:"mounts"`
	MDNS     *MDNS     `json:"mdns"`
	Unlock   *Unlock   `json:"unlock"`
}

// Unlock is the initrd's sshd (keystone.unlock.ssh): its port must be
// closed once the system runs, and its host key on the host must be the
// pinned one.
type Unlock struct {
	Port    int    `json:"port"`
	HostKey string `json:"hostKey"`
}

type Firewall struct {
	Enable  bool   `json:"enable"`
	Backend string `json:"backend"` // "iptables", "nftables" or "firewalld"
	TCP     []int  `json:"tcp"`
	UDP     []int  `json:"udp"`
}

type SSHD struct {
	Ports                        []int  `json:"ports"`
	PermitRootLogin              string `json:"permitRootLogin"`
	PasswordAuthentication       bool   `json:"passwordAuthentication"`
	KbdInteractiveAuthentication bool   `json:"kbdInteractiveAuthentication"`
}

type ZFS struct {
	Pools           []string `json:"pools"`
	EncryptionRoots []string `json:"encryptionRoots"`
	// Topology is, by pool, the vdev the layout made of its disks; a pool
	// without an entry (one not made by disko, or by disko's topology
	// form) has its vdev tree left unjudged.
	Topology map[string]Topology `json:"topology"`
}

// Topology is a pool's data vdev: Vdev is single (one disk), stripe
// (disks side by side), mirror, raidz1, raidz2 or raidz3; Disks how many
// disks (for a mirror or raidz: its children) it has.
type Topology struct {
	Vdev  string `json:"vdev"`
	Disks int    `json:"disks"`
}

// Vdevs are the values Topology.Vdev takes.
var Vdevs = []string{"single", "stripe", "mirror", "raidz1", "raidz2", "raidz3"}

type LUKS struct {
	// Devices are opened at boot and stay open (/ lives on one): the luks
	// check.
	Devices []string `json:"devices"`
	// Volumes are every LUKS device of the host, open or not (a credstore
	// is closed again before switch-root): the tpm check.
	Volumes []LUKSVolume `json:"volumes"`
}

// LUKSVolume is one LUKS device: its name, its backing device, and whether
// a TPM2 is meant to unlock it.
type LUKSVolume struct {
	Name   string `json:"name"`
	Device string `json:"device"`
	TPM2   bool   `json:"tpm2"`
}

type MDNS struct {
	Publish bool `json:"publish"`
}

// What a NixOS config can hold, so that what is not (a leading '-', a
// control character) never reaches a remote command line or the terminal.
var (
	hostnameRE = regexp.MustCompile(`^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$`) // networking.hostName's type
	unitRE     = regexp.MustCompile(`^[[:alnum:]:_.\\@][[:alnum:]:_.\\@-]*$`)
	zfsNameRE  = regexp.MustCompile(`^[[:alpha:]][[:alnum:]_.: -]*(/[[:alnum:]_.: -]+)*$`)
	dmNameRE   = regexp.MustCompile(`^[[:alnum:]_.+][[:alnum:]_.+#-]*$`)
	rootLogin  = []string{"yes", "no", "prohibit-password", "without-password", "forced-commands-only"}
)

// ParseExpectations reads the JSON contract as the flake's module writes
// it: keys may be added there, so one this verifier does not know is left
// alone; a value no NixOS config could produce is an error.
func ParseExpectations(data []byte) (*Expectations, error) {
	var e Expectations
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("reading expectations: %w", err)
	}
	if err := e.check(); err != nil {
		return nil, fmt.Errorf("expectations: %w", err)
	}
	return &e, nil
}

// ParseExpectationsFile reads an --expect file, written by hand: there an
// unknown or miscased key is a typo that would leave its check silently
// skipped, so it is refused with the known names.
func ParseExpectationsFile(data []byte) (*Expectations, error) {
	if json.Valid(data) {
		// A typo first: it is why a value looks missing.
		if err := checkKeys(data); err != nil {
			return nil, fmt.Errorf("expectations: %w", err)
		}
	}
	return ParseExpectations(data)
}

func (e *Expectations) check() error {
	if e.Hostname == "" {
		return fmt.Errorf("no hostname")
	}
	if !hostnameRE.MatchString(e.Hostname) {
		return fmt.Errorf("hostname %q is not a host name", e.Hostname)
	}
	if err := matchAll("service", e.Services, unitRE); err != nil {
		return err
	}
	if f := e.Firewall; f != nil {
		// networking.firewall.backend's enum in nixos-25.11's firewall.nix.
		if f.Enable && !slices.Contains([]string{"iptables", "nftables", "firewalld"}, f.Backend) {
			return fmt.Errorf("firewall backend %q is not iptables, nftables or firewalld", f.Backend)
		}
		if err := checkPorts("firewall tcp", f.TCP); err != nil {
			return err
		}
		if err := checkPorts("firewall udp", f.UDP); err != nil {
			return err
		}
	}
	if s := e.SSHD; s != nil {
		if err := checkPorts("sshd", s.Ports); err != nil {
			return err
		}
		if !slices.Contains(rootLogin, s.PermitRootLogin) {
			return fmt.Errorf("sshd permitRootLogin %q is not one of %s", s.PermitRootLogin, strings.Join(rootLogin, ", "))
		}
	}
	if z := e.ZFS; z != nil {
		if err := matchAll("zfs pool", z.Pools, zfsNameRE); err != nil {
			return err
		}
		if err := matchAll("zfs encryption root", z.EncryptionRoots, zfsNameRE); err != nil {
			return err
		}
		for pool, t := range z.Topology {
			switch {
			case !slices.Contains(z.Pools, pool):
				return fmt.Errorf("zfs topology of %q, which is not among the pools", pool)
			case !slices.Contains(Vdevs, t.Vdev):
				return fmt.Errorf("zfs topology of %s: vdev %q is not one of %s", pool, t.Vdev, strings.Join(Vdevs, ", "))
			case t.Disks < 1 || (t.Vdev == "single") != (t.Disks == 1):
				return fmt.Errorf("zfs topology of %s: %d disks for a %s", pool, t.Disks, t.Vdev)
			}
		}
	}
	if l := e.LUKS; l != nil {
		if err := matchAll("luks device", l.Devices, dmNameRE); err != nil {
			return err
		}
		for _, v := range l.Volumes {
			if !dmNameRE.MatchString(v.Name) {
				return fmt.Errorf("luks volume %q is not a valid name", v.Name)
			}
			if !strings.HasPrefix(v.Device, "/dev/") || strings.ContainsFunc(v.Device, unicode.IsControl) {
				return fmt.Errorf("luks volume %s: device %q is not a path under /dev", v.Name, v.Device)
			}
		}
	}
	for _, m := range e.Mounts {
		if !strings.HasPrefix(m, "/") || strings.ContainsFunc(m, unicode.IsControl) {
			return fmt.Errorf("mount point %q is not an absolute path", m)
		}
	}
	return nil
}

func matchAll(what string, names []string, re *regexp.Regexp) error {
	for _, n := range names {
		if !re.MatchString(n) {
			return fmt.Errorf("%s %q is not a valid name", what, n)
		}
	}
	return nil
}

func checkPorts(what string, ports []int) error {
	for _, p := range ports {
		if p < 1 || p > 65535 {
			return fmt.Errorf("%s port %d is not from 1 to 65535", what, p)
		}
	}
	return nil
}
