"""A user's own nn.Module: traced into stages, refused in one line where it cannot be, and quantized."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from models.custom import register_module, save_float_checkpoint, staged_copy, stages_from_module
from tests.conftest import train_args


class Shortcut(nn.Module):
    """He et al.'s option A written out, as users of the CIFAR ResNets write it."""

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4))


class Net(nn.Module):
    def __init__(self, act=None):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.a = nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.a_bn = nn.BatchNorm2d(16)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.b_bn = nn.BatchNorm2d(16)
        self.short = Shortcut()
        self.act = act or nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.act(self.stem_bn(self.stem(x)))
        y = F.relu(self.a_bn(self.a(x)))
        x = F.relu(self.b_bn(self.b(y)) + self.short(x))
        x = self.pool(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def trained_bn(net: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in net.modules():  # BatchNorm statistics other than the defaults, so that folding is checked
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return net.eval()


def test_a_module_is_read_as_stages_that_compute_the_same_function():
    net = trained_bn(Net())
    stages, bn = stages_from_module(net)
    assert [(s.name, s.stride, s.residual, s.pool, s.gap, s.classifier) for s in stages] == [
        ("stem", 1, None, False, False, False), ("a", 2, None, False, False, False),
        ("b", 1, "stem", True, False, False), ("fc", 1, None, False, True, True)]
    assert bn == {"stem": "stem_bn", "a": "a_bn", "b": "b_bn"}
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(staged_copy(net, "usernet")(x), net(x), atol=1e-5)


@pytest.mark.parametrize("act, what", [(nn.Sigmoid(), "Sigmoid (module act)"), (nn.GELU(), "GELU (module act)")])
def test_an_unsupported_operation_is_refused_in_one_line_naming_it(act, what):
    with pytest.raises(UserError) as e:
        stages_from_module(Net(act))
    assert str(e.value).startswith(f"unsupported operation {what}:") and "\n" not in str(e.value)


def test_a_registered_module_quantizes_from_its_own_weights(tmp_path, tiny_tar, cache_dir):
    import envs
    from envs.problem import TapProblem
    from train_baselines import train

    register_module("usernet", Net(), attention_layers=["b"])
    envs.register_model_envs("usernet")
    assert envs.ENV_IDS["usernet"] == "TapQuant-Usernet-v1"
    save_float_checkpoint(trained_bn(Net()), "usernet", str(tmp_path))
    train(train_args("qat", tmp_path, tiny_tar, cache_dir, model="usernet"))
    problem = TapProblem(model="usernet", out_dir=str(tmp_path), data=str(tiny_tar), cache_dir=str(cache_dir),
                         search_size=40, calib_batches=1)
    assert problem.layers == ["stem", "a", "b"] and np.isfinite(problem.score_params(problem.analytic)["reward"])


def test_the_own_model_example_runs_the_whole_workflow(tmp_path, tiny_tar, cache_dir, capsys):
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("own_model", ROOT / "examples" / "own_model.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main(["--epochs", "1", "--qat-epochs", "1", "--episodes", "8", "--search-size", "40", "--calib-batches", "1",
                  "--out-dir", str(tmp_path), "--data", str(tiny_tar)])
    out = capsys.readouterr().out
    assert "[Eval] Teacher" in out and (tmp_path / "tri_ppo_int_codes").is_dir()
    assert any(p.suffix == ".onnx" for p in (tmp_path / "tri_ppo_int_codes").iterdir())
