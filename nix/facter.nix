# The module mkHosts adds for a host with a facter.json: nixos-facter's
# hardware report, which nixpkgs' hardware.facter turns into kernel
# modules, firmware and CPU settings.
report:
{ options, ... }:
{
  # hardware.facter came with nixpkgs 25.11; defining an option a nixpkgs
  # does not declare is an error, so older ones get a warning instead.
  config =
    if options ? hardware && options.hardware ? facter then
      { hardware.facter.reportPath = report; }
    else
      { warnings = [ "${toString report} is not used: this nixpkgs has no hardware.facter (nixos-25.11 has)" ]; };
}
