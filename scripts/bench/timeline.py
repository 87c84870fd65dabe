#!/usr/bin/env python3
"""Part of scripts/bench.sh: where the time of a container start goes, from scheduler tracepoints.

Usage: timeline.py PERF_SCRIPT_TEXT

The input is `perf script -F comm,pid,tid,time,event,trace` of a
`perf record -a -e sched:sched_process_exec,sched:sched_process_exit,sched:sched_process_fork`
taken while bench.sh ran a few `srun [--container-image] /bin/true` and `egret run ... /bin/true`
one after the other. Every exec/exit of the processes involved is a milestone; for each kind of
run the milestones are placed at their median offset from the start of the run, and the gaps
between consecutive milestones are printed. Processes are tied to a run through the fork tree
(slurmd forks slurmstepd, so for srun the step is the slurmstepd started during the srun that
has the run's /bin/true among its descendants). Informational: never fails the benchmark.
"""

import re
import statistics
import sys

LINE = re.compile(r"\s*(.+?)\s+(\d+)/(\d+)\s+([\d.]+):\s+sched:(\w+):\s*(.*)")


def parse(path):
    execs, exits, parent = [], {}, {}
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        _comm, pid, _tid, ts, event, trace = m.groups()
        t = float(ts) * 1000.0
        fields = dict(kv.split("=", 1) for kv in trace.split() if "=" in kv)
        if event == "sched_process_exec":
            execs.append((t, int(pid), fields.get("filename", "?")))
        elif event == "sched_process_exit" and fields.get("group_dead") == "true":
            exits.setdefault(int(pid), t)
        elif event == "sched_process_fork" and "child_pid" in fields:
            parent[int(fields["child_pid"])] = int(pid)
    return execs, exits, parent


def descends(pid, root, parent):
    seen = 0
    while pid in parent and seen < 64:
        if pid == root:
            return True
        pid = parent[pid]
        seen += 1
    return pid == root


def base(path):
    return path.rsplit("/", 1)[-1]


def srun_runs(execs, exits, parent):
    """(kind, {milestone: offset ms}) for every srun seen."""
    runs = []
    for t0, spid, fname in execs:
        if base(fname) != "srun":
            continue
        end = exits.get(spid)
        if end is None:
            continue
        window = [e for e in execs if t0 < e[0] < end]
        stepds = [e for e in window if base(e[2]) == "slurmstepd"]
        chosen = None
        for stepd in stepds:
            tree = [e for e in window if e[1] != stepd[1] and descends(e[1], stepd[1], parent)]
            if any(e[2] == "/bin/true" for e in tree):
                chosen = (stepd, tree)
                break
        if not chosen:
            continue
        stepd, tree = chosen
        ms = {"slurmstepd exec": stepd[0]}
        launchers = [e for e in tree if base(e[2]) == "egret-launcher"]
        if launchers:
            ms["egret-launcher serve exec"] = launchers[0][0]
            if launchers[0][1] in exits:
                ms["egret-launcher serve exit"] = exits[launchers[0][1]]
        if len(launchers) > 1:
            ms["join-cgroup shim exec"] = launchers[1][0]
        for name, label in (("skopeo", "skopeo inspect"), ("runc", "runc")):
            hit = [e for e in tree if base(e[2]) == name]
            if hit:
                ms[f"{label} exec"] = hit[0][0]
                if hit[0][1] in exits:
                    ms[f"{label} exit"] = exits[hit[0][1]]
        true = [e for e in tree if e[2] == "/bin/true"]
        ms["/bin/true exec"] = true[0][0]
        ms["srun exit"] = end
        kind = "srun --container-image" if launchers else "srun (plain)"
        runs.append((kind, {k: v - t0 for k, v in ms.items()}))
    return runs


def egret_runs(execs, exits, parent):
    runs = []
    for t0, epid, fname in execs:
        if fname != "/usr/local/bin/egret" and base(fname) != "egret":
            continue
        end = exits.get(epid)
        if end is None:
            continue
        tree = [e for e in execs if t0 < e[0] < end and descends(e[1], epid, parent)]
        ms = {}
        squash = [e for e in tree if base(e[2]) == "mksquashfs"]
        if squash:  # an import: skopeo inspect (tag -> digest), skopeo copy, flatten | mksquashfs
            skopeos = [e for e in tree if base(e[2]) == "skopeo"]
            for label, hit in (("skopeo inspect", skopeos[:1]), ("skopeo copy", skopeos[1:2]),
                               ("mksquashfs", squash[:1])):
                if hit:
                    ms[f"{label} exec"] = hit[0][0]
                    if hit[0][1] in exits:
                        ms[f"{label} exit"] = exits[hit[0][1]]
            ms["egret exit"] = end
            runs.append(("egret pull", {k: v - t0 for k, v in ms.items()}))
            continue
        runc = [e for e in tree if base(e[2]) == "runc"]
        if runc:
            ms["runc exec"] = runc[0][0]
            if runc[0][1] in exits:
                ms["runc exit"] = exits[runc[0][1]]
        true = [e for e in tree if e[2] == "/bin/true"]
        if not true:
            continue  # not a bench run (egret pull, another user's command)
        ms["/bin/true exec"] = true[0][0]
        ms["egret exit"] = end
        runs.append(("egret run", {k: v - t0 for k, v in ms.items()}))
    return runs


def runc_runs(execs, exits, parent, claimed):
    """Raw `runc run` started by the benchmark itself (not by egret or a Slurm step)."""
    runs = []
    for t0, rpid, fname in execs:
        if base(fname) != "runc" or rpid in claimed:
            continue
        end = exits.get(rpid)
        if end is None:
            continue
        true = [e for e in execs
                if t0 < e[0] < end and e[2] == "/bin/true" and descends(e[1], rpid, parent)]
        if true:
            runs.append(("runc run (raw)", {"/bin/true exec": true[0][0] - t0, "runc exit": end - t0}))
    return runs


def main(argv):
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    execs, exits, parent = parse(argv[0])
    groups = {}
    found = srun_runs(execs, exits, parent) + egret_runs(execs, exits, parent)
    # every process that belongs to an egret or srun run (runc included) is not a raw runc run
    roots = [pid for t, pid, f in execs if base(f) in ("egret", "slurmstepd")]
    claimed = {pid for _t, pid, _f in execs if any(descends(pid, r, parent) for r in roots)}
    for kind, ms in found + runc_runs(execs, exits, parent, claimed):
        groups.setdefault(kind, []).append(ms)
    if not groups:
        print("  (no runs recognised in the trace)")
        return 0
    for kind in ("egret pull", "runc run (raw)", "egret run", "srun (plain)",
                 "srun --container-image"):
        runs = groups.get(kind)
        if not runs:
            continue
        names = {n for ms in runs for n in ms}
        med = sorted((statistics.median(ms[n] for ms in runs if n in ms), n) for n in names)
        what = kind if kind == "egret pull" else f"{kind} /bin/true"
        print(f"  {what}: {len(runs)} run(s), median offsets from the start")
        prev_t, prev_n = 0.0, "start"
        for t, n in med:
            print(f"    {prev_n:>26} -> {n:<26} {t - prev_t:7.1f} ms   (at {t:7.1f} ms)")
            prev_t, prev_n = t, n
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
