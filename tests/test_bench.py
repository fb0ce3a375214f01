"""pydp.bench: a quick same-run benchmark of forward.yaml against the bare loop."""

from __future__ import annotations

from pathlib import Path

from pydp.bench import format_bench, run_bench

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"

KEYS = ("pipeline", "mpps", "cycles_per_packet", "baseline_mpps",
        "baseline_cycles_per_packet", "ratio", "source_mpps", "source_ratio", "memory",
        "duration", "flows", "pkt_size", "drops", "parse_forward")


def test_run_bench_forward_quick(eal):
    r = run_bench(PIPELINES / "forward.yaml", duration=0.3, flows=100)
    missing = [k for k in KEYS if k not in r]
    assert not missing, missing
    assert r["pipeline"] == "forward" and r["memory"] == eal.memory and r["parse_forward"]
    assert r["flows"] == 100 and r["pkt_size"] == 64 and r["duration"] == 0.3
    assert r["mpps"] > 0 and r["baseline_mpps"] > 0 and r["source_mpps"] > 0
    assert r["cycles_per_packet"] > 0 and r["baseline_cycles_per_packet"] > 0
    assert r["ratio"] == round(r["mpps"] / r["baseline_mpps"], 4)
    # the default: five alternating runs of each, the figures their medians
    assert r["repeat"] == 5 and all(len(v) == 5 for v in r["runs"].values())
    assert r["baseline_mpps"] == round(sorted(x["mpps"] for x in r["runs"]["baseline"])[2], 4)
    # every packet the pipeline received left on `out`: no drop of any kind
    assert r["drops"] == {}
    assert r["forwarded"]["rx"] > 0
    assert r["forwarded"]["tx"] == r["forwarded"]["rx"] == r["forwarded"]["by_port"]["out"]
    text = format_bench(r)
    assert "pipeline forward" in text and "bare" in text
