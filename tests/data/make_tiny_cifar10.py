"""Writes cifar10-tiny.tar.gz, the real CIFAR-10 subset the tests run on.

    python tests/data/make_tiny_cifar10.py PATH/TO/cifar10-jpeg.tar.gz

It takes the first 60 training and 20 test images of each class (by file
name) from a CIFAR-10 image-folder archive (train/<class>/*.jpg,
test/<class>/*.jpg) and packs them reproducibly (sorted names, mtime 0), so
the tests need neither the network nor a copy of the full data set.
"""

import gzip
import io
import sys
import tarfile
from pathlib import Path

PER_CLASS = {"train": 60, "test": 20}
OUT = Path(__file__).with_name("cifar10-tiny.tar.gz")


def main(src: str) -> None:
    picked: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    with tarfile.open(src, "r:*") as tar:
        for m in tar:
            parts = Path(m.name).parts
            if not m.isfile() or len(parts) < 3 or parts[-3] not in PER_CLASS:
                continue
            picked.setdefault((parts[-3], parts[-2]), []).append((parts[-1], tar.extractfile(m).read()))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as out:
        for (part, cls), files in sorted(picked.items()):
            for name, blob in sorted(files)[: PER_CLASS[part]]:
                info = tarfile.TarInfo(f"{part}/{cls}/{name}")
                info.size, info.mtime, info.mode = len(blob), 0, 0o644
                out.addfile(info, io.BytesIO(blob))
    OUT.write_bytes(gzip.compress(raw.getvalue(), compresslevel=9, mtime=0))
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
