"""The integer student in ONNX (agents.export): exact against the integer reference, runnable without torch."""

import json
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the export extra is not installed: pip install -e '.[export]'")
ort = pytest.importorskip("onnxruntime")

from agents import evaluate, export, search  # noqa: E402
from agents.evaluate import evaluate_onnx, evaluate_result  # noqa: E402
from common.cli import run_main  # noqa: E402
from models.data import load_cifar10  # noqa: E402
from quant.integer import export_int8, integer_logits  # noqa: E402
from quant.qat import load_teacher  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.test_search import common  # noqa: E402


@pytest.fixture(scope="module")
def result(tiny_teacher, tiny_tar, cache_dir):
    """A K = 8 analytic result with mse clips on the tiny teacher."""
    assert run_main(search.main, ["--algo", "analytic", "--levels", "8", "--tmax-rule", "mse", "--result-file",
                                  "export_k8.json", *common(tiny_teacher, tiny_tar, cache_dir)]) == 0
    return tiny_teacher / "tri_ppo_int_codes" / "export_k8.json"


def test_onnx_student_equals_the_integer_reference_and_names_what_made_it(result, tiny_teacher, tiny_tar, cache_dir,
                                                                         capsys):
    assert run_main(export.main, ["--config-path", result.name, "--out-dir", str(tiny_teacher)]) == 0
    onnx_path = result.with_suffix(".onnx")
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain for o in model.opset_import} == {""}  # standard ONNX only
    meta = {p.key: p.value for p in model.metadata_props}
    res = json.loads(result.read_text())
    tables = {n: c["table"] for n, c in res["best"]["config"].items()}
    assert meta["teacher_sha256"] == res["teacher"]["sha256"] and meta["levels"] == "8"
    assert meta["tmax_rule"] == "mse" and json.loads(meta["tables"]) == tables and meta["tapquant_version"]
    data = load_cifar10(tiny_tar, cache_dir)
    ref = integer_logits(data.test_x, export_int8(load_teacher(res["teacher"]["path"], "lenet5")), tables).numpy()
    got = ort.InferenceSession(str(onnx_path)).run(None, {"pixels": data.test_x.numpy()})[0]
    assert np.array_equal(got.argmax(1), ref.argmax(1)) and np.allclose(got, ref, atol=1e-4)
    side = json.loads(result.with_name("export_k8_tables.json").read_text())
    assert {n: layer["table"] for n, layer in side["layers"].items()} == tables
    # agents.evaluate --onnx prints the guide's line, the same numbers as the PyTorch eval
    capsys.readouterr()
    assert run_main(evaluate.main, ["--onnx", str(onnx_path), "--data", str(tiny_tar), "--cache-dir",
                                    str(cache_dir)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    ev = evaluate_result(result, data=tiny_tar, cache_dir=cache_dir, verbose=False)
    assert line == f"[Eval] Teacher {ev['teacher']:.2f}% | Student {ev['student']:.2f}% | Drop {ev['drop'] + 0.0:.2f}%"


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine to check the header with")
def test_the_c_header_compiles(result, tiny_teacher, tmp_path):
    written = export.export(str(result), output=str(tmp_path / "student.onnx"))
    header = tmp_path / "student_tables.h"
    assert header in written
    program = tmp_path / "use.c"
    program.write_text('#include "student_tables.h"\nint main(void) { return conv1_table[255] + fc2_table[0]; }\n')
    r = subprocess.run(["cc", "-fsyntax-only", "-Wall", "-Werror", "-I", str(tmp_path), str(program)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_standalone_example_classifies_a_folder(result, tmp_path):
    written = export.export(str(result), output=str(tmp_path / "student.onnx"))
    with tarfile.open(ROOT / "tests" / "data" / "cifar10-tiny.tar.gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("test/cat/")][:5]
        for m in members:
            (tmp_path / m.name.split("/")[-1]).write_bytes(tar.extractfile(m).read())
    # neither torch nor this package: both made unimportable in the interpreter that runs the example
    blocked = "; ".join(f"sys.modules[{m!r}] = None" for m in ("torch", "torchvision", "envs", "agents", "models",
                                                                 "quant"))
    runner = f"import runpy, sys; {blocked}; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    r = subprocess.run([sys.executable, "-I", "-c", runner, str(ROOT / "examples" / "classify_folder.py"),
                        str(written[0]), str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.strip().splitlines()]
    assert len(rows) == 5 and all(row[1] in json.loads(meta_classes(written[0])) for row in rows)


def meta_classes(path) -> str:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}["classes"]


def test_the_teacher_alone_exports_and_scores_as_the_teacher(tiny_teacher, tiny_tar, cache_dir, tmp_path):
    out = tmp_path / "teacher.onnx"
    assert run_main(export.main, ["--teacher", str(tiny_teacher / "lenet5_qat_preconvert.pth"),
                                  "--output", str(out)]) == 0
    ev = evaluate_onnx(out, tiny_tar, cache_dir, verbose=False)
    assert ev["student"] == pytest.approx(ev["teacher"], abs=1e-4)  # the same predictions; accuracy() rounds in float32


def test_bad_input_is_one_error_line_and_nothing_written(result, tiny_teacher, tmp_path, capsys):
    def refused(*argv) -> str:
        capsys.readouterr()
        assert run_main(export.main, list(argv)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")
        return err[0]

    assert "is a lenet5 result, but --model is vgg16" in refused("--config-path", str(result), "--model", "vgg16")
    assert "does not exist" in refused("--config-path", str(result), "--output", str(tmp_path / "no" / "x.onnx"))
    res = json.loads(result.read_text())
    res["best"]["config"]["conv1"]["table"][5] = 255  # no longer the table of its parameters
    (tmp_path / "bad_table.json").write_text(json.dumps(res))
    assert "malformed" in refused("--config-path", str(tmp_path / "bad_table.json"))
    res = json.loads(result.read_text())
    res["teacher"]["sha256"] = "0" * 64
    (tmp_path / "other_teacher.json").write_text(json.dumps(res))
    assert "sha256 differs" in refused("--config-path", str(tmp_path / "other_teacher.json"))
    student = tmp_path / "foreign_student.pth"
    shutil.copy(tiny_teacher / "lenet5_qat_preconvert.pth", student)  # a QAT checkpoint, not a student
    assert "student" in refused("--config-path", str(result), "--student", str(student))
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.h"))


def test_without_the_export_extra_the_command_says_how_to_install_it(result, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    assert run_main(export.main, ["--config-path", str(result)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['error: agents.export needs onnx and onnxruntime: pip install -e ".[export]"']


def _edge_net(rng: np.random.Generator):
    """A small integer net whose codes reach 255 at every layer's input and whose weights sit at +-127: where
    u8 x s8 kernels without VNNI saturate (a pair of products above 32,767)."""
    import torch

    from quant.integer import IntLayer

    def layer(name, kind, out, fan_in, *, classifier=False, flatten=False, pool=False, shift=45):
        w = torch.tensor(rng.choice([127, -127], size=(out, fan_in)), dtype=torch.int32)
        return IntLayer(name, kind, 1, pool, flatten, classifier, w, 3 if kind == "conv" else 0,
                        torch.tensor(rng.integers(-500, 500, out), dtype=torch.int32),
                        torch.full((out,), 2**30, dtype=torch.int64), torch.full((out,), shift, dtype=torch.int64),
                        torch.ones(out, dtype=torch.float64))  # logits = the classifier's int32 sums

    lut = torch.tensor(np.clip(np.arange(256) - 128, -127, 127), dtype=torch.int32).repeat(3, 1)
    layers = [layer("conv1", "conv", 8, 27, pool=True, shift=38), layer("conv2", "conv", 8, 72, shift=41),
              layer("fc1", "fc", 16, 128, flatten=True, shift=42), layer("fc2", "fc", 10, 16, classifier=True)]
    return lut, layers


def test_the_onnx_graph_is_exact_where_u8_s8_kernels_saturate():
    """Codes 130..255 times weights of 127 at every layer (tables that lift each code above 129): onnxruntime
    computes the integer reference's logits exactly. On a CPU with VNNI the u8 x s8 kernels would be exact
    too, so the graph's formulation is checked as well: uint8 weights with a zero point, whose kernels widen
    to int16 before multiplying on every x86 CPU (docs/design.md, "The ONNX export")."""
    import torch

    from quant.onnx_export import build_onnx

    rng = np.random.default_rng(0)
    exported = _edge_net(rng)
    tables = {"conv1": np.minimum(130 + np.arange(256), 255), "conv2": np.minimum(130 + np.arange(256), 255)}
    pixels = torch.tensor(rng.integers(0, 256, size=(16, 3, 8, 8)), dtype=torch.uint8)
    pixels[:8] = 255  # input codes at the top of their range too
    ref = integer_logits(pixels, exported, tables).numpy()
    assert len(np.unique(ref[8:], axis=0)) >= 4  # logits that depend on the image, not codes stuck at one end
    model = build_onnx(exported, tables, image_shape=(3, 8, 8))
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"pixels": pixels.numpy()})[0]
    assert np.array_equal(got, ref.astype(np.float32))
    weights = {i.name: i for i in model.graph.initializer if i.name.endswith(".weight")}
    integer_ops = [n for n in model.graph.node if n.op_type in ("ConvInteger", "MatMulInteger")]
    assert len(integer_ops) == 4 and all(
        weights[n.input[1]].data_type == onnx.TensorProto.UINT8 and len(n.input) == 4 for n in integer_ops)
