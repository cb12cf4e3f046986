#!/bin/sh
# Regenerates the nft JSON fixtures in this folder.
#
# It loads, inside a throwaway network namespace, the table that nixpkgs
# nixos/modules/services/networking/firewall-nftables.nix (read at commit
# 040b4eb6c33439c14b2ed3ff0660131bee4ef852) generates, wrapped the way
# nixos/modules/services/networking/nftables.nix loads tables
# ("table inet nixos-fw / delete table … / table inet nixos-fw { … }"),
# with the NixOS defaults checkReversePath = true, trustedInterfaces =
# [ "lo" ], logRefusedConnections = true, logRefusedPackets = false,
# rejectPackets = false, allowPing = true, pingLimit = null,
# filterOutput and filterForward off, and the case's open ports. Then it
# captures `nft -j list ruleset` (the fixture) and `nft list ruleset`
# (the .nft file beside it, for humans).
#
# Usage: sh gen.sh CASE   (run as root; needs nftables, iproute2)
# Cases:
#   healthy    allowedTCPPorts [22], allowedUDPPorts [5353]
#   broken     healthy + tcp 8080, TCP range 1000-2000, UDP range
#              60000-61000, interfaces.eth0 tcp 9000 / udp 9001, and
#              `nixos-firewall-tool open tcp 8888` (an element of the
#              temp-ports set)
#   disabled   nftables.service stopped: `nft flush ruleset`
set -eu
case=$1
ns=ks-fix-$$
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
x() { ip netns exec "$ns" "$@"; }

table() { # $1 = tcp set, $2 = udp set, $3 = eth0 tcp set, $4 = eth0 udp set
	allow=""
	[ -n "$1" ] && allow="$allow
    tcp dport { $1 } accept"
	[ -n "$2" ] && allow="$allow
    udp dport { $2 } accept"
	[ -n "$3" ] && allow="$allow
    iifname eth0 tcp dport { $3 } accept"
	[ -n "$4" ] && allow="$allow
    iifname eth0 udp dport { $4 } accept"
	cat <<EOF
table inet nixos-fw
delete table inet nixos-fw
table inet nixos-fw {
  set temp-ports {
    comment "Temporarily opened ports"
    type inet_proto . inet_service
    flags interval
    auto-merge
  }

  chain rpfilter {
    type filter hook prerouting priority mangle + 10; policy drop;

    meta nfproto ipv4 udp sport . udp dport { 67 . 68, 68 . 67 } accept comment "DHCPv4 client/server"
    fib saddr . mark . iif oif exists accept

    jump rpfilter-allow
  }

  chain rpfilter-allow {
  }

  chain input {
    type filter hook input priority filter; policy drop;

    iifname { "lo" } accept comment "trusted interfaces"

    # Some ICMPv6 types like NDP is untracked
    ct state vmap {
      invalid : drop,
      established : accept,
      related : accept,
      new : jump input-allow,
      untracked: jump input-allow,
    }

    tcp flags syn / fin,syn,rst,ack log level info prefix "refused connection: "
  }

  chain input-allow {
$allow

    meta l4proto . th dport @temp-ports accept

    icmp type echo-request  accept comment "allow ping"

    icmpv6 type != { nd-redirect, 139 } accept comment "Accept all ICMPv6 messages except redirects and node information queries (type 139).  See RFC 4890, section 4.4."
    ip6 daddr fe80::/64 udp dport 546 accept comment "DHCPv6 client"
  }
}
EOF
}

rules=$(mktemp)
trap 'ip netns del "$ns"; rm -f "$rules"' EXIT
case $case in
healthy) table "22" "5353" "" "" >"$rules"; x nft -f "$rules" ;;
broken)
	table "22, 8080, 1000-2000" "5353, 60000-61000" "9000" "9001" >"$rules"
	x nft -f "$rules"
	x nft add element inet nixos-fw temp-ports "{ tcp . 8888 }"
	;;
disabled) table "22" "5353" "" "" >"$rules"; x nft -f "$rules"; x nft flush ruleset ;;
*) echo "unknown case $case" >&2; exit 2 ;;
esac
dir=$(dirname "$0")
x nft -j list ruleset >"$dir/$case.json"
{
	echo "# keystone fixture: $case; produced by verify/testdata/nft/gen.sh $case"
	echo "# on $(. /etc/os-release; echo "$PRETTY_NAME"), $(x nft --version)"
	echo "# the JSON beside this file is \`nft -j list ruleset\` of the same ruleset"
	x nft list ruleset
} >"$dir/$case.nft"
