#!/usr/bin/env bash
# Install the Debian 12 packages egret's build, tests and local cluster need.
# Idempotent: apt is only touched when a package is missing. Run as root.
set -euo pipefail

PACKAGES=(
    # Slurm (22.05 in Debian 12) and its authentication
    slurmd slurmctld slurm-client libslurm-dev munge libpmix2
    # Slurm's mpi/pmix plugin dlopens pmix2/lib/libpmix.so, which only the -dev package ships
    libpmix-dev
    # container runtime, image tools, local registry
    runc squashfs-tools squashfs-tools-ng squashfuse fuse3 skopeo umoci docker-registry
    # a stock Debian test image (egret/debian) from this machine's apt sources
    mmdebstrap
    # the network filesystem of the shared-store tests (scripts/shared-fs-up.sh)
    glusterfs-server glusterfs-client
    # htpasswd (bcrypt) for the login-protected test registry on 127.0.0.1:5001
    apache2-utils
    # things bind-mounted into or used by containers and tests
    busybox-static tini dropbear-bin mpich
    # the MPI hook's fixtures (scripts/mpi-fixture.sh): Debian's MPICH for the egret/mpich image
    # and mpicc; a venv for the "host" MPICH wheel from PyPI
    libmpich12 libmpich-dev python3-venv
    # build (bindgen needs libclang; Rust links with cc; the fuzz targets build libFuzzer, C++)
    libclang-dev gcc g++ libc6-dev pkg-config make
    # scripts and tests
    jq hyperfine python3 iproute2 util-linux procps curl ca-certificates
)

log() { printf '[install-deps] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh must run as root" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
    log "all ${#PACKAGES[@]} packages already installed"
else
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # --no-install-recommends keeps a CI machine small; everything needed is listed above.
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's slurmd/slurmctld/munge units may have been started by the install (on machines with
# systemd) against a config that does not exist yet; scripts/cluster-up.sh takes over from here.

# The MPI hook's test fixture: a second, "native" MPICH under /opt/egret-test (idempotent).
bash "$(dirname "$0")/mpi-fixture.sh"

# The Rust toolchain does not come from apt (Debian 12's rustc is too old for our dependencies).
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found (expected in PATH or ~/.cargo/bin); install a current stable Rust toolchain with clippy and rustfmt" >&2
    exit 1
fi
for comp in clippy fmt; do
    if ! cargo "$comp" --version >/dev/null 2>&1; then
        log "warning: 'cargo $comp' is not available; 'make lint' will fail"
    fi
done
log "rust: $(cargo --version)"
# cargo-fuzz (from crates.io) for the fuzz targets in fuzz/ (`make fuzz`, a short run in `make test`).
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
