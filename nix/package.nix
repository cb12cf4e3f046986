# The keystone binary, built from this repository with gomod2nix, and wrapped
# so the tools it drives are on its PATH.
{
  lib,
  buildGoApplication,
  makeWrapper,
  nixos-anywhere,
  openssh,
  nix,
  git,
  qemu,
  swtpm,
  version ? "dev",
}:
buildGoApplication {
  pname = "keystone";
  inherit version;
  # The source is derived from the tree, so a new Go package needs no edit
  # here: every .go file, what the build embeds (templates/, shell scripts
  # such as switch/supervisor.sh) and what the
  # tests read (every testdata folder, examples/demo's public key). Hosts
  # (vms/), docs, CI and the flake's own Nix files stay out: changing them
  # rebuilds nothing.
  src =
    let
      fs = lib.fileset;
      # Every folder named testdata, wherever a package keeps one.
      testdata =
        dir:
        let
          entries = builtins.readDir dir;
        in
        builtins.concatLists (
          map (
            name:
            if entries.${name} != "directory" || name == "vms" || name == ".git" then
              [ ]
            else if name == "testdata" then
              [ (dir + "/${name}") ]
            else
              testdata (dir + "/${name}")
          ) (builtins.attrNames entries)
        );
    in
    fs.toSource {
      root = ../.;
      fileset = fs.unions (
        [
          ../go.mod
          ../go.sum
          (fs.difference (fs.fileFilter (f: f.hasExt "go" || f.hasExt "sh") ../.) (fs.maybeMissing ../vms))
          ../templates
          ../examples/demo
        ]
        ++ testdata ../.
      );
    };
  pwd = ../.;
  modules = ../gomod2nix.toml;
  subPackages = [ "cmd/keystone" ];
  ldflags = [
    "-s"
    "-w"
    "-X main.version=${version}"
  ];

  nativeBuildInputs = [ makeWrapper ];

  # Every package's tests run here. A test that needs what the build
  # sandbox cannot give (root, network namespaces, VMs, the flake's Nix
  # files) skips itself there, saying why (internal/testhost.InNixBuild);
  # scripts/test runs them all. Tools the tests drive are inputs.
  nativeCheckInputs = [
    nix
    git
    openssh # ssh-keygen, ssh-agent
    qemu # qemu-img and QEMU itself (SeaBIOS, its own edk2), for the vm tests that start a VM without a guest
    swtpm # vm up --tpm
  ];
  checkPhase = ''
    runHook preCheck
    export HOME=$TMPDIR NIX_STATE_DIR=$TMPDIR/nix
    go test ./...
    runHook postCheck
  '';

  postInstall = ''
    wrapProgram $out/bin/keystone \
      --prefix PATH : ${
        lib.makeBinPath [
          nixos-anywhere
          openssh
          nix
          git
          # keystone vm: QEMU (with its edk2 UEFI firmware) and swtpm
          qemu
          swtpm
        ]
      }
  '';

  meta = {
    description = "Take a NixOS server from nothing to a verified install";
    mainProgram = "keystone";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
  };
}
