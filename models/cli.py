"""Flags and error handling shared by every command-line entry point."""

from __future__ import annotations

import argparse
import sys

import torch

from models.data import default_data_path
from models.errors import UserError


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None,
                   help="CIFAR-10 source: an image-folder .tar.gz or directory (train/<class>/, test/<class>/), "
                        "or a torchvision CIFAR-10 root (downloaded if missing). "
                        f"Default: $TAPQUANT_DATA, else ./data (now: {default_data_path()})")
    p.add_argument("--cache-dir", default=None,
                   help="where decoded images are cached (default: $TAPQUANT_CACHE or ~/.cache/tapquant)")
    p.add_argument("--out-dir", default="outputs", help="checkpoints and results (default: outputs/)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto = cuda when available, else cpu")


def non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return v


def _nonzero(parse, what: str):
    """An argparse type: `parse`, then refuse 0."""
    def check(text: str):
        v = parse(text)
        if v == 0:
            raise argparse.ArgumentTypeError(f"expected {what}, got 0")
        return v
    return check


positive_int = _nonzero(non_negative_int, "a positive integer")
positive_float = _nonzero(non_negative_float, "a number > 0")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def run_main(main, argv=None) -> int:
    """Runs `main(argv)`, turning UserError and Ctrl-C into one line and an exit code."""
    try:
        return main(argv) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; progress up to the last checkpoint is kept: rerun the same command "
              "with --resume to continue", file=sys.stderr)
        return 130
