#!/usr/bin/env bash
# Best-effort system packages for the test suite (Debian/Ubuntu, as root with apt only):
#  - libopenblas0-pthread: a fast BLAS that mlxinterp hands to MLX's CPU build (~30x matmuls)
#  - chromium: the headless browser that renders the demo report in the browser test
# Does nothing off Linux, without root or apt, or when the packages are already there; the
# suite passes without them (slower, and the browser test skips with a message).
set -u
[ "$(uname -s)" = Linux ] || exit 0
need=()
ls /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0 /usr/lib/*-linux-gnu/libopenblas.so.0 \
  >/dev/null 2>&1 || need+=(libopenblas0-pthread)
command -v chromium >/dev/null 2>&1 || [ -n "${MLXINTERP_NO_BROWSER:-}" ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: cannot apt-get install ${need[*]} (not root or no apt); continuing without them"
  exit 0
fi
echo "installing ${need[*]} (Debian packages) ..."
export DEBIAN_FRONTEND=noninteractive
(apt-get update -qq && apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 \
  || echo "note: apt-get install ${need[*]} failed; continuing without them"
exit 0
