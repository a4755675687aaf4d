#!/usr/bin/env bash
# Build llama.cpp's own C++ `llama-server` (parallel slots, continuous batching) into
# $PREFIX/bin/llama-server (default .venv-llama-server/bin/llama-server), for the
# `llama-server` teacher backend (docs/llama-server.md).
#
# Source: the llama.cpp copy vendored in the llama-cpp-python sdist pinned in
# constraints/llama-server.txt (PyPI is the only source reachable on the project's machines).
# Portable (-DGGML_NATIVE=OFF: AVX2/FMA/F16C baseline, never tuned to this CPU; a native
# build died with SIGILL on the next machine), Release, static, no CURL, no OpenSSL, and no
# web UI: the sdist carries no prebuilt UI assets and the default would fetch them from a
# Hugging Face bucket, so LLAMA_BUILD_UI=OFF + LLAMA_USE_PREBUILT_UI=OFF embed an empty
# asset table (the HTTP API is unaffected; `/` serves nothing).
#
#   scripts/build_llama_server.sh [PREFIX]      (JOBS=n to change the parallelism)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${1:-$HERE/.venv-llama-server}"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-$(nproc)}"
CONSTRAINTS="$HERE/constraints/llama-server.txt"
VERSION="$(grep -E '^llama_cpp_python==' "$CONSTRAINTS" | cut -d= -f3)"
if [ -z "$VERSION" ]; then
    echo "no llama_cpp_python==VERSION pin in $CONSTRAINTS" >&2
    exit 2
fi
CMAKE_FLAGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DGGML_NATIVE=OFF
    -DLLAMA_CURL=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DBUILD_SHARED_LIBS=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_SERVER=ON
)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)
echo "llama-server: fetching llama-cpp-python==$VERSION sdist (vendored llama.cpp)"
# The file itself, found in the package index's JSON listing (PEP 691) and checked against
# the sha256 the index gives. `pip download` of an sdist first builds its metadata (an
# isolated build environment with scikit-build-core and cmake): minutes instead of a second.
# It stays the fallback for an index that does not serve the JSON listing.
SDIST="llama_cpp_python-$VERSION.tar.gz"
if ! "$PYTHON" - "$SDIST" "$WORK/$SDIST" "${PIP_INDEX_URL:-https://pypi.org/simple}" <<'PY'
import hashlib, json, sys, urllib.request
name, dest, index = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("/")
req = urllib.request.Request(
    f"{index}/llama-cpp-python/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
)
with urllib.request.urlopen(req, timeout=60) as r:
    files = json.load(r)["files"]
(entry,) = [f for f in files if f["filename"] == name]
digest = hashlib.sha256()
with urllib.request.urlopen(entry["url"], timeout=300) as r, open(dest, "wb") as out:
    while chunk := r.read(1 << 20):
        digest.update(chunk)
        out.write(chunk)
if digest.hexdigest() != entry["hashes"]["sha256"]:
    sys.exit(f"{name}: sha256 {digest.hexdigest()} is not the index's {entry['hashes']['sha256']}")
PY
then
    echo "llama-server: the index's JSON listing failed; falling back to pip download"
    rm -f "$WORK/$SDIST"
    "$PYTHON" -m pip download -q --no-binary :all: --no-deps --no-cache-dir \
        "llama-cpp-python==$VERSION" -d "$WORK"
fi
tar -xzf "$WORK/$SDIST" -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
test -f "$SRC/tools/server/server.cpp" || { echo "no tools/server in $SRC" >&2; exit 2; }
fetched=$(date +%s)

echo "llama-server: configuring (${CMAKE_FLAGS[*]})"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$SRC" -B "$WORK/build" "${generator[@]}" "${CMAKE_FLAGS[@]}" > "$WORK/configure.log" 2>&1 \
    || { tail -n 30 "$WORK/configure.log" >&2; exit 1; }
echo "llama-server: building target llama-server with $JOBS jobs"
cmake --build "$WORK/build" --target llama-server -j "$JOBS" > "$WORK/build.log" 2>&1 \
    || { tail -n 30 "$WORK/build.log" >&2; exit 1; }
built=$(date +%s)

mkdir -p "$PREFIX/bin"
install -m 0755 "$WORK/build/bin/llama-server" "$PREFIX/bin/llama-server.tmp"
mv "$PREFIX/bin/llama-server.tmp" "$PREFIX/bin/llama-server"
{
    echo "llama_cpp_python==$VERSION"
    echo "cmake ${CMAKE_FLAGS[*]}"
    echo "fetch_s=$((fetched - start)) build_s=$((built - fetched)) jobs=$JOBS"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$PREFIX/build-info.txt"
"$PREFIX/bin/llama-server" --version 2>&1 | tail -n 2 || true
echo "llama-server: $PREFIX/bin/llama-server ($(du -h "$PREFIX/bin/llama-server" | cut -f1)," \
     "fetch $((fetched - start)) s, build $((built - fetched)) s)"
