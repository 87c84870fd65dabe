#!/usr/bin/env python3
"""Part of scripts/bench.sh: turns a results directory into the table of ratios and targets.

Usage: report.py [--markdown] RESULTS_DIR

RESULTS_DIR holds what bench.sh wrote: meta.json, import.tsv (LABEL RUN SECONDS), sizes.tsv,
images.tsv, mpi.tsv (LABEL RUN SECONDS), failures.txt and hyperfine JSON exports
(PREFIX-roundN.json, pooled across rounds).
Ratios are ratios of medians (the min ratio is shown too). Exit status: 1 when a measurement
failed or a row that was not skipped (BENCH_SKIP) has no data, 0 otherwise, whatever the
PASS/MISS results are.
"""

import glob
import math
import json
import os
import statistics
import sys

# id, section, kind, title, egret series, reference series, target (issue 16 where it sets one)
#   kind "ratio":    PASS if median(egret) / median(reference) <= target
#   kind "overhead": PASS if median(egret) - median(reference) <= target milliseconds
#   kind "memory":   PASS if median(egret) <= target MiB (no reference)
#   kind "extra":    PASS if median(egret) - median(reference) <= target x median(the series
#                    named in EXTRA_BASE[id]); used for the cost of --container-save
ROWS = [
    ("1", "import", "ratio", "import egret/big, zstd-3: egret pull / Sarus pipeline",
     "imp:egret-zstd", "imp:sarus-zstd", 0.35),
    ("1d", "import", "ratio", "import egret/big, zstd-3: egret pull / mksquashfs alone (unpacked tree)",
     "imp:egret-zstd", "imp:sarus-zstd:mksquashfs", 1.2),
    ("1b", "import", "ratio", "import egret/big, gzip (both): egret pull / Sarus pipeline",
     "imp:egret-gzip", "imp:sarus-gzip", 1.0),
    ("1c", "import", "ratio", "import egret/big, defaults: egret (zstd-3) / Sarus (gzip)",
     "imp:egret-zstd", "imp:sarus-gzip", 0.35),
    ("2", "start", "ratio", "start: egret run busybox (installed config) / raw runc run",
     "hf:egret-busybox", "hf:runc", 1.2),
    ("2b", "start", "ratio", "start: egret run busybox / raw runc run, installed seccomp profile",
     "hf:egret-busybox", "hf:runc-seccomp", 1.2),
    ("3a", "start", "ratio", "size: egret run huge / egret run busybox",
     "hf:size-huge", "hf:size-busybox", 1.05),
    ("3b", "srun", "ratio", "size: srun --container-image huge / busybox (jobs)",
     "hf:srun-huge-n1", "hf:srun-busybox-n1", 1.05),
    ("3c", "salloc", "ratio", "size: srun --container-image huge / busybox (in salloc)",
     "hf:alloc-huge-n1", "hf:alloc-busybox-n1", 1.05),
    ("4a", "srun", "overhead", "srun -n1: --container-image busybox / plain (jobs)",
     "hf:srun-busybox-n1", "hf:srun-plain-n1", 20.0),
    ("4b", "srun", "overhead", "srun -n8: --container-image busybox / plain (jobs)",
     "hf:srun-busybox-n8", "hf:srun-plain-n8", 20.0),
    ("4c", "salloc", "overhead", "srun -n1: --container-image busybox / plain (in salloc)",
     "hf:alloc-busybox-n1", "hf:alloc-plain-n1", 20.0),
    ("4d", "salloc", "overhead", "srun -n8: --container-image busybox / plain (in salloc)",
     "hf:alloc-busybox-n8", "hf:alloc-plain-n8", 20.0),
    ("7a", "salloc", "ratio", "named container: later step / first step (in salloc)",
     "hf:named-second", "hf:named-first", 1.0),
    ("7b", "save", "extra", "srun --container-save egret/big / the same step without saving",
     "imp:save-big", "imp:run-big", 1.2),
    ("8a", "memory", "memory", "peak memory (VmHWM): egret run busybox",
     "mem:egret-run", None, 16.0),
    ("8b", "memory", "memory", "peak memory (VmHWM): egret-launcher of a step",
     "mem:launcher", None, 32.0),
    ("6", "mpi", "ratio", "MPI ping-pong 8 B latency: --mpi-hook (host MPICH) / native",
     "mpi:egret-hook", "mpi:native", 1.03),
    ("6b", "mpi", "ratio", "MPI ping-pong 8 B latency: image's MPICH (no hook) / native",
     "mpi:egret-image", "mpi:native", 1.03),
]

# For kind "extra": saving may cost at most 1.2x what mksquashfs alone takes for egret/big.
EXTRA_BASE = {"7b": ("imp:sarus-zstd:mksquashfs", "mksquashfs alone")}

PEERS = [
    "pyxis 0.24 + enroot 4.1 (default settings) re-imports the image at every srun step: "
    "busybox 0.88 s, 1.2 GiB image 15.7 s, 1.9 GiB 21.0 s per step (plain srun 45 ms)",
    "Sarus 1.7: `sarus run` 81 ms vs raw `runc run` 44 ms (x1.84), the same for 1 MiB and "
    "1.9 GiB images; `srun sarus run` adds 61 ms to plain srun",
    "Sarus 1.7 pull of the 1.2 GiB image: 136 s, 87% of it mksquashfs with gzip on 2 cores",
    "(measured on a 2-core Debian 12 machine like this one, 2026-11-23; docs/design brief)",
]


def load(res):
    series = {}  # name -> list of seconds
    path = os.path.join(res, "import.tsv")
    if os.path.exists(path):
        for line in open(path):
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                series.setdefault("imp:" + parts[0], []).append(float(parts[2]))
    path = os.path.join(res, "memory.tsv")
    if os.path.exists(path):
        for line in open(path):
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                series.setdefault("mem:" + parts[0], []).append(float(parts[2]))
    path = os.path.join(res, "mpi.tsv")
    if os.path.exists(path):
        for line in open(path):
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                series.setdefault("mpi:" + parts[0], []).append(float(parts[2]))
    for path in sorted(glob.glob(os.path.join(res, "*-round*.json"))):
        try:
            data = json.load(open(path))
        except (OSError, ValueError):
            continue
        for r in data.get("results", []):
            series.setdefault("hf:" + r["command"], []).extend(r.get("times", []))
    return series


def stats(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "n": len(values)}


def fmt_time(seconds, unit):
    if unit == "MiB":
        return f"{seconds / 1048576:.1f} MiB"
    if unit == "s":
        return f"{seconds:.2f} s"
    if unit == "us":
        return f"{seconds * 1e6:.2f} us"
    return f"{seconds * 1000:.1f} ms"


def fmt_diff(seconds, unit):
    if unit == "s":
        return f"{seconds:+.2f} s"
    if unit == "us":
        return f"{seconds * 1e6:+.2f} us"
    return f"{seconds * 1000:+.1f} ms"


def read_tsv(res, name):
    out = {}
    path = os.path.join(res, name)
    if os.path.exists(path):
        for line in open(path):
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2 and parts[1]:
                out.setdefault(parts[0], parts[1:])
    return out


def build(res):
    series = load(res)
    skip = set(os.environ.get("BENCH_SKIP", "").split())
    failures = []
    fpath = os.path.join(res, "failures.txt")
    if os.path.exists(fpath):
        failures = [(line.rstrip("\n").split("\t", 1) + [""])[:2] for line in open(fpath) if line.strip()]
    rows = []
    incomplete = False
    for rid, section, kind, title, a_name, b_name, target in ROWS:
        unit = ("s" if a_name.startswith("imp:") else "us" if a_name.startswith("mpi:")
                else "MiB" if a_name.startswith("mem:") else "ms")
        a = stats(series.get(a_name, []))
        b = stats(series.get(b_name, [])) if b_name else None
        row = {"id": rid, "title": title, "a": "n/a", "b": "n/a", "ratio": "n/a",
               "diff": "n/a", "target": "", "result": "n/a", "n": ""}
        base = None
        if kind == "ratio":
            row["target"] = f"ratio <= {target:.2f}"
        elif kind == "overhead":
            row["target"] = f"diff <= +{target:.0f} ms"
        elif kind == "memory":
            row["target"] = f"<= {target:.0f} MiB"
            row["b"] = row["ratio"] = row["diff"] = "-"
        elif kind == "extra":
            base_name, base_title = EXTRA_BASE[rid]
            base = stats(series.get(base_name, []))
            row["target"] = (f"diff <= {target:.1f} x {base_title} ({target * base['median']:.2f} s)"
                             if base else f"diff <= {target:.1f} x {base_title}")
        if kind == "memory" and a:
            row.update(a=f"{fmt_time(a['median'], unit)} ({fmt_time(a['min'], unit)})", n=f"{a['n']}")
            row["result"] = "PASS" if a["median"] <= target * 1048576 else "MISS"
        elif a and b:
            ratio = a["median"] / b["median"]
            ratio_min = a["min"] / b["min"]
            diff = a["median"] - b["median"]
            row.update(a=f"{fmt_time(a['median'], unit)} ({fmt_time(a['min'], unit)})",
                       b=f"{fmt_time(b['median'], unit)} ({fmt_time(b['min'], unit)})",
                       ratio=f"{ratio:.3f} ({ratio_min:.3f})",
                       diff=fmt_diff(diff, unit), n=f"{a['n']}/{b['n']}")
            if kind == "ratio":
                row["result"] = "PASS" if ratio <= target else "MISS"
            elif kind == "overhead":
                row["result"] = "PASS" if diff * 1000 <= target else "MISS"
            elif kind == "extra":
                if base:
                    row["result"] = "PASS" if diff <= target * base["median"] else "MISS"
                else:
                    row["result"] = "n/a (needs the import section)"
        elif "gzip" in (b_name or "") and os.environ.get("BENCH_GZIP_RUNS") == "0":
            row["result"] = "n/a (BENCH_GZIP_RUNS=0)"
        elif section not in skip:
            incomplete = True
            row["result"] = "FAILED"
        rows.append(row)
    return series, rows, failures, incomplete


HEADERS = [("id", "#"), ("title", "comparison (egret side / reference)"),
           ("a", "egret: median (min)"), ("b", "reference: median (min)"),
           ("ratio", "ratio med (min)"), ("diff", "diff (med)"), ("target", "target"),
           ("result", "result"), ("n", "runs")]


def details(res, series):
    lines = []
    images = read_tsv(res, "images.tsv")
    sizes = read_tsv(res, "sizes.tsv")
    for name in ("big", "huge", "busybox"):
        if name in images:
            layers, size = images[name][0], int(images[name][1])
            lines.append(f"image egret/{name}: {layers} layers, {size / 1e6:.1f} MB compressed")
    if "sarus-zstd:rootfs" in sizes:
        lines.append(f"egret/big unpacked (umoci): {int(sizes['sarus-zstd:rootfs'][0]) / 1e6:.1f} MB")
    if "saved-big" in sizes and "store-big" in sizes:
        saved, store = int(sizes["saved-big"][0]), int(sizes["store-big"][0])
        lines.append(f"--container-save of egret/big: {saved / 1e6:.1f} MB, the store's squashfs "
                     f"{store / 1e6:.1f} MB (x{saved / store:.2f})")
    for label in ("egret-zstd", "sarus-zstd", "egret-gzip", "sarus-gzip"):
        if label in sizes and sizes[label][0]:
            lines.append(f"squashfs written by {label}: {int(sizes[label][0]) / 1e6:.1f} MB")
    for label in ("sarus-zstd", "sarus-gzip"):
        parts = []
        for stage in ("skopeo", "umoci", "mksquashfs"):
            s = stats(series.get(f"imp:{label}:{stage}", []))
            if s:
                parts.append(f"{stage} {s['median']:.2f} s")
        if parts:
            lines.append(f"{label} stages (median): " + ", ".join(parts))
    runc = stats(series.get("hf:runc", []))
    for name, plain in (("srun-busybox-n1", "srun-plain-n1"), ("alloc-busybox-n1", "alloc-plain-n1")):
        a, b = stats(series.get("hf:" + name, [])), stats(series.get("hf:" + plain, []))
        if a and b and runc:
            over = a["median"] - b["median"]
            lines.append(f"{name}: overhead {over * 1000:.1f} ms = raw runc {runc['median'] * 1000:.1f} ms"
                         f" + {(over - runc['median']) * 1000:.1f} ms")
    try:
        meta = json.load(open(os.path.join(res, "meta.json")))
    except (OSError, ValueError):
        meta = {}
    if meta:
        lines.append(f"load average: start {' '.join(meta.get('loadavg_start', []))}, "
                     f"end {' '.join(meta.get('loadavg_end', []))} "
                     f"(other users share this {meta.get('cpus', '?')}-CPU machine)")
    if os.path.exists(os.path.join(res, "nodrop")):
        lines.append("WARNING: page caches could not be dropped: imports ran with warm caches")
    return meta, lines


def timeline(res):
    path = os.path.join(res, "timeline.txt")
    if os.path.exists(path) and os.path.getsize(path):
        return open(path).read().rstrip("\n")
    return ""


def multinode(res):
    """Lines of the multi-node table (multinode.tsv from bench/multinode.sh), or [].

    Targets (issue 19): per blob one download from the registry and one squash run whatever N,
    and a first-step time that grows at most with log N: start(N) <= (1 + log2 N) x start(1).
    """
    path = os.path.join(res, "multinode.tsv")
    if not os.path.exists(path):
        return []
    runs = {}
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if len(f) != 7:
            continue
        mode, n, secs, downloads, maxper, nbytes, squashes = f
        runs.setdefault((mode, int(n)), []).append(
            (float(secs), int(downloads), int(maxper), int(nbytes), int(squashes)))
    out = ["", "Multi-node first step of a new image (egret/debian, 58 MB; multi cluster, one host):",
           "mode    N  start s  / N=1   blob downloads  max/blob  MB from registry  squash runs  target                 result"]
    for mode in ("local", "shared"):
        base = runs.get((mode, 1))
        for n in (1, 2, 4, 8):
            r = runs.get((mode, n))
            if not r:
                continue
            start = statistics.median(x[0] for x in r)
            growth = start / statistics.median(x[0] for x in base) if base else float("nan")
            maxper = max(x[2] for x in r)
            squashes = max(x[4] for x in r)
            limit = 1 + math.log2(n)
            ok = maxper == 1 and squashes == 1 and growth <= limit
            out.append(f"{mode:<7} {n:<2} {start:7.2f}  {growth:5.2f}   {max(x[1] for x in r):>14}  {maxper:>8}"
                       f"  {max(x[3] for x in r) / 1e6:>16.1f}  {squashes:>11}  1/blob, 1 squash, <= {limit:.0f}x  "
                       f"{'PASS' if ok else 'MISS'}")
    return out


def main(argv):
    markdown = "--markdown" in argv
    args = [a for a in argv if a != "--markdown"]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    res = args[0]
    series, rows, failures, incomplete = build(res)
    meta, extra = details(res, series)
    out = []
    title = (f"egret benchmarks: {meta.get('date', '?')} on {meta.get('host', '?')} "
             f"({meta.get('cpus', '?')} CPUs, {meta.get('cpu', '?')}, {meta.get('memory', '?')}), "
             f"{meta.get('egret', 'egret ?')}")
    if markdown:
        out.append("| " + " | ".join(h for _, h in HEADERS) + " |")
        out.append("|" + "|".join("---" for _ in HEADERS) + "|")
        for r in rows:
            out.append("| " + " | ".join(str(r[k]) for k, _ in HEADERS) + " |")
        out.append("")
        out.extend(f"- {line}" for line in extra)
        if timeline(res):
            out += ["", "Where the time goes (perf sched tracepoints; one traced pull, start runs 0.2 s apart):", "",
                    "```", timeline(res), "```"]
    else:
        out.append(title)
        widths = {k: max(len(h), *(len(str(r[k])) for r in rows)) for k, h in HEADERS}
        out.append("  ".join(h.ljust(widths[k]) for k, h in HEADERS).rstrip())
        out.append("  ".join("-" * widths[k] for k, _ in HEADERS))
        for r in rows:
            out.append("  ".join(str(r[k]).ljust(widths[k]) for k, _ in HEADERS).rstrip())
        out.append("")
        out.append("Ratios are ratios of medians (of minimums in parentheses); times are wall clock.")
        out.extend(extra)
        if timeline(res):
            out.append("Where the time goes (perf sched tracepoints; one traced pull, start runs 0.2 s apart):")
            out.append(timeline(res))
        out.append("")
        out.append("Peers, for context (design brief):")
        out.extend(f"  {line}" for line in PEERS)
    out.extend(multinode(res))
    for name, why in failures:
        out.append(f"FAILED: {name}: {why}")
    if incomplete and not failures:
        missing = ", ".join(r["id"] for r in rows if r["result"] == "FAILED")
        out.append(f"FAILED: rows {missing} have no measurement (see the [bench] log lines above)")
    print("\n".join(out))
    return 1 if failures or incomplete else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
