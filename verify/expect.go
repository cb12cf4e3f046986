// Package verify checks a live host over one SSH connection against what
// its NixOS configuration says it must be.
package verify

import (
	"encoding/json"
	"fmt"
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
}

type Firewall struct {
	Enable  bool   `json:"enable"`
	Backend string `json:"backend"` // "iptables" or "nftables"
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
}

type LUKS struct {
	Devices []string `json:"devices"`
}

type MDNS struct {
	Publish bool `json:"publish"`
}

// ParseExpectations reads the JSON contract. Unknown keys are allowed (keys
// may be added), a missing hostname is not.
func ParseExpectations(data []byte) (*Expectations, error) {
	var e Expectations
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("reading expectations: %w", err)
	}
	if e.Hostname == "" {
		return nil, fmt.Errorf("expectations have no hostname")
	}
	if f := e.Firewall; f != nil && f.Enable && f.Backend != "iptables" && f.Backend != "nftables" {
		return nil, fmt.Errorf("expectations: firewall backend %q is neither iptables nor nftables", f.Backend)
	}
	return &e, nil
}
