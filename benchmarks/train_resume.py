"""Training resumes bit for bit at full length: each stage killed with SIGKILL at a seeded moment, then --resume.

    python benchmarks/train_resume.py --out-dir outputs/train_resume [--data PATH] [--result R.json]

For float (the default 60 epochs), QAT (10) and the student (3 epochs on
`--result`'s tables): one uninterrupted run into <out-dir>/full/, then one
run into <out-dir>/killed/ killed with SIGKILL at a moment drawn uniformly
from 20-80 % of the uninterrupted run's wall time (or just after its first
epoch's checkpoint, if later) and rerun with --resume.
Prints whether every weight is bit-identical and the two test accuracies.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from models.checkpoint import checkpoint_path, load_checkpoint


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="outputs/train_resume")
    p.add_argument("--data", default=None)
    p.add_argument("--result", required=True, help="a search result whose tables the student fine-tunes")
    p.add_argument("--stages", nargs="+", default=["float", "qat", "student"])
    args = p.parse_args()
    schedule = random.Random(21)
    data = ["--data", args.data] if args.data else []
    for stage in args.stages:
        runs = {}
        for kind in ("full", "killed"):
            out = Path(args.out_dir) / kind
            extra = {"float": [], "qat": ["--float-checkpoint", str(checkpoint_path(out, "lenet5", "float"))],
                     "student": ["--config-path", args.result]}[stage]
            cmd = [sys.executable, "train_baselines.py", stage, "--out-dir", str(out), "--no-progress", *extra, *data]
            t0 = time.perf_counter()
            if kind == "full":
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                wall = time.perf_counter() - t0
            else:
                at = schedule.uniform(0.2, 0.8) * wall
                ckpt = checkpoint_path(out, "lenet5", stage, Path(args.result).stem)
                ckpt.unlink(missing_ok=True)
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
                while time.perf_counter() - t0 < at or not ckpt.exists():  # no checkpoint yet: nothing to resume
                    assert proc.poll() is None, "finished before the kill"
                    time.sleep(0.05)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                said = subprocess.run(cmd + ["--resume"], check=True, capture_output=True, text=True).stdout
                resumed_after = said.split("resuming after epoch ")[1].split(" of")[0]
            runs[kind] = load_checkpoint(checkpoint_path(out, "lenet5", stage, Path(args.result).stem))
        a, b = runs["full"], runs["killed"]
        same = all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
        print(f"{stage}: uninterrupted {wall:.0f}s; killed at {at:.0f}s, resumed after epoch {resumed_after}: "
              f"{'bit-identical' if same else 'DIFFERENT'}; test {a['meta']['test_acc']:.2f} / "
              f"{b['meta']['test_acc']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
