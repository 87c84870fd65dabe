#!/usr/bin/env python3
"""Build egret's test images as OCI image layouts and push them to the local registry.

Every image is written by this script itself (oci-layout, index.json, blobs/sha256; gzip
layers; an image config with Docker-compatible fields), deterministically: the same host
binaries give the same digests. Layouts are cached under /var/cache/egret-test-images and an
image already in the registry with the expected digest is not pushed again unless --force.

Images (all under REGISTRY/egret/, tag "latest" unless noted):
  busybox      static busybox + applet links, /etc/os-release ID=egret-busybox, /data files
               (extra tags: "v2s2" = the same image as a Docker schema 2 manifest,
                "multiarch" = an OCI image index with linux/amd64 (runnable) and linux/arm64)
  multilayer   busybox layer + layers exercising the flattener (whiteouts, opaque dirs,
               hardlinks, setuid, xattrs, ownership, long/non-ASCII names); the expected
               merged tree goes to test-support/data/multilayer-expected.json
  entrypoint   busybox + Entrypoint/Cmd/WorkingDir/Env
  cudaenv      busybox + the Env of a CUDA image (CUDA_VERSION, NVIDIA_VISIBLE_DEVICES=all,
               NVIDIA_DRIVER_CAPABILITIES) and a shell ENTRYPOINT that writes to stdout and
               stderr, reports what it saw, exports variables and ends with exec "$@"
               (fails with exit code 7 when it sees ENTRY_FAIL)
  reported     busybox with a label of its own: an image only the import-reporting test pulls
               through Slurm (its first import must really download)
  hooklabels   busybox whose labels name hook annotations (com.hooks.mpi.enabled=true, ...):
               labels must never enable hooks
  pytorch      busybox + Env PYTORCH_VERSION (what PyTorch images carry; egret then sets the
               torch.distributed variables from the Slurm step)
  glibc        bash + coreutils from the host with their shared libraries and ld.so.cache
  debian       a stock Debian with apt (mmdebstrap --variant=apt, this machine's suite and apt
               sources): what `--container-remap-root` users install packages into
  mpich        the glibc image + Debian's MPICH runtime (libmpich12 and its shared libraries, all
               of libucx0 with its modules dir /usr/lib/x86_64-linux-gnu/ucx, as a stock image)
               + /usr/local/bin/mpi-report, mpi-pingpong and mpi-collectives
               (system-tests/mpi/*.c built with mpicc)
  big          (--big) >= 500 MB, 3 layers, tens of thousands of files, mixed content
  huge         (--big) busybox + two single-file layers of 512 MiB (about 1 GiB)

Standard library only. Run as root (writes the cache under /var/cache).
"""

import argparse
import concurrent.futures
import hashlib
import io
import json
import os
import platform
import random
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_CACHE = "/var/cache/egret-test-images"
DEFAULT_REGISTRY = "127.0.0.1:5000"
DEFAULT_EXPECTED = os.path.join(REPO, "test-support", "data", "multilayer-expected.json")

EPOCH = 1704067200  # 2024-01-01T00:00:00Z: every mtime in every layer
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Bump when big/huge change (they are not rebuilt on every edit of this script: they are slow).
BIG_RECIPE = "big-v2"
# system-tests/mpi/NAME.c, built into the mpich image as /usr/local/bin/mpi-NAME
MPI_PROGRAMS = ("report", "pingpong", "collectives")

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def log(msg):
    print(f"[build-test-images {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def go_arch():
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}.get(m, m)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# ----------------------------------------------------------------------------------------------
# Layer entries (an in-memory description of one tar layer, in tar order)

class Entry:
    """One tar member. path is absolute inside the image ("/bin/sh")."""

    __slots__ = ("path", "kind", "mode", "uid", "gid", "data", "size", "link", "xattrs")

    def __init__(self, path, kind, mode=0o755, uid=0, gid=0, data=None, size=None, link=None,
                 xattrs=None):
        assert path.startswith("/") and path != "/"
        self.path = path
        self.kind = kind  # dir | file | symlink | hardlink
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.data = data  # bytes, or a Generated for big content
        if size is None:
            size = len(data) if isinstance(data, bytes) else (data.size if data is not None else 0)
        self.size = size
        self.link = link  # symlink target, or the hardlink's target path (absolute)
        self.xattrs = xattrs or {}


def d(path, mode=0o755, uid=0, gid=0):
    return Entry(path, "dir", mode, uid, gid)


def f(path, data, mode=0o644, uid=0, gid=0, xattrs=None):
    if isinstance(data, str):
        data = data.encode()
    return Entry(path, "file", mode, uid, gid, data=data, xattrs=xattrs)


def sym(path, target):
    return Entry(path, "symlink", 0o777, link=target)


def hl(path, target, mode=0o644, uid=0, gid=0):
    return Entry(path, "hardlink", mode, uid, gid, link=target)


class Generated:
    """Deterministic pseudo-random or text-like content, sliced from shared pools."""

    POOL = 16 << 20
    _random = None
    _text = None

    @classmethod
    def pools(cls):
        if cls._random is None:
            rnd = random.Random(0xE62E7)
            cls._random = rnd.randbytes(cls.POOL)
            words = [b"egret", b"slurm", b"squashfs", b"overlay", b"runc", b"container",
                     b"image", b"layer", b"node", b"task", b"mount", b"hook", b"mpi", b"rank"]
            parts = []
            total = 0
            i = 0
            while total < cls.POOL:
                line = b"%08d " % i + b" ".join(rnd.choice(words) for _ in range(8)) + b"\n"
                parts.append(line)
                total += len(line)
                i += 1
            cls._text = b"".join(parts)[: cls.POOL]
        return cls._random, cls._text

    def __init__(self, seed, size, kind):
        self.seed = seed
        self.size = size
        self.kind = kind  # "random" | "text" | "mixed" (alternating 1 MiB chunks)

    def reader(self):
        return _GenReader(self)


class _GenReader:
    def __init__(self, gen):
        self.gen = gen
        self.pos = 0
        rnd, text = Generated.pools()
        self.pools = {"random": rnd, "text": text}
        self.offset = (gen.seed * 2654435761) % (Generated.POOL - 1)

    def read(self, n=-1):
        remaining = self.gen.size - self.pos
        if n is None or n < 0 or n > remaining:
            n = remaining
        out = []
        while n > 0:
            if self.gen.kind == "mixed":
                kind = "random" if (self.pos >> 20) % 2 == 0 else "text"
                chunk_left = (1 << 20) - (self.pos & ((1 << 20) - 1))
            else:
                kind = self.gen.kind
                chunk_left = n
            pool = self.pools[kind]
            start = (self.offset + self.pos) % Generated.POOL
            take = min(n, chunk_left, Generated.POOL - start)
            out.append(pool[start:start + take])
            self.pos += take
            n -= take
        return b"".join(out)


# ----------------------------------------------------------------------------------------------
# Writing layers and OCI layouts

class _GzipSink:
    """File-like sink: hashes the uncompressed stream, gzips it (deterministic header), hashes
    and writes the compressed stream."""

    BUF = 1 << 20

    def __init__(self, out, level):
        self.out = out
        self.diff = hashlib.sha256()
        self.blob = hashlib.sha256()
        self.comp = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip wrapper, mtime 0
        self.size = 0
        self.usize = 0
        self.pending = []
        self.pending_len = 0

    def write(self, b):
        self.pending.append(bytes(b))
        self.pending_len += len(b)
        if self.pending_len >= self.BUF:
            self._flush_pending()
        return len(b)

    def _flush_pending(self):
        if not self.pending:
            return
        data = b"".join(self.pending)
        self.pending = []
        self.pending_len = 0
        self.diff.update(data)
        self.usize += len(data)
        self._emit(self.comp.compress(data))

    def _emit(self, c):
        if c:
            self.blob.update(c)
            self.out.write(c)
            self.size += len(c)

    def close(self):
        self._flush_pending()
        self._emit(self.comp.flush())


def tarinfo_for(e):
    ti = tarfile.TarInfo(e.path.lstrip("/"))
    ti.mtime = EPOCH
    ti.mode = e.mode & 0o7777
    ti.uid, ti.gid = e.uid, e.gid
    ti.uname = ti.gname = ""
    if e.kind == "dir":
        ti.type = tarfile.DIRTYPE
    elif e.kind == "file":
        ti.type = tarfile.REGTYPE
        ti.size = e.size
    elif e.kind == "symlink":
        ti.type = tarfile.SYMTYPE
        ti.linkname = e.link
    elif e.kind == "hardlink":
        ti.type = tarfile.LNKTYPE
        ti.linkname = e.link.lstrip("/")
    else:
        raise ValueError(e.kind)
    if e.xattrs:
        ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in sorted(e.xattrs.items())}
    return ti


class Layout:
    """An OCI image layout directory being written."""

    def __init__(self, path):
        self.path = path
        self.blobs = os.path.join(path, "blobs", "sha256")
        os.makedirs(self.blobs, exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as fh:
            fh.write('{"imageLayoutVersion":"1.0.0"}')
        self.refs = []  # index.json manifests

    def put_blob(self, data):
        digest = hashlib.sha256(data).hexdigest()
        p = os.path.join(self.blobs, digest)
        if not os.path.exists(p):
            with open(p + ".tmp", "wb") as fh:
                fh.write(data)
            os.rename(p + ".tmp", p)
        return "sha256:" + digest, len(data)

    def write_layer(self, entries, level=6):
        """Write one gzip tar layer; returns its descriptor plus its diff_id."""
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".layer-")
        with os.fdopen(fd, "wb") as out:
            sink = _GzipSink(out, level)
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for e in entries:
                    ti = tarinfo_for(e)
                    if e.kind == "file":
                        src = e.data.reader() if isinstance(e.data, Generated) else io.BytesIO(e.data)
                        tar.addfile(ti, src)
                    else:
                        tar.addfile(ti)
            sink.close()
        digest = sink.blob.hexdigest()
        final = os.path.join(self.blobs, digest)
        os.replace(tmp, final)
        return {
            "mediaType": MT_LAYER_GZ,
            "digest": "sha256:" + digest,
            "size": sink.size,
        }, "sha256:" + sink.diff.hexdigest(), sink.usize

    def write_tar_layer(self, tar_path, level=6):
        """Write an existing tar file as one gzip layer; returns its descriptor plus its diff_id."""
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".layer-")
        with os.fdopen(fd, "wb") as out, open(tar_path, "rb") as src:
            sink = _GzipSink(out, level)
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                sink.write(chunk)
            sink.close()
        digest = sink.blob.hexdigest()
        os.replace(tmp, os.path.join(self.blobs, digest))
        return {
            "mediaType": MT_LAYER_GZ,
            "digest": "sha256:" + digest,
            "size": sink.size,
        }, "sha256:" + sink.diff.hexdigest()

    def add_image(self, layers, config, history, tag=None, arch=None):
        """layers: list of (descriptor, diff_id). Returns the manifest descriptor."""
        cfg = {
            "created": CREATED,
            "architecture": arch or go_arch(),
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
            "history": [{"created": CREATED, "created_by": h} for h in history],
        }
        cdig, csize = self.put_blob(canonical_json(cfg))
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": cdig, "size": csize},
            "layers": [desc for desc, _ in layers],
        }
        mdig, msize = self.put_blob(canonical_json(manifest))
        desc = {"mediaType": MT_MANIFEST, "digest": mdig, "size": msize}
        if tag:
            self.tag(desc, tag)
        return desc

    def add_index(self, manifests, tag):
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests}
        idig, isize = self.put_blob(canonical_json(index))
        desc = {"mediaType": MT_INDEX, "digest": idig, "size": isize}
        self.tag(desc, tag)
        return desc

    def tag(self, desc, tag):
        d2 = dict(desc)
        d2["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.refs.append(d2)

    def finish(self):
        index = {"schemaVersion": 2, "manifests": self.refs}
        with open(os.path.join(self.path, "index.json"), "wb") as fh:
            fh.write(canonical_json(index))


# ----------------------------------------------------------------------------------------------
# Image contents

BUSYBOX = "/bin/busybox"


def busybox_bytes():
    with open(BUSYBOX, "rb") as fh:
        return fh.read()


def os_release(ident, pretty):
    return (f'NAME="egret test image"\nID={ident}\nPRETTY_NAME="{pretty}"\n'
            f'VERSION_ID="1"\nHOME_URL="about:blank"\n')


def base_entries():
    """The busybox base layer, shared by busybox, multilayer, entrypoint, big and huge."""
    out = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True).stdout
    applets = sorted({a.strip() for a in out.split() if a.strip() and a.strip() != "busybox"})
    entries = [
        d("/bin"), f("/bin/busybox", busybox_bytes(), 0o755),
    ]
    entries += [sym(f"/bin/{a}", "/bin/busybox") for a in applets if "/" not in a]
    entries += [
        d("/dev"),
        d("/etc"),
        f("/etc/os-release", os_release("egret-busybox", "egret test busybox")),
        f("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
        f("/etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        f("/etc/hostname", "egret-busybox\n"),
        d("/home"),
        d("/proc"),
        d("/root", 0o700),
        d("/sbin"),
        d("/sys"),
        d("/tmp", 0o1777),
        d("/usr"), d("/usr/bin"), d("/usr/sbin"), d("/usr/local"), d("/usr/local/bin"),
        d("/var"), d("/var/tmp", 0o1777),
        d("/data"),
        f("/data/hello.txt", "hello from busybox image\n"),
        f("/data/numbers.txt", "".join(f"{i}\n" for i in range(1, 101))),
        f("/data/readonly.txt", "read-only file\n", 0o444),
    ]
    return entries


BUSYBOX_CONFIG = {
    "Env": [PATH_ENV],
    "Cmd": ["/bin/sh"],
    "Labels": {"org.opencontainers.image.title": "egret-busybox", "egret.test.image": "busybox"},
}


def multilayer_layers():
    """Layers on top of the busybox base that exercise the flattener. Returns a list of
    (description, entries)."""
    bb = busybox_bytes()
    l1 = [
        d("/data"),
        f("/data/to-delete.txt", "this file is deleted by a whiteout in layer 2\n"),
        f("/data/reborn.txt", "layer 1 version, whited out in layer 2\n"),
        f("/data/overwrite.txt", "version 1 (layer 1)\n"),
        d("/data/gone-dir"),
        f("/data/gone-dir/a.txt", "removed with its directory\n"),
        d("/data/gone-dir/sub"),
        f("/data/gone-dir/sub/b.txt", "removed with its directory\n"),
        f("/data/file-then-dir", "a file in layer 1, a directory in layer 3\n"),
        d("/data/dir-then-file"),
        f("/data/dir-then-file/child.txt", "gone when the directory becomes a file\n"),
        d("/opaque", 0o755),
        f("/opaque/a.txt", "hidden by the opaque marker\n"),
        f("/opaque/b.txt", "hidden by the opaque marker\n"),
        d("/opaque/sub"),
        f("/opaque/sub/c.txt", "hidden by the opaque marker\n"),
        d("/keep"),
        f("/keep/keep.txt", "untouched since layer 1\n"),
    ]
    long_name = "/data/long/" + "a-rather-long-directory-name-" * 3 + "/" + "file-with-a-long-name-" * 6 + ".txt"
    l2 = [
        d("/data"),
        f("/data/.wh.to-delete.txt", b""),
        f("/data/.wh.reborn.txt", b""),
        f("/data/overwrite.txt", "version 2 (layer 2)\n"),
        d("/opaque", 0o750),
        f("/opaque/new-before.txt", "listed before the opaque marker in the same layer\n"),
        f("/opaque/.wh..wh..opq", b""),
        f("/opaque/new.txt", "the only entries of /opaque come from layer 2\n"),
        d("/data/hl"),
        f("/data/hl/target.txt", "hardlinked content\n"),
        hl("/data/hl/link-after.txt", "/data/hl/target.txt"),
        # the link comes before its target in the tar stream
        hl("/data/hl/early-link.txt", "/data/hl/late-target.txt", 0o600),
        f("/data/hl/late-target.txt", "target listed after its hardlink\n", 0o600),
        d("/usr"), d("/usr/bin"),
        f("/usr/bin/suid-busybox", bb, 0o4755, 0, 0),
        f("/data/xattr.txt", "has a user.egret xattr\n", xattrs={"user.egret": "test"}),
        f("/data/owned.txt", "owned by 1234:1234, mode 0640\n", 0o640, 1234, 1234),
        sym("/data/link-to-hello", "hello.txt"),
        sym("/data/abs-link", "/etc/os-release"),
        sym("/data/dangling-link", "/does/not/exist"),
        d("/data/empty-dir", 0o700),
        d("/data/long"),
        d(os.path.dirname(long_name)),
        f(long_name, "a path longer than 100 bytes (PAX path header)\n"),
        f("/data/ünïcödé-名前.txt", "a non-ASCII file name\n"),
    ]
    l3 = [
        d("/data"),
        f("/data/.wh.gone-dir", b""),
        f("/data/reborn.txt", "layer 3 version: re-created after a whiteout\n"),
        d("/data/file-then-dir"),
        f("/data/file-then-dir/inside.txt", "the file became a directory\n"),
        f("/data/dir-then-file", "the directory became a file\n", 0o600),
        d("/etc"),
        f("/etc/os-release", os_release("egret-multilayer", "egret test multilayer")),
    ]
    return [("layer 1: files to delete, overwrite and hide", l1),
            ("layer 2: whiteouts, opaque dir, hardlinks, setuid, xattr, ownership, links", l2),
            ("layer 3: whiteout of a directory, re-creation, type changes", l3)]


def merge_layers(layers):
    """Apply OCI layer semantics to lists of entries; returns (state, absent).
    state: path -> Entry (hardlinks resolved to the target's content, with a group name)."""
    state = {}
    groups = {}
    ever = set()

    def remove_tree(p):
        for q in [q for q in state if q == p or q.startswith(p + "/")]:
            del state[q]
            groups.pop(q, None)

    for entries in layers:
        # whiteouts and opaque markers apply to the lower layers only
        for e in entries:
            parent, name = os.path.split(e.path)
            if name == ".wh..wh..opq":
                for q in [q for q in state if q.startswith(parent + "/")]:
                    del state[q]
                    groups.pop(q, None)
            elif name.startswith(".wh."):
                remove_tree(os.path.join(parent, name[4:]))
        files = {e.path: e for e in entries if e.kind == "file"}
        for e in entries:
            name = os.path.basename(e.path)
            if name.startswith(".wh."):
                continue
            old = state.get(e.path)
            if old is not None and old.kind == "dir" and e.kind != "dir":
                remove_tree(e.path)
            if e.kind == "hardlink":
                target = files[e.link]
                state[e.path] = target
                group = min(e.path, e.link)
                groups[e.path] = group
                groups[e.link] = group
            else:
                state[e.path] = e
                if e.path in groups and e.kind != "file":
                    groups.pop(e.path)
            ever.add(e.path)
    # a hardlink group's canonical name is its smallest path
    final_groups = {}
    for p, g in groups.items():
        if p in state:
            final_groups.setdefault(g, []).append(p)
    group_of = {}
    for members in final_groups.values():
        if len(members) > 1:
            for p in members:
                group_of[p] = min(members)
    absent = sorted(p for p in ever if p not in state and not os.path.basename(p).startswith(".wh."))
    return state, group_of, absent


def expected_tree(layers, image, manifest_digest):
    state, group_of, absent = merge_layers(layers)
    entries = {}
    for p in sorted(state):
        e = state[p]
        rec = {"type": e.kind, "uid": e.uid, "gid": e.gid}
        if e.kind == "symlink":
            rec["target"] = e.link
        else:
            rec["mode"] = e.mode & 0o7777
        if e.kind == "file":
            rec["size"] = e.size
            rec["sha256"] = hashlib.sha256(e.data).hexdigest()
            if p in group_of:
                rec["hardlink_group"] = group_of[p]
                rec["nlink"] = sum(1 for q in group_of.values() if q == group_of[p])
        if e.xattrs:
            rec["xattrs"] = dict(sorted(e.xattrs.items()))
        entries[p] = rec
    return {
        "_comment": ("Generated by scripts/build-test-images.py: the merged tree of "
                     "egret/multilayer. mode = permission bits incl. setuid/setgid/sticky "
                     "(decimal); symlinks have a target instead of mode; hardlinked files share "
                     "hardlink_group (its smallest path) and nlink; 'absent' paths existed in "
                     "some layer and must not exist after flattening. The root directory is "
                     "not listed."),
        "image": image,
        "manifest_digest": manifest_digest,
        "entries": entries,
        "absent": absent,
    }


def entrypoint_layer():
    return [
        d("/work"),
        f("/work/README", "working directory of the entrypoint image\n"),
        d("/etc"),
        f("/etc/os-release", os_release("egret-entrypoint", "egret test entrypoint")),
    ]


CUDAENV_ENTRYPOINT = """#!/bin/sh
# The entrypoint of the cudaenv test image: output on both streams, what it saw, exports.
echo entry-stdout
echo entry-stderr >&2
echo "entry-saw TLS=${DOCKER_TLS_VERIFY-unset} NAMED=${NAMED-unset} FOO=${FOO-unset} PMIX_MCA_psec=${PMIX_MCA_psec-unset}" >&2
if [ -n "${ENTRY_FAIL-}" ]; then
    echo entry-failing >&2
    exit 7
fi
export FROM_ENTRY=set-by-entry
export FOO=entry
exec "$@"
"""


def cudaenv_layer():
    return [
        d("/usr"),
        d("/usr/local"),
        d("/usr/local/bin"),
        f("/usr/local/bin/entry.sh", CUDAENV_ENTRYPOINT, mode=0o755),
    ]


def host_glibc_root(root, extra=()):
    """Copy bash + some coreutils (+ the host files in extra) and their shared libraries from the
    host into root, keeping the host's layout (usr-merge symlinks included). Returns the glibc
    version."""
    binaries = list(extra) + ["/bin/bash", "/usr/bin/env", "/bin/ls", "/bin/cat", "/usr/bin/id", "/bin/sleep",
                "/bin/true", "/bin/false", "/bin/echo", "/bin/mkdir", "/bin/rm", "/usr/bin/stat",
                "/bin/uname", "/bin/readlink", "/usr/bin/head", "/usr/bin/tail", "/usr/bin/wc",
                "/bin/touch", "/usr/bin/printenv", "/bin/pwd", "/bin/hostname", "/bin/grep",
                "/usr/bin/getent", "/sbin/ldconfig"]
    binaries = [b for b in binaries if os.path.exists(b)]

    def copy_path(p, depth=0):
        """Copy host path p (absolute) into root, replicating symlinked components."""
        if depth > 40:
            raise RuntimeError(f"symlink loop at {p}")
        parts = [x for x in p.split("/") if x]
        cur = ""
        for i, part in enumerate(parts):
            cur = cur + "/" + part
            dst = root + cur
            if os.path.islink(cur):
                target = os.readlink(cur)
                if not os.path.lexists(dst):
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    os.symlink(target, dst)
                resolved = os.path.normpath(os.path.join(os.path.dirname(cur), target))
                rest = "/".join(parts[i + 1:])
                copy_path(resolved + ("/" + rest if rest else ""), depth + 1)
                return
            if i < len(parts) - 1:
                if not os.path.isdir(dst):
                    os.makedirs(dst, exist_ok=True)
                    os.chmod(dst, 0o755)
            elif not os.path.lexists(dst):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy2(cur, dst)

    libs = set()
    for b in binaries:
        out = subprocess.run(["ldd", b], capture_output=True, text=True).stdout
        for line in out.splitlines():
            line = line.strip()
            if "=>" in line:
                path = line.split("=>", 1)[1].split("(")[0].strip()
            else:
                path = line.split("(")[0].strip()
            if path.startswith("/"):
                libs.add(path)
    for p in sorted(set(binaries) | libs):
        copy_path(p)
    for name in ("sh",):
        link = root + "/usr/bin/" + name
        if not os.path.lexists(link):
            os.symlink("bash", link)
    os.makedirs(root + "/etc/ld.so.conf.d", exist_ok=True)
    with open(root + "/etc/ld.so.conf", "w") as fh:
        fh.write("include /etc/ld.so.conf.d/*.conf\n")
    triplet = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("gcc") else "x86_64-linux-gnu"
    with open(root + f"/etc/ld.so.conf.d/{triplet}.conf", "w") as fh:
        fh.write(f"/lib/{triplet}\n/usr/lib/{triplet}\n")
    glibc = os.confstr("CS_GNU_LIBC_VERSION").split()[-1]
    with open(root + "/etc/os-release", "w") as fh:
        fh.write(os_release("egret-glibc", f"egret test glibc {glibc}"))
    with open(root + "/etc/passwd", "w") as fh:
        fh.write("root:x:0:0:root:/root:/bin/bash\n")
    with open(root + "/etc/group", "w") as fh:
        fh.write("root:x:0:\n")
    for p, mode in (("/tmp", 0o1777), ("/root", 0o700), ("/home", 0o755), ("/proc", 0o755),
                    ("/sys", 0o755), ("/dev", 0o755), ("/var", 0o755), ("/var/tmp", 0o1777)):
        os.makedirs(root + p, exist_ok=True)
        os.chmod(root + p, mode)
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    r = subprocess.run([ldconfig, "-r", root], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"warning: ldconfig -r failed ({r.stderr.strip()}); image has no ld.so.cache")
    return glibc


def scan_tree(root):
    """Entries for a staged directory tree, sorted, with root ownership."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = dirpath[len(root):] or "/"
        names = sorted(dirnames + filenames)
        for name in names:
            full = os.path.join(dirpath, name)
            path = (rel_dir.rstrip("/") + "/" + name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                entries.append(sym(path, os.readlink(full)))
            elif stat.S_ISDIR(st.st_mode):
                entries.append(d(path, stat.S_IMODE(st.st_mode)))
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as fh:
                    entries.append(f(path, fh.read(), stat.S_IMODE(st.st_mode)))
    # os.walk yields parents before children, but siblings' subtrees interleave: sort by path
    # components so every directory precedes its content.
    entries.sort(key=lambda e: e.path.split("/"))
    return entries


def big_layers():
    """Three layers, >= 500 MB uncompressed, tens of thousands of files."""
    rnd = random.Random(4242)
    # layer 1: busybox base + 24,000 small text files (~200 MB), very compressible
    l1 = base_entries() + [
        f("/etc/os-release", os_release("egret-big", "egret test big")),
        d("/big"), d("/big/text")]
    for i in range(120):
        l1.append(d(f"/big/text/d{i:03d}"))
        for j in range(200):
            n = i * 200 + j
            l1.append(Entry(f"/big/text/d{i:03d}/f{j:03d}.txt", "file", 0o644,
                            data=Generated(n, rnd.randint(1024, 15 * 1024), "text")))
    # layer 2: 12,000 binary files, 4-32 KiB, half random (~220 MB)
    l2 = [d("/big"), d("/big/bin")]
    for i in range(60):
        l2.append(d(f"/big/bin/d{i:02d}"))
        for j in range(200):
            n = 100000 + i * 200 + j
            kind = "random" if j % 2 else "text"
            l2.append(Entry(f"/big/bin/d{i:02d}/b{j:03d}.dat", "file", 0o644,
                            data=Generated(n, rnd.randint(4096, 32 * 1024), kind)))
    # layer 3: 40 large files, 1-8 MiB, mixed (~180 MB)
    l3 = [d("/big"), d("/big/large")]
    for i in range(40):
        l3.append(Entry(f"/big/large/blob{i:02d}.bin", "file", 0o644,
                        data=Generated(200000 + i, rnd.randint(1, 8) << 20, "mixed")))
    return [("busybox base + 24000 text files", l1), ("12000 binary files", l2),
            ("40 large mixed files", l3)]


def huge_layers():
    half = 512 << 20
    l2 = [d("/huge"), f("/etc/os-release", os_release("egret-huge", "egret test huge")),
          Entry("/huge/part1.bin", "file", 0o644, data=Generated(7, half, "mixed"))]
    l3 = [d("/huge"), Entry("/huge/part2.bin", "file", 0o644, data=Generated(8, half, "mixed"))]
    return [("512 MiB file", l2), ("512 MiB file", l3)]


# ----------------------------------------------------------------------------------------------
# Building and pushing

class Builder:
    def __init__(self, args):
        self.args = args
        self.cache = args.cache_dir
        os.makedirs(self.cache, exist_ok=True)
        self.bb_sha = sha256_file(BUSYBOX)
        self.script_sha = sha256_file(os.path.abspath(__file__))

    def recipe(self, name):
        parts = [name, go_arch(), self.bb_sha]
        if name in ("big", "huge"):
            parts.append(BIG_RECIPE)
        else:
            parts.append(self.script_sha)
        if name in ("glibc", "mpich"):
            parts.append(subprocess.run(
                ["dpkg-query", "-W", "libc6", "bash", "coreutils", "grep", "libc-bin"],
                capture_output=True, text=True).stdout)
        if name == "mpich":
            parts.append(subprocess.run(
                ["dpkg-query", "-W", "libmpich12", "libmpich-dev", "libucx0", "gcc"],
                capture_output=True, text=True).stdout)
            parts += [sha256_file(os.path.join(REPO, "system-tests", "mpi", n + ".c")) for n in MPI_PROGRAMS]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def layout_dir(self, name):
        return os.path.join(self.cache, name)

    def cached(self, name):
        p = self.layout_dir(name)
        try:
            with open(os.path.join(p, "egret-recipe")) as fh:
                return fh.read().strip() == self.recipe(name) and os.path.exists(os.path.join(p, "index.json"))
        except OSError:
            return False

    def build(self, name):
        final = self.layout_dir(name)
        if not self.args.force and self.cached(name):
            log(f"{name}: cached layout {final}")
            return final
        t0 = time.time()
        work = tempfile.mkdtemp(dir=self.cache, prefix=f".{name}-")
        os.chmod(work, 0o755)  # tests read the layouts as an ordinary user too
        try:
            lay = Layout(work)
            getattr(self, "build_" + name)(lay, work)
            lay.finish()
            with open(os.path.join(work, "egret-recipe"), "w") as fh:
                fh.write(self.recipe(name) + "\n")
            if os.path.exists(final):
                shutil.rmtree(final)
            os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        log(f"{name}: built {final} in {time.time() - t0:.1f}s")
        return final

    def base_layer(self, lay):
        desc, diff, _ = lay.write_layer(base_entries())
        return desc, diff

    def build_busybox(self, lay, work):
        base = self.base_layer(lay)
        hist = ["busybox-static with applet links, /etc/os-release, /data"]
        m = lay.add_image([base], BUSYBOX_CONFIG, hist, tag="latest")
        # a second, non-runnable platform for an OCI index (same layer, other architecture)
        other = "arm64" if go_arch() != "arm64" else "amd64"
        m2 = lay.add_image([base], BUSYBOX_CONFIG, hist, arch=other)
        lay.add_index([
            dict(m, platform={"architecture": go_arch(), "os": "linux"}),
            dict(m2, platform={"architecture": other, "os": "linux"}),
        ], tag="multiarch")

    def build_multilayer(self, lay, work):
        base = base_entries()
        layers = [self.base_layer(lay)]
        hist = ["busybox base"]
        for desc_text, entries in multilayer_layers():
            desc, diff, _ = lay.write_layer(entries)
            layers.append((desc, diff))
            hist.append(desc_text)
        config = {"Env": [PATH_ENV], "Cmd": ["/bin/sh"],
                  "Labels": {"egret.test.image": "multilayer"}}
        m = lay.add_image(layers, config, hist, tag="latest")
        image = f"{self.args.registry}/egret/multilayer:latest"
        exp = expected_tree([base] + [e for _, e in multilayer_layers()], image, m["digest"])
        data = json.dumps(exp, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        with open(os.path.join(work, "expected.json"), "wb") as fh:
            fh.write(data)

    def build_entrypoint(self, lay, work):
        layers = [self.base_layer(lay)]
        desc, diff, _ = lay.write_layer(entrypoint_layer())
        layers.append((desc, diff))
        config = {
            "Env": [PATH_ENV, "FOO=bar"],
            "Entrypoint": ["/bin/echo", "entry:"],
            "Cmd": ["default-cmd"],
            "WorkingDir": "/work",
            "Labels": {"egret.test.image": "entrypoint"},
        }
        lay.add_image(layers, config, ["busybox base", "/work"], tag="latest")

    def build_cudaenv(self, lay, work):
        layers = [self.base_layer(lay)]
        desc, diff, _ = lay.write_layer(cudaenv_layer())
        layers.append((desc, diff))
        config = {
            "Env": [PATH_ENV, "CUDA_VERSION=12.2.0", "NVIDIA_VISIBLE_DEVICES=all",
                    "NVIDIA_DRIVER_CAPABILITIES=compute,utility", "NVIDIA_REQUIRE_CUDA=cuda>=12.2",
                    "FOO=image", "NAMED=image"],
            "Entrypoint": ["/usr/local/bin/entry.sh"],
            "Cmd": ["/bin/sh"],
            "Labels": {"egret.test.image": "cudaenv"},
        }
        lay.add_image(layers, config, ["busybox base", "/usr/local/bin/entry.sh"], tag="latest")

    def build_reported(self, lay, work):
        config = {"Env": [PATH_ENV], "Cmd": ["/bin/sh"], "Labels": {"egret.test.image": "reported"}}
        lay.add_image([self.base_layer(lay)], config, ["busybox base"], tag="latest")

    def build_hooklabels(self, lay, work):
        labels = {"com.hooks.mpi.enabled": "true", "com.hooks.mpi.type": "mpich",
                  "com.hooks.glibc.enabled": "true", "com.hooks.ssh.enabled": "true",
                  "com.hooks.slurm-global-sync.enabled": "true",
                  "com.hooks.timestamp.enabled": "true", "com.hooks.mount.enabled": "true"}
        config = {"Env": [PATH_ENV], "Cmd": ["/bin/sh"], "Labels": labels}
        lay.add_image([self.base_layer(lay)], config, ["busybox base"], tag="latest")

    def build_pytorch(self, lay, work):
        config = {"Env": [PATH_ENV, "PYTORCH_VERSION=2.3.0", "WORLD_SIZE=from-image"],
                  "Cmd": ["/bin/sh"], "Labels": {"egret.test.image": "pytorch"}}
        lay.add_image([self.base_layer(lay)], config, ["busybox base"], tag="latest")

    def build_mpich(self, lay, work):
        root = os.path.join(work, "rootfs")
        os.makedirs(root)
        libmpich = "/usr/lib/x86_64-linux-gnu/libmpich.so.12"
        if not os.path.exists(libmpich) or not shutil.which("mpicc"):
            sys.exit(f"{libmpich} or mpicc missing: install mpich and libmpich-dev (scripts/install-deps.sh)")
        # Built first so that their NEEDED libraries come along; the same compiler and flags as
        # the host copies of scripts/mpi-fixture.sh. Staged under /tmp, whose copy in the image
        # is emptied again below.
        tmp = tempfile.mkdtemp(prefix="egret-mpi-", dir="/tmp")
        try:
            progs = []
            for name in MPI_PROGRAMS:
                out = os.path.join(tmp, "mpi-" + name)
                subprocess.run(["mpicc", "-O2", "-o", out,
                                os.path.join(REPO, "system-tests", "mpi", name + ".c")], check=True)
                progs.append(out)
            # All of libc6's libraries, as in any glibc-based image (the host MPI the hook
            # brings in may need some the image's own programs do not, e.g. libdl.so.2).
            libc6 = [p for p in subprocess.run(["dpkg-query", "-L", "libc6"], capture_output=True,
                                               text=True, check=True).stdout.split()
                     if re.fullmatch(r"/(usr/)?lib/[^/]+-linux-gnu/[^/]+\.so[.0-9]*", p)]
            # All of libucx0, as a stock image installing libmpich12 has it: its transport
            # modules in /usr/lib/x86_64-linux-gnu/ucx too, which a host libucs bound over the
            # image's loads from beside itself (what the MPI hook must handle).
            libucx = [p for p in subprocess.run(["dpkg-query", "-L", "libucx0"], capture_output=True,
                                                text=True, check=True).stdout.split()
                      if re.fullmatch(r"/usr/lib/[^/]+-linux-gnu/(ucx/)?[^/]+\.so[.0-9]*", p)]
            glibc = host_glibc_root(root, extra=[libmpich] + libc6 + libucx + progs)
            os.makedirs(root + "/usr/local/bin", exist_ok=True)
            for p in progs:
                os.replace(root + p, root + "/usr/local/bin/" + os.path.basename(p))
            shutil.rmtree(root + tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libmpich12"],
                                 capture_output=True, text=True).stdout
        with open(root + "/etc/os-release", "w") as fh:
            fh.write(os_release("egret-mpich", f"egret test MPICH {version} (glibc {glibc})"))
        ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
        subprocess.run([ldconfig, "-r", root], check=True)
        entries = scan_tree(root)
        shutil.rmtree(root)
        desc, diff, _ = lay.write_layer(entries)
        config = {"Env": [PATH_ENV], "Cmd": ["/usr/local/bin/mpi-report"],
                  "Labels": {"egret.test.image": "mpich", "egret.test.mpich-version": version}}
        lay.add_image([(desc, diff)], config, [f"Debian MPICH {version} with glibc {glibc}"],
                      tag="latest")

    def build_debian(self, lay, work):
        """A stock Debian (minimal system with apt) as its own tar, ownership and all, written by
        mmdebstrap from this machine's apt sources; the image's apt uses the same sources."""
        if not shutil.which("mmdebstrap"):
            sys.exit("mmdebstrap missing: install it (scripts/install-deps.sh)")
        suite = subprocess.run(["sh", "-c", ". /etc/os-release && echo $VERSION_CODENAME"],
                               capture_output=True, text=True, check=True).stdout.strip()
        tar_path = os.path.join(work, "rootfs.tar")
        hooks = []
        # The host's sources and settings (mirrors, proxies), as configured, replace the defaults.
        for src in ["/etc/apt/sources.list"] + sorted(
                os.path.join("/etc/apt/sources.list.d", n)
                for n in os.listdir("/etc/apt/sources.list.d")
                if n.endswith((".list", ".sources"))):
            if os.path.isfile(src):
                hooks.append(f'cp "{src}" "$1{src}"')
        hooks.insert(0, 'rm -f "$1/etc/apt/sources.list"')
        for n in sorted(os.listdir("/etc/apt/apt.conf.d")):
            src = os.path.join("/etc/apt/apt.conf.d", n)
            if os.path.isfile(src) and not n.startswith("docker-"):
                hooks.append(f'[ -e "$1{src}" ] || cp "{src}" "$1{src}"')
        cmd = ["mmdebstrap", "--quiet", "--variant=apt", "--mode=root", "--format=tar",
               "--customize-hook=" + " && ".join(hooks), suite, tar_path]
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
        desc, diff = lay.write_tar_layer(tar_path)
        os.remove(tar_path)
        config = {"Env": [PATH_ENV], "Cmd": ["/bin/bash"],
                  "Labels": {"egret.test.image": "debian", "egret.test.suite": suite}}
        lay.add_image([(desc, diff)], config, [f"mmdebstrap --variant=apt {suite}"], tag="latest")

    def build_glibc(self, lay, work):
        root = os.path.join(work, "rootfs")
        os.makedirs(root)
        glibc = host_glibc_root(root)
        entries = scan_tree(root)
        shutil.rmtree(root)
        desc, diff, _ = lay.write_layer(entries)
        config = {"Env": [PATH_ENV], "Cmd": ["/bin/bash"],
                  "Labels": {"egret.test.image": "glibc", "egret.test.glibc-version": glibc}}
        lay.add_image([(desc, diff)], config, [f"bash and coreutils with glibc {glibc}"], tag="latest")

    def _parallel_layers(self, lay, layer_specs, level):
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
            futs = [ex.submit(lay.write_layer, entries, level) for _, entries in layer_specs]
            results = [fu.result() for fu in futs]
        total = sum(u for _, _, u in results)
        return [(desc, diff) for desc, diff, _ in results], total

    def build_big(self, lay, work):
        Generated.pools()  # before the threads
        specs = big_layers()
        layers, total = self._parallel_layers(lay, specs, 1)
        log(f"big: {total / 1e6:.0f} MB uncompressed")
        config = {"Env": [PATH_ENV], "Cmd": ["/bin/sh"], "Labels": {"egret.test.image": "big"}}
        lay.add_image(layers, config, [t for t, _ in specs], tag="latest")

    def build_huge(self, lay, work):
        Generated.pools()  # before the threads
        specs = [("busybox base", base_entries())] + huge_layers()
        layers, total = self._parallel_layers(lay, specs, 1)
        log(f"huge: {total / 1e6:.0f} MB uncompressed")
        config = {"Env": [PATH_ENV], "Cmd": ["/bin/sh"], "Labels": {"egret.test.image": "huge"}}
        lay.add_image(layers, config, [t for t, _ in specs], tag="latest")

    # --- registry -------------------------------------------------------------------------------

    def remote_digest(self, ref):
        r = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", "docker://" + ref],
                           capture_output=True)
        if r.returncode != 0:
            return None
        return "sha256:" + hashlib.sha256(r.stdout).hexdigest()

    def push(self, name, layout, tag, local_digest, extra=(), record=None):
        ref = f"{self.args.registry}/egret/{name}:{tag}"
        want = local_digest
        if record:
            try:
                with open(os.path.join(layout, record)) as fh:
                    want = fh.read().strip()
            except OSError:
                want = None
        if not self.args.force and want and self.remote_digest(ref) == want:
            log(f"{ref}: already in the registry ({want[:19]}...)")
            return
        t0 = time.time()
        digestfile = os.path.join(layout, f".digest-{tag}")
        cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", digestfile,
               *extra, f"oci:{layout}:{tag if not record else 'latest'}", "docker://" + ref]
        subprocess.run(cmd, check=True)
        with open(digestfile) as fh:
            pushed = fh.read().strip()
        if record:
            with open(os.path.join(layout, record), "w") as fh:
                fh.write(pushed + "\n")
        elif pushed != local_digest:
            raise RuntimeError(f"{ref}: registry digest {pushed} differs from the layout's {local_digest}")
        log(f"{ref}: pushed {pushed[:19]}... in {time.time() - t0:.1f}s")

    def local_digest(self, layout, tag):
        with open(os.path.join(layout, "index.json")) as fh:
            index = json.load(fh)
        for m in index["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return m["digest"]
        raise KeyError(f"{layout}: no tag {tag}")

    def run(self, names):
        for name in names:
            layout = self.build(name)
            if name == "multilayer":
                self.install_expected(layout)
            if self.args.no_push:
                continue
            self.push(name, layout, "latest", self.local_digest(layout, "latest"))
            if name == "busybox":
                self.push(name, layout, "multiarch", self.local_digest(layout, "multiarch"),
                          extra=["--all"])
                self.push(name, layout, "v2s2", None, extra=["--format", "v2s2"],
                          record="pushed-v2s2.digest")

    def install_expected(self, layout):
        src = os.path.join(layout, "expected.json")
        dst = self.args.expected_out
        with open(src, "rb") as fh:
            data = fh.read()
        try:
            with open(dst, "rb") as fh:
                if fh.read() == data:
                    return
        except OSError:
            pass
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst + ".tmp", "wb") as fh:
            fh.write(data)
        os.replace(dst + ".tmp", dst)
        log(f"multilayer: wrote {dst}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="rebuild layouts and push even if present")
    ap.add_argument("--big", action="store_true", help="also build big and huge (benchmarks)")
    ap.add_argument("--only", help="comma-separated image names to build")
    ap.add_argument("--no-push", action="store_true", help="build the layouts only")
    ap.add_argument("--registry", default=DEFAULT_REGISTRY)
    ap.add_argument("--cache-dir", default=DEFAULT_CACHE)
    ap.add_argument("--expected-out", default=DEFAULT_EXPECTED,
                    help="where to write the multilayer expected tree (JSON)")
    args = ap.parse_args()

    names = ["busybox", "multilayer", "entrypoint", "cudaenv", "reported", "hooklabels", "pytorch", "glibc", "mpich", "debian"]
    if args.big:
        names += ["big", "huge"]
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in ("busybox", "multilayer", "entrypoint", "cudaenv", "reported", "hooklabels", "pytorch", "glibc", "mpich", "debian", "big", "huge")]
        if unknown:
            ap.error(f"unknown image(s): {', '.join(unknown)}")
        names = wanted
    if not os.path.exists(BUSYBOX):
        sys.exit(f"{BUSYBOX} not found: install busybox-static")
    t0 = time.time()
    Builder(args).run(names)
    log(f"done in {time.time() - t0:.1f}s: {', '.join(names)}")


if __name__ == "__main__":
    main()
