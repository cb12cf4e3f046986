#!/usr/bin/env bash
# Captures `cryptsetup luksDump --dump-json-metadata` of LUKS2 volumes in
# image files, enrolled with the real systemd-cryptenroll against a swtpm
# TPM2 (through the tss2 swtpm TCTI: no /dev/tpm needed, no dm-crypt: only
# headers are written). Run as: gen.sh OUTDIR. Debian 12: cryptsetup-bin,
# systemd, swtpm, libtss2-tcti-swtpm0.
set -euo pipefail
out=$(realpath "${1:-.}")
work=$(mktemp -d)
trap 'tpm_stop; rm -rf "$work"' EXIT
cd "$work"
# Without a resource manager each client's sessions stay in the TPM, and a
# killed swtpm counts towards its dictionary-attack lockout: a new TPM for
# every enrollment.
tpm_stop() { [ -f "$work/swtpm.pid" ] && kill "$(cat "$work/swtpm.pid")" 2>/dev/null; rm -f "$work/swtpm.pid"; sleep 0.2; }
tpm_start() {
  rm -rf "$work/tpm"; mkdir "$work/tpm"
  swtpm socket --tpm2 --tpmstate dir="$work/tpm" --server type=tcp,port=22321,bindaddr=127.0.0.1 \
    --ctrl type=tcp,port=22322,bindaddr=127.0.0.1 --flags startup-clear --daemon --pid file="$work/swtpm.pid"
}
tpm=swtpm:host=127.0.0.1,port=22321
umask 077
printf 'correct horse' > pw
printf 'battery staple' > pw2
fast=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)

volume() { rm -f vol.img; truncate -s 32M vol.img; cryptsetup luksFormat --batch-mode --type luks2 "$@" --key-file pw vol.img; }
dump() { { echo "# $1"; cryptsetup luksDump --dump-json-metadata vol.img; } > "$out/$2.json"; }
enroll() { tpm_stop; tpm_start; systemd-cryptenroll --unlock-key-file=pw "$@" vol.img >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }; }

volume
dump "luksFormat (argon2id defaults): one password keyslot, no token" password-only
volume "${fast[@]}"; enroll --tpm2-device=$tpm --tpm2-pcrs=7
dump "password, then systemd-cryptenroll --tpm2-pcrs=7" tpm2-pcr7
volume "${fast[@]}"; enroll --tpm2-device=$tpm --tpm2-pcrs=0+2+7; enroll --recovery-key
dump "password, --tpm2-pcrs=0+2+7, then --recovery-key" tpm2-pcr027-recovery
volume "${fast[@]}"; cryptsetup luksAddKey --batch-mode "${fast[@]}" --key-file pw vol.img pw2; enroll --tpm2-device=$tpm --tpm2-pcrs=7
dump "two passwords (luksAddKey), then --tpm2-pcrs=7" tpm2-two-passwords
volume "${fast[@]}"; enroll --tpm2-device=$tpm --tpm2-pcrs=7 --wipe-slot=password
dump "--tpm2-pcrs=7 --wipe-slot=password: the TPM2 slot alone" tpm2-only
volume "${fast[@]}"; enroll --recovery-key
dump "password, then --recovery-key: no TPM2" recovery-no-tpm2
