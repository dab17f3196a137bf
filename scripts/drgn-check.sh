#!/usr/bin/env bash
# Cross-check a ktstr vmcore with drgn: jiffies_64 and CPU 0's
# rq->scx.nr_running as drgn reads them must equal ktstr's own readings.
#
# usage: scripts/drgn-check.sh VMLINUX_WITH_DWARF VMLINUX_STRIPPED VMCORE
#   VMLINUX_WITH_DWARF  the unstripped vmlinux of the same build (drgn 0.3
#                       needs DWARF for vmcores; keep it with
#                       `ktstr kernel build --keep-debug`: vmlinux.debug)
#   VMLINUX_STRIPPED    the cached vmlinux (symbols + BTF) ktstr uses
#   VMCORE              a vmcore ktstr wrote (e.g. `ktstr run --vmcore`)
# Installs drgn into a private venv under ${KTSTR_DRGN_VENV:-/tmp/ktstr-drgn-venv}.
set -euo pipefail
[ $# -eq 3 ] || { sed -n '2,12p' "$0"; exit 2; }
debug=$1 stripped=$2 core=$3
venv=${KTSTR_DRGN_VENV:-/tmp/ktstr-drgn-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q drgn
fi
ktstr=${KTSTR_BIN:-$(dirname "$0")/../target/release/ktstr}
[ -x "$ktstr" ] || cargo build --release --bin ktstr
ours=$("$ktstr" analyze --vmlinux "$stripped" --vmcore "$core" --json)
k_j=$(printf '%s' "$ours" | python3 -c 'import json,sys; print(json.load(sys.stdin)["jiffies"])')
k_n=$(printf '%s' "$ours" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cpus"][0]["nr_running"])')
read -r d_j d_n < <("$venv/bin/python" - "$debug" "$core" <<'PY'
import sys, drgn
from drgn.helpers.linux.percpu import per_cpu
prog = drgn.Program()
prog.set_core_dump(sys.argv[2])
prog.load_debug_info([sys.argv[1]])
print(int(prog["jiffies_64"]), int(per_cpu(prog["runqueues"], 0).scx.nr_running))
PY
)
echo "jiffies_64:            ktstr=$k_j drgn=$d_j"
echo "cpu0 scx.nr_running:   ktstr=$k_n drgn=$d_n"
[ "$k_j" = "$d_j" ] && [ "$k_n" = "$d_n" ] && echo "drgn check: MATCH" || { echo "drgn check: MISMATCH"; exit 1; }
