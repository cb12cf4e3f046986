#!/bin/sh
# keystone switch's supervisor. keystone starts it on the host with
# systemd-run, so it outlives the SSH connection that started it, and talks
# to it through files in KS_STATE (switch/supervisor.go has the protocol).
#
# Inputs, all from the environment:
#   KS_NEW       the new system (a toplevel store path)
#   KS_ACTION    test: activate, wait for the verdict, on keep make it the
#                boot default; boot: only make it the boot default
#   KS_STATE     this run's folder, /run/keystone/switch/ID
#   KS_LOCK      the lock every keystone switch on this host takes
#   KS_PROFILE   the system profile, /nix/var/nix/profiles/system
#   KS_CONFIRM   seconds to wait for the verdict after the activation
#   KS_ACTIVATE  seconds the activation may take before it is stopped
#
# Unlike a supervisor that sets the profile first, nothing here becomes the
# boot default before the verdict "keep": a hang, a panic or a power cut
# before it boots the old system.
set -u

say() { echo "keystone-switch: $*" >&2; }

# put NAME VALUE writes one state file whole: keystone may read it at any time.
put() {
	printf '%s\n' "$2" >"$KS_STATE/$1.tmp" && $MV -f "$KS_STATE/$1.tmp" "$KS_STATE/$1"
}

# The tools are resolved once, now, to the real folder they are in (a store
# path on NixOS): activating the new system moves /run/current-system/sw/bin,
# and the rollback must not depend on what it moved to. Only the folder:
# nix-env is a link to nix, which looks at the name it was called by.
tool() {
	p=$(command -v "$1") || { echo "keystone-switch: $1 is not on PATH" >&2; exit 3; }
	d=$(cd "${p%/*}" && pwd -P) || exit 3
	echo "$d/${p##*/}"
}
MV=$(tool mv) || exit 3
FLOCK=$(tool flock) || exit 3
READLINK=$(tool readlink) || exit 3
SLEEP=$(tool sleep) || exit 3
DATE=$(tool date) || exit 3
TIMEOUT=$(tool timeout) || exit 3
NIXENV=$(tool nix-env) || exit 3
LN=$(tool ln) || exit 3

for v in KS_NEW KS_ACTION KS_STATE KS_LOCK KS_PROFILE KS_CONFIRM KS_ACTIVATE; do
	eval "val=\${$v:-}"
	[ -n "$val" ] || { say "$v is not set"; exit 3; }
done

# refuse REASON: nothing was changed.
refuse() {
	put reason "$1"
	put state refused
	say "refused: $1"
	exit 3
}

# One keystone switch at a time, for as long as this script runs.
exec 9>>"$KS_LOCK" || refuse "cannot open $KS_LOCK"
$FLOCK -n 9 || refuse "another keystone switch holds $KS_LOCK"

old=$($READLINK -f /run/current-system) || refuse "no /run/current-system: not an installed NixOS"
gen=$($READLINK "$KS_PROFILE" 2>/dev/null) || gen=""
put old "$old"
put generation "$gen"

# activate SYSTEM ACTION: its switch-to-configuration, bounded.
activate() {
	$TIMEOUT --kill-after=10 "$KS_ACTIVATE" "$1/bin/switch-to-configuration" "$2"
}

# restoreProfile: the profile's generation as it was before this run.
restoreProfile() {
	[ -n "$gen" ] || return 0
	n=${gen%-link}
	n=${n##*-}
	$NIXENV -p "$KS_PROFILE" --switch-generation "$n"
}

# rollback REASON: the recorded system again, and the end of this run.
rollback() {
	trap '' TERM INT HUP
	put reason "$1"
	put state rolling-back
	say "rolling back to $old: $1"
	activate "$old" test
	rc=$?
	put rollback-exit "$rc"
	if [ "$rc" -ne 0 ]; then
		put state rollback-failed
		say "the rollback failed: $old/bin/switch-to-configuration test exited $rc"
		exit 5
	fi
	put state rolled-back
	say "rolled back to $old"
	exit 1
}

# keep: the new system becomes the boot default; undone if that fails.
keep() {
	trap '' TERM INT HUP
	put state keeping
	if ! $NIXENV -p "$KS_PROFILE" --set "$KS_NEW"; then
		restoreProfile
		[ "$KS_ACTION" = boot ] && refuse "nix-env --set $KS_NEW failed"
		rollback "nix-env -p $KS_PROFILE --set failed"
	fi
	activate "$KS_NEW" boot
	rc=$?
	if [ "$rc" -ne 0 ]; then
		say "switch-to-configuration boot exited $rc: making the old generation the default again"
		restoreProfile
		[ -n "$gen" ] && activate "$old" boot
		put boot-exit "$rc"
		[ "$KS_ACTION" = boot ] && { put state boot-failed; exit 4; }
		rollback "$KS_NEW/bin/switch-to-configuration boot exited $rc"
	fi
	put state kept
	say "kept $KS_NEW: it is the boot default"
	exit 0
}

if [ "$KS_ACTION" = boot ]; then
	keep
fi

put state activating
say "activating $KS_NEW (running: $old)"
activate "$KS_NEW" test
rc=$?
put activate-exit "$rc"
# 4 is "activated, but some units failed": not a system to keep.
[ "$rc" -eq 0 ] || rollback "$KS_NEW/bin/switch-to-configuration test exited $rc"

# From here on a stop of the unit is a verdict too: roll back.
trap 'rollback "the supervisor was stopped"' TERM INT HUP

# Hold NixOS's own switch lock while waiting, so that no nixos-rebuild runs
# in between; switch-to-configuration takes it, so it is let go before the
# verdict is carried out.
mkdir -p /run/nixos
exec 8>>/run/nixos/switch-to-configuration.lock && $FLOCK -n 8 || say "warning: another process holds /run/nixos/switch-to-configuration.lock"

end=$(($($DATE +%s) + KS_CONFIRM))
put deadline "$end"
put state waiting
say "waiting ${KS_CONFIRM}s for keystone's verdict"
verdict=""
while :; do
	if [ -e "$KS_STATE/verdict" ]; then
		read -r verdict <"$KS_STATE/verdict" || verdict=""
		break
	fi
	[ "$($DATE +%s)" -lt "$end" ] || break
	$SLEEP 0.1 &
	wait $!
done
exec 8>&-

case $verdict in
keep) keep ;;
rollback)
	why="keystone said roll back"
	[ -e "$KS_STATE/verdict-reason" ] && read -r why <"$KS_STATE/verdict-reason"
	rollback "$why"
	;;
*) rollback "no verdict within ${KS_CONFIRM}s" ;;
esac
