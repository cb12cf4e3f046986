# Two boot tests of the zfs-encrypted layout, as modules for a host's
# extendModules: disko's system.build.installTest (disko v1.12.0
# lib/tests.nix, makeDiskoTest) formats, mounts, unmounts, mounts again,
# destroys and recreates the layout, installs the host and boots it; these
# modules say what happens at that boot and after it (disko.tests.* of
# disko's module.nix).
#
# disko's test boots the installed disk with its own QEMU command line
# (create_test_machine in lib/tests.nix), which virtualisation.tpm.enable
# (qemu-vm.nix, for test nodes) cannot reach: the TPM2 boots below give QEMU
# a swtpm the way nixpkgs' nixos/tests/systemd-initrd-luks-tpm2.nix does.
{ pkgs }:
let
  # disko's test writes this password to /tmp/secret.key before formatting
  # (lib/tests.nix, testScript): it is the credstore's LUKS password.
  password = "secretsecret";

  # The systemd initrd has no TPM2 token to try and asks on /dev/console
  # ("Please enter passphrase for disk …", systemd-ask-password-console);
  # the test driver reads the serial console and types there. The last
  # console= on the kernel command line is /dev/console: serial below.
  typePassword = machine: ''
    ${machine}.wait_for_console_text("[Pp]assphrase for disk")
    ${machine}.send_console("${password}\n")
  '';
  # nixpkgs' default OVMF is built without TPM support (OVMF's
  # `tpmSupport ? false`): it measures nothing, PCR 7 stays all zeroes and
  # systemd enrolls a policy that binds nothing ("PCR policy is effectively
  # not enforced"), so the TPM2 boots use a firmware that measures. OVMFFull
  # has TPM support too, but also Secure Boot with SMM required, which needs
  # another QEMU machine type; this override is not in the binary cache and
  # is built from source once.
  ovmfTPM = pkgs.OVMF.override { tpmSupport = true; };

  # The initrd's sshd (keystone.unlock.ssh) needs its host key on the
  # installed system when the bootloader is installed (boot.initrd.secrets);
  # keystone deploy sends it, disko's install test has none to send. These
  # tests are about the credstore's boot, typed at the console.
  initrdSSH = false;

  serialConsole = {
    boot.kernelParams = pkgs.lib.mkAfter [ "console=ttyS0" ];
  };

  # What every boot of the layout must leave: the key of rpool/crypt
  # loaded, / on it, the credstore closed before switch-root.
  booted = machine: ''
    ${machine}.wait_for_unit("multi-user.target")
    ${machine}.succeed("test \"$(zfs get -H -o value keystatus rpool/crypt)\" = available")
    ${machine}.succeed("test \"$(zfs get -H -o value encryptionroot rpool/crypt/root)\" = rpool/crypt")
    ${machine}.succeed("test \"$(zfs get -H -o value encryption rpool/crypt)\" = aes-256-gcm")
    ${machine}.succeed("findmnt -n -o SOURCE / | grep -qx rpool/crypt/root")
    ${machine}.fail("cryptsetup status credstore")
  '';
in
{
  # No TPM2 (disko's test VM has none): the boot stops at the password
  # prompt and goes on once the password is typed.
  password = {
    keystone.unlock.ssh.enable = initrdSSH;
    disko.tests = {
      extraConfig = serialConsole;
      bootCommands = typePassword "machine";
      extraChecks = booted "machine";
    };
  };

  # The same first boot, then the host with a TPM2: still the password
  # (nothing enrolled), systemd-cryptenroll binds the credstore to PCR 7,
  # and the next boot is unattended.
  tpm = {
    keystone.unlock.ssh.enable = initrdSSH;
    disko.tests = {
      extraConfig = serialConsole;
      bootCommands = typePassword "machine";
      extraChecks = ''
        ${booted "machine"}
        machine.shutdown()

        import os
        import subprocess
        import tempfile
        import time

        tpm_dir = tempfile.mkdtemp(prefix="keystone-tpm")
        tpm_sock = os.path.join(tpm_dir, "swtpm-sock")
        # The disks the installer wrote (disko's first machine, whose state
        # directory holds them; see disks() in lib/tests.nix).
        installer = driver.machines[0]


        def boot_with_tpm(name):
            """Start swtpm on the same state, then the installed disk with it."""
            tpm = subprocess.Popen([
                "${pkgs.swtpm}/bin/swtpm", "socket", "--tpm2",
                "--tpmstate", f"dir={tpm_dir}",
                "--ctrl", f"type=unixio,path={tpm_sock}",
            ])
            for _ in range(100):
                if os.path.exists(tpm_sock):
                    break
                time.sleep(0.1)
            start_command = [
                "${pkgs.qemu_test}/bin/qemu-kvm", "-cpu", "max", "-m", "1024",
                "-virtfs", "local,path=/nix/store,security_model=none,mount_tag=nix-store",
                *disks(installer, 1),
                "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=${ovmfTPM.firmware}",
                "-drive", "if=pflash,format=raw,unit=1,readonly=on,file=${ovmfTPM.variables}",
                "-chardev", f"socket,id=chrtpm,path={tpm_sock}",
                "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
                "-device", "tpm-tis,tpmdev=tpm0",
            ]
            m = create_machine(start_command=" ".join(start_command), name=name)
            driver.machines.append(m)
            m.start()
            return m, tpm


        def stop(m, tpm):
            m.shutdown()
            # swtpm ends when QEMU closes its socket.
            tpm.wait(timeout=60)


        # A TPM2, nothing enrolled: the password still opens the credstore.
        machine, tpm = boot_with_tpm("tpm_not_enrolled")
        ${typePassword "machine"}
        ${booted "machine"}
        machine.succeed("test -e /sys/class/tpm/tpm0")
        # The firmware measured this boot: with PCR 7 all zeroes the policy
        # below would bind nothing and the test would prove nothing.
        pcr7 = machine.succeed("cat /sys/class/tpm/tpm0/pcr-sha256/7").strip()
        assert pcr7.strip("0") != "", f"PCR 7 is {pcr7}: the firmware measured nothing"
        machine.succeed(
            "PASSWORD=${password} systemd-cryptenroll --tpm2-device=auto --tpm2-pcrs=7 /dev/zvol/rpool/credstore"
        )
        # The password slot stays next to the TPM2 one.
        machine.succeed("cryptsetup luksDump /dev/zvol/rpool/credstore | grep -q systemd-tpm2")
        stop(machine, tpm)

        # Enrolled: nobody types, and the boot must still come up.
        machine, tpm = boot_with_tpm("tpm_enrolled")
        ${booted "machine"}
        stop(machine, tpm)
      '';
    };
  };
}
