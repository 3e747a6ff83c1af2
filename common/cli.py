"""Flags and error handling shared by every command-line entry point."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import MISSING, field, fields

import torch

from common.errors import UserError


# The flags every command shares (add_common_args); a config dataclass that holds
# them leaves them out of add_config_args.
COMMON_FLAGS = ("data", "cache_dir", "out_dir", "device")


class Parser(argparse.ArgumentParser):
    """Every command's argparse parser: a bad flag or an unknown choice is one line naming it and the valid
    choices, as every other refusal here is; the usage stays with --help."""

    def __init__(self, *args, **kw):
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kw)

    def error(self, message: str):
        self.exit(2, f"error: {self.prog.split()[-1]}: {message} (--help lists the flags)\n")


def option(default, help: str, **argparse_kw):
    """A config dataclass field that is also a command-line flag (`--field-name`).

    `help` documents the field and the flag alike; argparse_kw (type, choices,
    action, ...) say how the flag parses, and `flag` names it otherwise.
    """
    return field(default=default, metadata={"help": help, **argparse_kw})


def add_config_args(p: argparse.ArgumentParser, cls, skip=COMMON_FLAGS) -> None:
    """One flag for each `option` field of the dataclass `cls`, with its default and help."""
    for f in fields(cls):
        if "help" not in f.metadata or f.name in skip:
            continue
        kw = dict(f.metadata)
        text = kw.pop("help")
        flag = kw.pop("flag", "--" + f.name.replace("_", "-"))
        default = None if f.default is MISSING else f.default
        if kw.get("action") != "store_true":
            text += f" (default: {default})"
        p.add_argument(flag, dest=f.name, default=default, help=text, **kw)


def config_from_args(cls, args: argparse.Namespace, **values):
    """An instance of the dataclass `cls` from parsed flags (fields without a flag keep their default)."""
    got = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**{**got, **values})


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


def default_data_path() -> str:
    """Where CIFAR-10 is read from when --data is not given."""
    return os.environ.get("TAPQUANT_DATA", "./data")
