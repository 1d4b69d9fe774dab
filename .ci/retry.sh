#!/usr/bin/env bash
# retry.sh N CMD...: run CMD up to N times, 30 s apart; for installs whose downloads can drop.
set -uo pipefail
tries=$1; shift
for i in $(seq 1 "$tries"); do
  "$@" && exit 0
  rc=$?
  [ "$i" -lt "$tries" ] && { echo "retry.sh: attempt $i of $tries failed (exit $rc): $*; again in 30 s" >&2; sleep 30; }
done
exit "$rc"
