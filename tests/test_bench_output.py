"""What the benchmark scripts print, without running their measurements: bench.py says up
front what it will run and about how long it takes, and a line per finished job with the time
left; bench_data.py's table lines up whatever its rows hold."""
import re

from benchmarks import bench, bench_data


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


def test_the_data_table_lines_up():
    rows = [("prepare demo (generated, a long name for a set of photos) (1800 files), 1 worker", 195.4, 283.0),
            ("uint8 crops + flips (host, 1 thread)", 1234567.0, 8.0)]
    lines = bench_data.table(rows).splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1              # every line as long
    assert [m.start() for m in re.finditer(r"\|", lines[0])] == [m.start() for m in re.finditer(r"\|", lines[2])]
    assert lines[1].endswith(":|") and "|      195 |" in lines[2] and lines[3].endswith("|         8 |")
