#!/usr/bin/env python3
"""Every source path and test named in the docs exists: `make lint` fails on a stale reference.

Checks backticked references in README.md and docs/*.md:
  `engine/src/sys/in_root.rs`           the file (or folder, with a trailing /) exists
  `slurm_container.rs::runs_as_root`    the test file (looked up in system-tests/tests/ when the
  `::another_test`                      name has no folder) defines `fn runs_as_root`; a bare
                                        `::name` refers to the last file named before it
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOP = ("engine/", "plugin/", "cli/", "hooks/", "system-tests/", "test-support/", "fuzz/",
       "scripts/", "etc/", "bench/", "docs/", ".ci/",
       # old homes, so a reference left behind by a move is caught
       "tests/", "spank/", "slurm-headers/")
TICK = re.compile(r"`([^`\n]+)`")


def resolve(name):
    if name.startswith(TOP):
        return ROOT / name
    if name == "build.rs":
        return ROOT / name
    if re.fullmatch(r"[a-z0-9_]+\.rs", name):
        return ROOT / "system-tests" / "tests" / name
    return None


def main():
    bad = []
    docs = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    for doc in docs:
        last = None
        for lineno, line in enumerate(doc.read_text().splitlines(), 1):
            for ref in TICK.findall(line):
                ref = ref.strip().rstrip(",")
                path_part, _, test = ref.partition("::")
                if ref.startswith("::"):
                    path = last
                    test = ref[2:]
                elif re.fullmatch(r"[\w./-]+", path_part) and "/" in path_part or path_part.endswith(".rs"):
                    path = resolve(path_part)
                    if path is None:
                        continue
                    last = path
                else:
                    continue
                where = f"{doc.relative_to(ROOT)}:{lineno}"
                if path is None:
                    bad.append(f"{where}: `{ref}` names a test with no file before it")
                    continue
                if not path.exists():
                    bad.append(f"{where}: `{ref}`: {path.relative_to(ROOT)} does not exist")
                    continue
                test = re.sub(r"[^\w].*$", "", test)
                if test and path.is_file():
                    if not re.search(rf"\bfn {re.escape(test)}\b", path.read_text()):
                        bad.append(f"{where}: `{ref}`: no fn {test} in {path.relative_to(ROOT)}")
    for b in bad:
        print(b)
    if bad:
        print(f"check-doc-paths: {len(bad)} stale reference(s) in the docs: fix the path or the name")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
