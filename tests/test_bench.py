"""The one benchmark harness: rounds alternate, self-timed runners are believed, ratios
are to the baseline. (Speed itself is printed by `python -m lmlab.bench`, never asserted.)"""

import pytest

from lmlab.bench import interleaved, rates, report


def test_rounds_alternate_and_runners_may_time_themselves():
    calls = []
    runners = {"a": lambda: calls.append("a"), "b": lambda: (calls.append("b"), 2.5)[1]}
    elapsed = interleaved(runners, rounds=3)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three alternating rounds
    assert elapsed["b"] == pytest.approx(7.5)  # what the runner said, three times
    assert 0 <= elapsed["a"] < 1
    assert interleaved(runners, rounds=2, warmup=False)["b"] == pytest.approx(5.0)


def test_report_prints_rates_and_ratios_to_the_baseline(capsys):
    ratios = report("title", rates({"fast": 1.0, "slow": 4.0}, work=100), baseline="slow")
    assert ratios == {"fast": 4.0, "slow": 1.0}
    out = capsys.readouterr().out
    assert "title" in out and "ratio to slow" in out and "4.000x" in out and "100" in out


def test_the_device_checks_run_and_pass_small_on_the_cpu(capsys):
    """`python -m lmlab.bench device` is for a GPU; `--device cpu --quick` runs the same
    script small here, so that what a lent GPU runs has run before."""
    from lmlab.bench.device import bench_device

    rows = bench_device("cpu", quick=True)
    names = [name for name, _, _ in rows]
    assert names == ["train, fp32", "train, bf16 autocast", "fused AdamW", "torch.compile",
                     "restore on the device, resume", "views' cached pass on the device"]
    assert all(passed for _, passed, _ in rows), rows
    assert "device checks on CPU" in capsys.readouterr().out


def test_without_a_gpu_the_device_checks_say_so_and_exit_0(monkeypatch, capsys):
    import torch

    from lmlab.bench.__main__ import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["device"]) == 0
    assert "no CUDA GPU here" in capsys.readouterr().out


def test_the_interp_bench_runs_small_against_transformer_lens(capsys):
    """`python -m lmlab.bench interp` at a tiny shape: both tables print, with the peer's grid."""
    from _needs import need

    need("transformer_lens", "pip install '.[interp]'")
    from lmlab.bench.interp import bench_interp
    from lmlab.model import GPTConfig

    tiny = GPTConfig(vocab_size=16, block_size=16, n_layer=2, n_head=2, n_embd=16)
    found = bench_interp(rounds=1, shapes=(("tiny", tiny, 8),))
    assert set(found["tiny"]) == {"attribution", "grid", "grid_s", "worst_grid_s", "vs_transformer_lens"}
    assert all(value > 0 for value in found["tiny"].values())
    out = capsys.readouterr().out
    assert "(a) direct logit attribution" in out and "TransformerLens grid" in out


def test_the_timeline_bench_runs_small(capsys):
    """`python -m lmlab.bench timeline`, one round and a few moves: both tables print."""
    from _needs import need

    need("ipywidgets", "pip install -e .")
    from lmlab.widgets.bench_timeline import bench_overhead, bench_scrub

    ratios = bench_overhead(rounds=1)
    assert set(ratios) == {"no timeline", "snapshots", "snapshots + health"}
    assert all(r > 0 for r in ratios.values())
    moves = bench_scrub(moves=3)
    assert moves["move"][0] > 0
    out = capsys.readouterr().out
    assert "training with a timeline" in out and "one move of the timeline" in out
