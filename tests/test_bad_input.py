"""Bad input to the commands added since the first battery: one `error:` line naming the problem and the
fix, exit code 2, and nothing written. Run in-process through each command's `run_main` (what its
`__main__` runs), so an unexpected exception would fail the test as a traceback would."""

from __future__ import annotations

import json

import pytest

import train_baselines
from agents import evaluate, report, sweep
from common.cli import run_main


def run(main, argv, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    try:
        code = run_main(main, argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture
def files(tmp_path, tiny_teacher):
    malformed = tmp_path / "malformed.json"
    malformed.write_text("{ not json")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((tiny_teacher / "lenet5_qat_preconvert.pth").read_bytes()[:5000])
    yaml_bad = tmp_path / "bad.yaml"
    yaml_bad.write_text("grid: [unclosed\n")
    return {"malformed": malformed, "truncated": truncated, "yaml_bad": yaml_bad,
            "float": tiny_teacher / "lenet5_float_unfused.pth", "missing": tmp_path / "missing.json"}


@pytest.fixture
def result(tiny_teacher, tiny_tar, cache_dir) -> str:
    from agents import search

    path = tiny_teacher / "tri_ppo_int_codes" / "bad_input.json"
    if not path.is_file():
        assert run_main(search.main, ["--algo", "analytic", "--result-file", path.name, "--out-dir", str(tiny_teacher),
                                      "--data", str(tiny_tar), "--cache-dir", str(cache_dir), "--search-size", "60",
                                      "--calib-batches", "2", "--no-progress"]) == 0
    return str(path)


CASES = [
    # (command, argv with {placeholders}, words the one line must hold)
    ("student", ["student", "--epochs", "1"], "needs --config-path"),
    ("student", ["student", "--config-path", "{missing}"], "not found"),
    ("student", ["student", "--config-path", "{malformed}"], "malformed.json"),
    ("student", ["student", "--config-path", "{float}"], "lenet5_float_unfused.pth"),
    ("student", ["student", "--config-path", "{result}", "--epochs", "0"], "positive integer"),
    ("student", ["student", "--config-path", "{result}", "--model", "vgg16"], "vgg16"),
    ("report", ["--config-path", "{missing}"], "not found"),
    ("report", ["--config-path", "{malformed}"], "malformed.json"),
    ("report", ["--config-path", "{result}", "--device", "tpu"], "tpu"),
    ("evaluate", ["--config-path", "{result}", "--student", "{float}"], "expected student"),
    ("evaluate", ["--config-path", "{result}", "--student", "{truncated}"], "corrupted"),
    ("evaluate", ["--config-path", "{result}", "--student", "{missing}"], "not found"),
    ("sweep", ["{missing}"], "not found"),
    ("sweep", ["{yaml_bad}"], "not valid YAML"),
    ("sweep", ["{sweep_ok}", "--address", "127.0.0.1:1"], "no Ray cluster answers there"),
    ("sweep", ["{sweep_ok}", "--address", "nonsense"], "expected auto, host:port"),
    ("sweep", ["{sweep_ok}", "--cpus-per-trial", "lots"], "invalid float value"),
]
MAINS = {"student": train_baselines.main, "report": report.main, "evaluate": evaluate.main, "sweep": sweep.main}


@pytest.mark.parametrize("command,argv,words", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_gives_one_error_line_and_writes_nothing(command, argv, words, files, result, tiny_teacher,
                                                           tiny_tar, cache_dir, tmp_path, capsys):
    if command == "sweep":
        pytest.importorskip("ray", reason="Ray is the optional [sweep] extra (CI installs it)")
    sweep_ok = tmp_path / "ok.yaml"
    sweep_ok.write_text("name: never\ngrid: {algo: [random]}\noptions: {episodes: 2, search_size: 60}\n")
    names = {k: str(v) for k, v in files.items()} | {"result": result, "sweep_ok": str(sweep_ok)}
    common = ["--out-dir", str(tiny_teacher), "--data", str(tiny_tar), "--cache-dir", str(cache_dir)]
    before = sorted(p for p in tiny_teacher.rglob("*"))
    code, err = run(MAINS[command], [a.format(**names) for a in argv] + common, capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err  # no usage dump either
    assert sorted(p for p in tiny_teacher.rglob("*")) == before  # nothing half-written


def test_evaluate_names_the_result_a_foreign_student_was_made_for(result, tiny_teacher, tiny_tar, cache_dir, capsys):
    """A student fine-tuned for another result of the same teacher is refused, naming both."""
    other = tiny_teacher / "tri_ppo_int_codes" / "bad_input_other.json"
    doc = json.loads(open(result).read())
    other.write_text(json.dumps(doc))
    train_baselines.train(train_baselines.stage_config("student", config_path=str(other), epochs=1, batch_size=64,
                                                     out_dir=str(tiny_teacher), data=str(tiny_tar),
                                                     cache_dir=str(cache_dir), device="cpu", no_progress=True))
    student = tiny_teacher / "lenet5_student_bad_input_other.pth"
    code, err = run(evaluate.main, ["--config-path", result, "--student", str(student), "--data", str(tiny_tar),
                                    "--cache-dir", str(cache_dir), "--out-dir", str(tiny_teacher)], capsys)
    assert code == 2 and len(err) == 1 and "fine-tuned for another result" in err[0] and "bad_input_other" in err[0]


@pytest.mark.parametrize("argv,words", [(["--algo", "ppp"], "invalid choice: 'ppp' (choose from 'ppo'"),
                                        (["--levels", "x"], "--levels: expected a number such as 16, or layer=K items"),
                                        (["--no-such-flag"], "unrecognized arguments: --no-such-flag")])
def test_an_unknown_choice_or_flag_is_one_line_without_the_usage(argv, words, capsys):
    from agents import pipeline, search

    for main in (search.main, pipeline.main):
        code, err = run(main, argv, capsys)
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and words in err[0], err


def test_a_missing_file_suggests_the_closest_existing_name(tmp_path):
    from common.errors import UserError
    from models.checkpoint import load_checkpoint
    from quant.result import read_result

    (tmp_path / "lenet5_ppo_result.json").write_text("{}")
    (tmp_path / "lenet5_qat_preconvert.pth").write_bytes(b"")
    with pytest.raises(UserError, match=r"did you mean .*lenet5_ppo_result.json\? Otherwise make it with"):
        read_result(tmp_path / "lenet5_ppo_reslt.json")
    with pytest.raises(UserError, match=r"did you mean .*lenet5_qat_preconvert.pth\?"):
        load_checkpoint(tmp_path / "lenet5_qat_preconvrt.pth", "lenet5", "qat")
    with pytest.raises(UserError) as e:  # nothing close: only how to make one
        read_result(tmp_path / "vgg16_tpe_K4_result.json")
    assert "did you mean" not in str(e.value) and "make it with: python -m agents.search" in str(e.value)
    # The suggested command is the search whose default result name this is: its flags write exactly that file.
    from agents.search import SearchConfig, build_parser
    from common.cli import config_from_args
    from envs.config import ProblemConfig

    command = str(e.value).split("make it with: python -m agents.search ")[1].split()
    assert command == ["--model", "vgg16", "--algo", "tpe", "--levels", "4"]
    args = build_parser().parse_args(command)
    cfg = config_from_args(SearchConfig, args, problem=config_from_args(ProblemConfig, args))
    assert cfg.default_result_name() == "vgg16_tpe_K4_result.json"
    with pytest.raises(UserError) as e:  # another model's checkpoint is a sibling, not a typo
        load_checkpoint(tmp_path / "vgg16_qat_preconvert.pth", "vgg16", "qat")
    assert "did you mean" not in str(e.value)
