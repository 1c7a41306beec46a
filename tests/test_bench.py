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
