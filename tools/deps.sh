#!/usr/bin/env bash
# Installs the Debian packages sdc needs to build and test, only those that
# are missing. Needs root (or sudo) the first time; a no-op afterwards.
#   tools/deps.sh           what the build and the tests need
#   tools/deps.sh --bench   that, plus what only benchmarks use (wrk)
#   tools/deps.sh --fuzz    that, plus what `make fuzz` needs: clang and its libFuzzer runtime
set -euo pipefail
PKGS=(build-essential pkg-config libpng-dev libjpeg62-turbo-dev libcjson-dev libpcre2-dev libutf8proc-dev
      libucx-dev ucx-utils libhiredis-dev libprotobuf-c-dev protobuf-c-compiler
      libopenmpi-dev openmpi-bin redis-server libmicrohttpd-dev libcurl4-openssl-dev jq shellcheck)
[ "${1:-}" = --bench ] && PKGS+=(wrk)
[ "${1:-}" = --fuzz ] && PKGS+=(clang libclang-rt-14-dev)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
