"""Classify a folder of images with a TapQuant ONNX export, with neither torch nor TapQuant installed.

    pip install numpy onnxruntime pillow
    python examples/classify_folder.py lenet5_ppo_result.onnx path/to/images/

Each image (any size or format Pillow reads) is converted to RGB and resized
to 32 x 32, then passed as uint8 pixels: the model does the rest in integers
(its input table, int8 convolutions, the TAP tables). Prints one line per
image: its file name, the predicted class and the softmax probability.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def main(model_path: str, folder: str) -> int:
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    classes = json.loads(session.get_modelmeta().custom_metadata_map["classes"])
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in EXTENSIONS)
    if not files:
        print(f"error: no images in {folder}", file=sys.stderr)
        return 2
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.uint8)
                       for p in files]).transpose(0, 3, 1, 2)  # (N, 3, 32, 32)
    logits = session.run(None, {"pixels": np.ascontiguousarray(pixels)})[0]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for path, p in zip(files, probs):
        print(f"{path.name}\t{classes[int(p.argmax())]}\t{p.max():.3f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
