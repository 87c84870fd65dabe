#!/usr/bin/env bash
# Test fixture for the native MPI hook: a second MPICH, "the host's native MPI", next to Debian's
# (which the egret/mpich test image carries). Idempotent; run as root by scripts/install-deps.sh.
#
#   /opt/egret-test/mpich-host   a Python venv holding the pinned MPICH wheel from PyPI:
#                                lib/libmpi.so.12 (MPICH ABI, RUNPATH $ORIGIN:$ORIGIN/mpich) and
#                                its libfabric/UCX in lib/mpich/; lib/libmpich.so.12 -> libmpi.so.12
#                                lets programs linked with Debian's mpicc run on it natively
#                                (LD_LIBRARY_PATH=/opt/egret-test/mpich-host/lib)
#   /opt/egret-test/mpi/bin      mpi-report, mpi-pingpong, mpi-collectives (system-tests/mpi/*.c built with Debian's mpicc,
#                                the same programs as in the egret/mpich image)
#
# etc/hooks.d/05-mpi-mpich.json points MPI_LIBS/MPI_DEPENDENCY_LIBS at the venv's libraries.
set -euo pipefail

MPICH_WHEEL_VERSION=5.0.2
PREFIX=/opt/egret-test/mpich-host
BIN=/opt/egret-test/mpi/bin
REPO=$(cd "$(dirname "$0")/.." && pwd)
STAMP="$PREFIX/.egret-fixture"

log() { printf '[mpi-fixture] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "mpi-fixture.sh must run as root" >&2
    exit 1
fi

if [ "$(cat "$STAMP" 2>/dev/null)" = "mpich==$MPICH_WHEEL_VERSION" ] && [ -f "$PREFIX/lib/libmpi.so.12" ]; then
    log "MPICH $MPICH_WHEEL_VERSION already in $PREFIX"
else
    log "installing MPICH $MPICH_WHEEL_VERSION (PyPI wheel) into $PREFIX"
    rm -rf "$PREFIX"
    # Debian's python3 (python3-venv); a venv so pip installs the wheel's lib/ data files too
    # (pip --target drops them).
    /usr/bin/python3 -m venv "$PREFIX"
    "$PREFIX/bin/pip" install --quiet --disable-pip-version-check --no-deps \
        "mpich==$MPICH_WHEEL_VERSION"
    echo "mpich==$MPICH_WHEEL_VERSION" >"$STAMP"
fi
ln -sfn libmpi.so.12 "$PREFIX/lib/libmpich.so.12"
chmod -R a+rX "$PREFIX"

mkdir -p "$BIN"
for name in report pingpong collectives; do
    src="$REPO/system-tests/mpi/$name.c"
    out="$BIN/mpi-$name"
    if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
        log "building $out"
        mpicc -O2 -o "$out.tmp" "$src"
        mv -f "$out.tmp" "$out"
    fi
done
chmod -R a+rX /opt/egret-test
log "native check: $(LD_LIBRARY_PATH=$PREFIX/lib "$PREFIX/bin/mpichversion" 2>/dev/null | head -1 | tr -s ' \t' ' ')"
