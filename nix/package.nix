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
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../go.mod
      ../go.sum
      ../cmd
      ../generate
      ../internal
      ../templates
      (lib.fileset.maybeMissing ../verify)
      (lib.fileset.maybeMissing ../deploy)
      (lib.fileset.maybeMissing ../vm)
      ../examples/demo
    ];
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

  # The offline tests: rendering, parsing, escaping (checked with Nix), CLI
  # scripts, pre-flight judges. The tests that start real hosts need root
  # and network namespaces: they run in CI (scripts/test) and the VM test
  # covers verify, not the build sandbox.
  nativeCheckInputs = [
    nix
    git
    qemu # qemu-img, for the vm package's disk tests
  ];
  checkPhase = ''
    runHook preCheck
    export HOME=$TMPDIR NIX_STATE_DIR=$TMPDIR/nix
    go test -skip '^(TestVerify(CLI|Auth|ThroughTheFlake)|TestDeploy[A-Z].*|TestFleetEvaluatesOnce|TestDisksAndAuto|TestImportsPointDown|TestRun|TestArgvReachesTheCheckedHost|TestGather(OnTestHosts|ThroughDoas)|TestVMLifecycle)$' \
      ./cmd/... ./generate/... ./deploy/... ./vm/... ./internal/target/... ./lint/... ./fleet/...
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
