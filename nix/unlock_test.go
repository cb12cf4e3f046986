package nix_test

import (
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
)

// unlockFakeLib stands in for nixpkgs' lib in unlock.nix: mkOption returns
// its argument (a test reads .default), mkIf keeps its condition as
// lib/modules.nix's does ({ _type = "if"; condition; content; }).
const unlockFakeLib = `{ mkOption = x: x; literalExpression = x: { literalExpression = x; };
	mkIf = condition: content: { _type = "if"; inherit condition content; };
	types = { bool = "bool"; port = "port"; str = "str"; listOf = x: x; }; }`

// TestUnlockSSH evaluates nix/modules/unlock.nix over each rendered layout
// (the golden disk-config.nix, its diskSecret from deploy.nix): the initrd's
// sshd is on for the encrypted layouts only, on its own port, with the host
// key as a string, the host's network (boot.initrd.network.enable, which
// network-interfaces-systemd.nix turns into boot.initrd.systemd.network)
// and the network modules in the initrd. Options set, as declared in
// nixos-25.11: boot.initrd.network.enable (initrd-network.nix),
// boot.initrd.network.ssh.{enable,port,hostKeys} (initrd-ssh.nix),
// boot.initrd.availableKernelModules (kernel.nix).
func TestUnlockSSH(t *testing.T) {
	for _, tc := range []struct {
		golden string
		on     bool
	}{
		{"zfs-encrypted-vm", true},
		{"zfs-encrypted-physical", true},
		{"luks-vm", true},
		{"luks-physical", true},
		{"ext4-vm", false},
		{"ext4-physical", false},
	} {
		disk := filepath.Join(repoRoot(t), "generate/testdata/golden", tc.golden, "disk-config.nix")
		var got struct {
			Enable    bool `json:"enable"`
			Condition bool `json:"condition"`
			Network   bool `json:"network"`
			SSH       struct {
				Enable   bool  `json:"enable"`
				Port     int   `json:"port"`
				HostKeys []any `json:"hostKeys"`
			} `json:"ssh"`
			Modules    []string `json:"modules"`
			Assertions []bool   `json:"assertions"`
			Initrd     []string `json:"initrd"`
		}
		evalJSON(t, fmt.Sprintf(`let
			m = import %[2]s;
			layout = if builtins.isFunction m then m { lib.mkDefault = v: v; config.disko.rootMountPoint = "/mnt"; } else m;
			deploy = (import %[1]s/nix/modules/deploy.nix { config = { inherit (layout) disko; }; lib = %[3]s; }).options.keystone.deploy;
			boot = { initrd = { systemd.enable = layout.boot.initrd.systemd.enable or false; availableKernelModules = [ "nvme" ]; kernelModules = [ ]; }; };
			config = {
				keystone.deploy.diskSecret = deploy.diskSecret.default;
				keystone.unlock.ssh = { enable = u.options.keystone.unlock.ssh.enable.default; port = 2222;
					hostKey = u.options.keystone.unlock.ssh.hostKey.default; networkModules = [ "virtio_net" ]; };
				inherit boot;
				services.openssh.ports = [ 22 ];
			};
			u = import %[1]s/nix/modules/unlock.nix { inherit config; lib = %[4]s; };
			c = u.config.content;
		in {
			enable = u.options.keystone.unlock.ssh.enable.default;
			condition = u.config.condition;
			network = c.boot.initrd.network.enable;
			ssh = { inherit (c.boot.initrd.network.ssh) enable port hostKeys; };
			modules = c.boot.initrd.availableKernelModules;
			assertions = map (a: a.assertion) c.assertions;
			initrd = u.options.keystone.unlock.ssh.initrdModules.default;
		}`, repoRoot(t), disk, deployFakeLib, unlockFakeLib), &got)
		if got.Enable != tc.on || got.Condition != tc.on {
			t.Errorf("%s: keystone.unlock.ssh.enable defaults to %v (config under mkIf %v), want %v", tc.golden, got.Enable, got.Condition, tc.on)
		}
		if !got.Network || !got.SSH.Enable || got.SSH.Port != 2222 {
			t.Errorf("%s: initrd network %v, ssh %+v; want the network on and sshd on 2222", tc.golden, got.Network, got.SSH)
		}
		// A string, never a path: a path would be copied into the store.
		if len(got.SSH.HostKeys) != 1 || got.SSH.HostKeys[0] != "/etc/ssh/initrd_ssh_host_ed25519_key" {
			t.Errorf("%s: hostKeys %v, want the string /etc/ssh/initrd_ssh_host_ed25519_key", tc.golden, got.SSH.HostKeys)
		}
		if !reflect.DeepEqual(got.Modules, []string{"virtio_net"}) || !reflect.DeepEqual(got.Initrd, []string{"nvme"}) {
			t.Errorf("%s: availableKernelModules %v, initrdModules %v", tc.golden, got.Modules, got.Initrd)
		}
		if want := []bool{tc.on, true, true}; !reflect.DeepEqual(got.Assertions, want) {
			t.Errorf("%s: assertions %v, want %v (systemd initrd, absolute key path, own port)", tc.golden, got.Assertions, want)
		}
	}
}

// TestUnlockSSHAssertions: a key path that is not absolute, and the initrd
// port on the main sshd's port, are refused at evaluation.
func TestUnlockSSHAssertions(t *testing.T) {
	for _, tc := range []struct {
		name, unlock string
		ports        string
		want         []bool
	}{
		{"fine", `{ enable = true; port = 2222; hostKey = "/etc/ssh/k"; networkModules = [ ]; }`, `[ 22 ]`, []bool{true, true, true}},
		{"relative key", `{ enable = true; port = 2222; hostKey = "etc/ssh/k"; networkModules = [ ]; }`, `[ 22 ]`, []bool{true, false, true}},
		{"port 22", `{ enable = true; port = 22; hostKey = "/k"; networkModules = [ ]; }`, `[ 2200 ]`, []bool{true, true, false}},
		{"main sshd's port", `{ enable = true; port = 2200; hostKey = "/k"; networkModules = [ ]; }`, `[ 2200 ]`, []bool{true, true, false}},
	} {
		var got []bool
		evalJSON(t, fmt.Sprintf(`let u = import %s/nix/modules/unlock.nix { lib = %s; config = {
			keystone = { deploy.diskSecret = true; unlock.ssh = %s; };
			boot.initrd = { systemd.enable = true; availableKernelModules = [ ]; kernelModules = [ ]; };
			services.openssh.ports = %s; }; };
			in map (a: a.assertion) u.config.content.assertions`, repoRoot(t), unlockFakeLib, tc.unlock, tc.ports), &got)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: assertions %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestUnlockSSHDefault: on when the layout asks for a password at boot
// (diskSecret) and boots the systemd initrd, whose sshd unlock.nix uses.
func TestUnlockSSHDefault(t *testing.T) {
	for _, tc := range []struct{ secret, systemd, want bool }{
		{true, true, true}, {true, false, false}, {false, true, false}, {false, false, false},
	} {
		var got bool
		evalJSON(t, fmt.Sprintf(`(import %s/nix/modules/unlock.nix { lib = %s; config = {
			keystone.deploy.diskSecret = %v; boot.initrd.systemd.enable = %v; }; }).options.keystone.unlock.ssh.enable.default`,
			repoRoot(t), unlockFakeLib, tc.secret, tc.systemd), &got)
		if got != tc.want {
			t.Errorf("diskSecret %v, systemd initrd %v: enable defaults to %v, want %v", tc.secret, tc.systemd, got, tc.want)
		}
	}
}
