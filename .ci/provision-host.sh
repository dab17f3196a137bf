#!/usr/bin/env bash
# Host packages ktstr needs on Debian bookworm: QEMU >= 10 from
# bookworm-backports (bookworm's 7.2 crashes guests under MTTCG when
# sched_ext schedulers load and unload), kernel build tools, and cpio.
# The mirror is taken from the machine's own apt configuration.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  u=$(awk '/^URIs:/ {print $2; exit}' "$f")
  case "$u" in */debian) mirror="$u"; break;; esac
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1=="deb" && $2 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^http/) {print $i; exit}}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "provision: no Debian mirror found in apt sources" >&2; exit 1; }
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
bp=/etc/apt/sources.list.d/ktstr-backports.sources
if [ "$codename" = bookworm ] && [ ! -f "$bp" ]; then
  cat > "$bp" <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
apt-get update -q
if [ "$codename" = bookworm ]; then
  apt-get install -y -q -t bookworm-backports qemu-system-x86
else
  apt-get install -y -q qemu-system-x86
fi
apt-get install -y -q cpio file flex bison bc libelf-dev libssl-dev dwarves zlib1g-dev libzstd-dev
