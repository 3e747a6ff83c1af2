from common.cli import run_main


def test_report_draws_the_layers_and_the_search(tiny_teacher, tiny_tar, cache_dir):
    from agents import report, search

    assert run_main(search.main, ["--algo", "random", "--episodes", "10", "--result-file", "rep.json",
                                  "--out-dir", str(tiny_teacher), "--data", str(tiny_tar), "--cache-dir",
                                  str(cache_dir), "--search-size", "60", "--calib-batches", "2",
                                  "--no-progress"]) == 0
    paths = report.report(tiny_teacher / "tri_ppo_int_codes" / "rep.json", data=tiny_tar, cache_dir=cache_dir,
                          device="cpu")
    assert [p.name for p in paths] == ["rep_layers.png", "rep_search.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
