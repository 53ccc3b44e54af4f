#!/usr/bin/env bash
# Install Debian's threaded OpenBLAS so that mlxinterp can hand it to MLX's CPU build
# (~30x faster matmuls than the reference BLAS in the mlx-cpu wheel). Best effort: does
# nothing off Linux, without root or apt, or when the library is already there.
set -u
[ "$(uname -s)" = Linux ] || exit 0
ls /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0 >/dev/null 2>&1 && exit 0
ls /usr/lib/*-linux-gnu/libopenblas.so.0 >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: no OpenBLAS found and cannot apt-get install it; MLX will use its bundled BLAS (slower)"
  exit 0
fi
echo "installing libopenblas0-pthread (Debian) for a fast BLAS ..."
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread) >/dev/null 2>&1 \
  || echo "note: apt-get install libopenblas0-pthread failed; MLX will use its bundled BLAS (slower)"
exit 0
