"""Row 2b's reference bundle: CONFIG_IN's runc spec with the seccomp profile that egret's
configuration (EGRET_JSON) installs, written to CONFIG_OUT (unchanged when it names none). The
root stays CONFIG_IN's own rootfs, by absolute path (runc refuses a symlinked one)."""
import json
import os
import sys

src, dst, cfg = sys.argv[1:4]
spec = json.load(open(src))
spec["root"]["path"] = os.path.join(os.path.dirname(os.path.abspath(src)), spec["root"]["path"])
profile = json.load(open(cfg)).get("seccompProfile")
if profile:
    spec["linux"]["seccomp"] = json.load(open(profile))
json.dump(spec, open(dst, "w"), indent=2)
