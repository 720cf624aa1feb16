"""benchmarks/bench.py says up front what it will run and about how long it takes, and a line
per finished job with the time left (the jobs themselves are not run here)."""
import re

from benchmarks import bench


def test_the_plan_and_the_time_left(capsys, monkeypatch):
    args = bench.parse_args([])
    specs = bench.job_specs(args, use_torch=True)
    assert [bench.job_label(s) for s in specs][:3] == ["time train b=32", "memory train b=32 ours",
                                                        "memory train b=32 torch"]
    assert bench.job_label(specs[-1]) == "layers b=128" and len(specs) == 10
    progress = bench.Progress(specs, "cpu", started=0.0)
    plan = progress.plan()
    assert plan.startswith("10 jobs, each in a fresh process: time train b=32,")
    assert "expected: about 7 minutes on 2 cores" in plan          # the default run is the reference
    quick = bench.Progress(bench.job_specs(bench.parse_args(["--quick", "--no-torch"]), False), "cpu", 0.0)
    assert "about 1 minute " in quick.plan()
    # The time left: the time taken so far, scaled by the cost of what is left to what is done.
    monkeypatch.setattr(bench, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: 60.0)}))
    progress.done(specs[0], "ours 1.00 s/step")                  # a minute after the start
    line = capsys.readouterr().out.strip()
    left = 60.0 * sum(progress.costs[1:]) / progress.costs[0]
    assert re.fullmatch(r"\[ +60 s\] job 1/10 time train b=32: ours 1\.00 s/step; about \S+ (s|min) left", line)
    assert line.endswith(f"about {bench.format_duration(left)} left")
