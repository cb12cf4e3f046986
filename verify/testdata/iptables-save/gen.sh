#!/bin/sh
# Regenerates the iptables-save fixtures in this folder.
#
# It replays, inside a throwaway network namespace, the commands of the
# NixOS firewall-start script from nixpkgs
# nixos/modules/services/networking/firewall-iptables.nix (read at commit
# 0d953321a18cf484b637b9932f8b3040bbfb11e3), with the NixOS defaults
# rejectPackets = false, logRefusedConnections = true,
# logRefusedPackets = false, allowPing = true, pingLimit = null,
# enableIPv6 = true, trustedInterfaces = [ "lo" ] (lo is added by
# firewall.nix), checkReversePath = true, and the case's open ports.
# Then it captures iptables-save and ip6tables-save.
#
# Usage: sh gen.sh CASE   (run as root; needs iptables, iproute2)
# Cases:
#   healthy     allowedTCPPorts [22], allowedUDPPorts [5353]
#   broken      healthy + tcp 8080, TCP range 1000-2000, UDP range
#               60000-61000, and interfaces.eth0 with tcp 9000 and udp 9001
#   disabled    no firewall rules at all (networking.firewall.enable = false)
#   stopped     healthy, then firewall-stop: chains stay, INPUT hook gone
set -eu
case=$1
ns=ks-fix-$$
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
x() { ip netns exec "$ns" "$@"; }
ip46tables() { x iptables -w "$@"; x ip6tables -w "$@"; }
iptables() { x iptables "$@"; }
ip6tables() { x ip6tables "$@"; }

start() {
	tcp=$1 tcpranges=$2 udp=$3 udpranges=$4 eth0tcp=$5 eth0udp=$6
	ip46tables -N nixos-fw-accept
	ip46tables -A nixos-fw-accept -j ACCEPT
	ip46tables -N nixos-fw-refuse
	ip46tables -A nixos-fw-refuse -j DROP
	ip46tables -N nixos-fw-log-refuse
	ip46tables -A nixos-fw-log-refuse -p tcp --syn -j LOG --log-level info --log-prefix "refused connection: "
	ip46tables -A nixos-fw-log-refuse -m pkttype ! --pkt-type unicast -j nixos-fw-refuse
	ip46tables -A nixos-fw-log-refuse -j nixos-fw-refuse
	ip46tables -N nixos-fw
	ip46tables -t mangle -N nixos-fw-rpfilter
	ip46tables -t mangle -A nixos-fw-rpfilter -m rpfilter --validmark -j RETURN
	iptables -t mangle -A nixos-fw-rpfilter -p udp --sport 67 --dport 68 -j RETURN
	iptables -t mangle -A nixos-fw-rpfilter -s 0.0.0.0 -d 255.255.255.255 -p udp --sport 68 --dport 67 -j RETURN
	ip46tables -t mangle -A nixos-fw-rpfilter -j DROP
	ip46tables -t mangle -A PREROUTING -j nixos-fw-rpfilter
	ip46tables -A nixos-fw -i lo -j nixos-fw-accept
	ip46tables -A nixos-fw -i ve-+ -p udp --dport 67 -j nixos-fw-accept
	ip46tables -A nixos-fw -i vz-+ -p udp --dport 67 -j nixos-fw-accept
	ip46tables -A nixos-fw -i vt-+ -p udp --dport 67 -j nixos-fw-accept
	ip46tables -A nixos-fw -i ns-+ -p udp --dport 67 -j nixos-fw-accept
	ip46tables -A nixos-fw -m conntrack --ctstate ESTABLISHED,RELATED -j nixos-fw-accept
	# mapAttrsToList walks allInterfaces by name: "default" before "eth0".
	for p in $tcp; do ip46tables -A nixos-fw -p tcp --dport "$p" -j nixos-fw-accept; done
	for p in $eth0tcp; do ip46tables -A nixos-fw -p tcp --dport "$p" -j nixos-fw-accept -i eth0; done
	for r in $tcpranges; do ip46tables -A nixos-fw -p tcp --dport "$r" -j nixos-fw-accept; done
	for p in $udp; do ip46tables -A nixos-fw -p udp --dport "$p" -j nixos-fw-accept; done
	for p in $eth0udp; do ip46tables -A nixos-fw -p udp --dport "$p" -j nixos-fw-accept -i eth0; done
	for r in $udpranges; do ip46tables -A nixos-fw -p udp --dport "$r" -j nixos-fw-accept; done
	iptables -w -A nixos-fw -p icmp --icmp-type echo-request -j nixos-fw-accept
	ip6tables -A nixos-fw -p icmpv6 --icmpv6-type redirect -j DROP
	ip6tables -A nixos-fw -p icmpv6 --icmpv6-type 139 -j DROP
	ip6tables -A nixos-fw -p icmpv6 -j nixos-fw-accept
	ip6tables -A nixos-fw -d fe80::/64 -p udp --dport 546 -j nixos-fw-accept
	ip46tables -A nixos-fw -j nixos-fw-log-refuse
	ip46tables -A INPUT -j nixos-fw
}

case $case in
healthy) start "22" "" "5353" "" "" "" ;;
broken) start "22 8080" "1000:2000" "5353" "60000:61000" "9000" "9001" ;;
disabled) ;;
stopped)
	start "22" "" "5353" "" "" ""
	ip46tables -D INPUT -j nixos-fw
	ip46tables -t mangle -D PREROUTING -j nixos-fw-rpfilter
	;;
*) echo "unknown case $case" >&2; exit 2 ;;
esac

{
	echo "# keystone fixture: $case; produced by verify/testdata/iptables-save/gen.sh $case"
	echo "# on $(. /etc/os-release; echo "$PRETTY_NAME"), $(x iptables --version)"
	x iptables-save
} >"$(dirname "$0")/$case.v4.txt"
{
	echo "# keystone fixture: $case; produced by verify/testdata/iptables-save/gen.sh $case"
	echo "# on $(. /etc/os-release; echo "$PRETTY_NAME"), $(x ip6tables --version)"
	x ip6tables-save
} >"$(dirname "$0")/$case.v6.txt"
