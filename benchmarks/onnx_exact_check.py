"""Compare exported ONNX files with the integer reference's logits, with numpy and onnxruntime alone.

    python benchmarks/onnx_exact_check.py outputs/teachers/seed0/export_bench

Reads what benchmarks/export_speed.py leaves in that folder (pixels.npy, each
<name>.onnx and its <name>.reference.npy) and prints, per file, the share of
test images whose logits onnxruntime computes exactly. Light enough to run
under an emulated CPU: `qemu-x86_64 -cpu EPYC-Milan $(which python) ...`
runs onnxruntime with AVX2 and no AVX-512 or VNNI on any x86 machine
(benchmarks/README.md, "Exact on any CPU").
"""

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def main(folder: str) -> int:
    folder = Path(folder)
    pixels = np.load(folder / "pixels.npy")
    for path in sorted(folder.glob("*.onnx")):
        ref = np.load(path.with_suffix(".reference.npy"))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = np.concatenate([session.run(None, {"pixels": pixels[i:i + 1000]})[0] for i in range(0, len(pixels), 1000)])
        same = (got == ref).all(1)
        print(f"{path.name}: logits equal on {int(same.sum())} of {len(same)} images, top-1 on "
              f"{int((got.argmax(1) == ref.argmax(1)).sum())} (max |diff| {np.abs(got - ref).max():.2g})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
