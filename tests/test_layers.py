"""The packages form layers: each imports only from its own layer or a lower one (so there is no cycle).

    common  <  models  <  quant  <  envs  <  train_baselines.py  <  agents

Checked on the source (every import statement, including those inside
functions), so a lazy import cannot hide an arrow pointing up.
"""

from __future__ import annotations

import ast

from tests.conftest import ROOT

LAYERS = ["common", "models", "quant", "envs", "train_baselines", "agents"]


def sources():
    for name in LAYERS:
        yield from ((name, p) for p in (ROOT / name).glob("*.py")) if (ROOT / name).is_dir() else \
            [(name, ROOT / f"{name}.py")]


def imported_layers(path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        for name in names:
            top = name.split(".")[0]
            if top in LAYERS:
                yield top, node.lineno


def test_no_import_points_to_a_higher_layer():
    up = [f"{path.relative_to(ROOT)}:{line} imports {top}"
          for layer, path in sources() for top, line in imported_layers(path)
          if LAYERS.index(top) > LAYERS.index(layer)]
    assert up == []


def test_every_package_file_is_named_in_the_design_doc():
    design = (ROOT / "docs" / "design.md").read_text()
    missing = [str(p.relative_to(ROOT)) for layer, p in sources() if p.name != "__init__.py" and p.name not in design]
    assert missing == []
