"""Every example output of README.md and docs/*.md, rerun and written, or checked.

    python docs/examples.py --check                  # rerun the fast and demo examples, compare
    python docs/examples.py --write                  # rerun them, rewrite the blocks that changed
    python docs/examples.py --write --slow           # also the slow ones (experiments.py all, ...)
    python docs/examples.py --write --reference      # also the timings' reference runs (bench_dist.py)
    python docs/examples.py --check --fast           # the fast ones only (what the test suite runs)
    python docs/examples.py --list                   # every example: name, kind, file, command

An example's output in a document sits between two markers, HTML comments that Markdown
does not show:

    <!-- example NAME: written by docs/examples.py, do not edit -->
    ...the block, as the script wrote it...
    <!-- end example NAME digest 0123456789ab -->

The digest is the first 12 hex digits of the SHA-256 of the text between the markers. So a
block edited by hand fails every check, whatever its kind, without rerunning anything (a
slow or reference block whose marker says ``digest pending`` is one not yet regenerated on
the code: a note, not a failure; a new example's markers are added by hand with any digest, and ``--write`` fills
the block); and
``--check`` reruns the commands of the fast and demo examples and compares their output with
the block. Timings (seconds, images/s, minutes) are left out of the comparison; ``--write``
keeps a block whose output differs only in them, so a rerun does not churn the documents.

Kinds:
    fast       seconds, no training; checked by the test suite (tests/test_examples.py)
    demo       after the demo run (python train.py, 30 epochs: 1-2 minutes on two cores),
               trained once per invocation; checked by --check, not by the suite
    slow       many trainings (python experiments.py all: 7 minutes on two idle cores, 49 on
               loaded ones; the demo run over seeds 1-7): regenerated with --slow, never
               rerun by --check (their digests are checked)
    reference  timings (benchmarks/bench_dist.py), measured on the CPU the block names:
               regenerated with --reference on a quiet machine, never compared

Each invocation runs the commands as a user would, from a fresh folder (``--workdir``, or a
temporary one) that links the repository's scripts and package: ``runs/`` and
``data_cache/`` start empty there, so ``python evaluate.py`` finds the run just trained.
Figures the examples show (``docs/demo/*.png``, ``docs/experiments/*.png``) are copied from
the runs by ``--write``, never compared (pixels differ between matplotlib versions).
Exit status 0 when every block checked agrees, 1 otherwise (each difference printed).
"""
import argparse
import dataclasses
import difflib
import glob
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
KINDS = ("fast", "demo", "slow", "reference")
BEGIN = re.compile(r"^<!-- example (?P<name>[\w-]+): written by docs/examples\.py, do not edit -->\n", re.M)
END = "<!-- end example {name} digest {digest} -->"
END_RE = re.compile(r"^<!-- end example (?P<name>[\w-]+) digest (?P<digest>\w+) -->$", re.M)
# What a rerun may change without the example being wrong: timings, and the run's folder name.
VOLATILE = [re.compile(p) for p in (
    r"\d+(\.\d+)? ?(s|min|ms)\b",                  # 0.02 s, 7.1 min
    r"\d+(\.\d+)? images/s",                       # 127.7 images/s
    r"\| \d+(\.\d+)? \|$",                         # a table's last column: minutes, s/run
    r"\d+ s CPU",                                  # 758 s CPU
)]


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def masked(text):
    """``text`` with what may change between reruns (timings) replaced by ``~``."""
    lines = []
    for line in text.splitlines():
        for pattern in VOLATILE:
            line = pattern.sub("~", line)
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------- running commands

class Work:
    """A folder standing for a fresh clone: the repository's scripts and package linked in,
    ``runs/`` and ``data_cache/`` its own. Commands run there as a user types them."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(ROOT):
            if name in ("runs", "data_cache", "seeds", ".git") or name.startswith("."):
                continue
            link = os.path.join(folder, name)
            if not os.path.lexists(link):
                os.symlink(os.path.join(ROOT, name), link)
        self.done = {}   # what one invocation computed once: the demo run's output, ...

    def run(self, command, check=True):
        """``command`` (a shell line, as the docs write it) in the folder: (status, stdout, stderr)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="120")
        env.pop("PYTHONPATH", None)   # as a user's shell: no CuPy stand-in
        done = subprocess.run(command, shell=True, cwd=self.folder, env=env, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise SystemExit(f"error: `{command}` in {self.folder} ended with status {done.returncode}:\n"
                             f"{done.stderr[-3000:]}")
        return done.returncode, done.stdout, done.stderr

    def once(self, key, make):
        if key not in self.done:
            self.done[key] = make()
        return self.done[key]

    def path(self, *parts):
        return os.path.join(self.folder, *parts)


def runs_named(text):
    """The run folders of a date-time name written as README writes them: runs/<run>."""
    return re.sub(r"runs/\d{8}-\d{6}(-\d+)?", "runs/<run>", text)


def lines_starting(text, *prefixes):
    return [line for line in text.splitlines() if line.startswith(prefixes)]


def fence(lines, info=""):
    return "\n".join([f"```{info}"] + list(lines) + ["```"])


# --------------------------------------------------------------------------- the examples

def demo_run(work):
    """``python train.py`` (the demo) in the work folder, once (its stdout kept in
    runs/demo.out, so that a kept ``--workdir`` reuses it): its stdout."""
    def train():
        log = work.path("runs", "demo.out")
        if os.path.isfile(log) and "\ndone:" in open(log).read():
            return open(log).read()
        _, out, _ = work.run("python train.py")
        with open(log, "w") as f:
            f.write(out)
        return out
    return work.once("demo run", train)


def ten_crop(work):
    demo_run(work)
    return work.once("ten-crop", lambda: work.run("python evaluate.py --ten-crop")[1])


def done_line(work):
    return runs_named(lines_starting(demo_run(work), "done:")[-1])


def readme_demo_done(work):
    return fence([done_line(work)])


def readme_ten_crop(work):
    return fence(lines_starting(ten_crop(work), "[val, ten-crop]"))


def training_demo_result(work):
    return fence(["$ python train.py", "...", done_line(work), "$ python evaluate.py --ten-crop", "...",
                  *lines_starting(ten_crop(work), "[val, ten-crop] top-")])


PHOTOS = "data_cache/demo-data/val/circle/circle_0000.JPEG data_cache/demo-data/val/star/star_0003.JPEG"


def training_classify(work):
    demo_run(work)
    command = f"python classify.py {PHOTOS}"
    _, out, _ = work.run(command)
    return fence([f"$ {command}"] + runs_named(out).rstrip("\n").splitlines())


PYTHON_EXAMPLE = '''import alexnet_np
net = alexnet_np.load(device="cpu")                  # best.npz of the newest run under runs/; or a path
photos = ["data_cache/demo-data/val/circle/circle_0000.JPEG", "data_cache/demo-data/val/star/star_0003.JPEG"]
probs = net.predict(photos)                          # (2, 10); also PIL images, uint8 arrays, prepared views
print(net.classify(photos[1], top=2))                # {printed}
features = net.features(photos, "fc7")               # (2, 256): Figure 4's space'''


def training_python(work):
    demo_run(work)
    code = PYTHON_EXAMPLE.format(printed="")
    _, out, _ = work.run(f"python -c {shlex.quote(code)}")
    printed = re.sub(r"(\d\.\d{4})\d+", r"\1...", out.strip())   # the probabilities to 4 decimals
    return fence(PYTHON_EXAMPLE.format(printed=printed).splitlines(), "python")


OPTION_ERRORS = ["python train.py --dropout 1.5", "python train.py --input-size 224 --image-size 256",
                 "python train.py --image-size 10", "python train.py --gpus 0,1,2"]


def options_errors(work):
    lines = []
    for command in OPTION_ERRORS:
        status, out, err = work.run(command, check=False)
        assert status == 2, f"`{command}` ended with status {status}, not 2 (a refused option)"
        lines += [f"$ {command}"] + (out + err).rstrip("\n").splitlines()
    return fence(lines)


def demo_seeds(work):
    """The demo run's best error for seeds 1-7, as the sentence of docs/training.md says them."""
    errors = []
    for seed in range(1, 8):
        _, out, _ = work.run(f"python train.py --seed {seed} --out seeds/seed-{seed} --no-figures")
        errors.append(re.search(r"best validation top-1 error ([\d.]+)%", out).group(1))
    seed0 = re.search(r"best validation top-1 error ([\d.]+)%", demo_run(work)).group(1)
    every = sorted(float(e) for e in errors + [seed0])
    median = (every[3] + every[4]) / 2
    return (f"With `--seed 1` to `--seed 7` the same command ended at {', '.join(errors[:-1])} and "
            f"{errors[-1]}% (median of the eight seeds {median:.1f}%).")


def experiments_all(work):
    """``python experiments.py all`` once (reused when its folder in the work folder is complete),
    then ``--report``: {section: text}."""
    def run():
        folder = work.path("runs", "experiments", "all")
        log = folder + ".out"
        if not os.path.isfile(log) or "experiment(s) in" not in open(log).read():
            _, out, _ = work.run("python experiments.py all --out runs/experiments/all")
            with open(log, "w") as f:
                f.write(out)
        minutes = re.search(r"(\d+) experiment\(s\) in ([\d.]+) min", open(log).read()).group(2)
        _, report, _ = work.run("python experiments.py --report runs/experiments/all/*")
        sections = {"overview": report[report.index("| experiment |"):].strip(), "minutes": minutes}
        for part in report.split("\n### ")[1:]:
            name = part.split(" ", 1)[0]
            sections[name] = "### " + part.split("\n| experiment |")[0].strip()
        return sections
    return work.once("experiments all", run)


def experiments_overview(work):
    s = experiments_all(work)
    return "\n".join([fence([f"python experiments.py all --out runs/experiments/all      # {s['minutes']} min here",
                             "python experiments.py --report runs/experiments/all/*     # the tables below, again"]),
                      "", s["overview"]])


def experiments_towers(work):
    return experiments_all(work)["towers"]


def experiments_figure1(work):
    return experiments_all(work)["figure1"]


def cpu_name():
    """The CPU's model name, as benchmarks/bench.py names it in its own figures."""
    sys.path.insert(0, ROOT)
    from benchmarks.bench import cpu_name as named
    return named()


def ranks_bench_dist(work):
    _, out, _ = work.run("python benchmarks/bench_dist.py")
    return "\n".join([f"Reference run, measured on {os.cpu_count()} cores of an {cpu_name()}, "
                      f"{time.strftime('%Y-%m-%d')} (timings: regenerated with "
                      f"`python docs/examples.py --write --reference`, never compared):", "",
                      fence(out.rstrip("\n").splitlines())])


@dataclasses.dataclass
class Example:
    name: str
    kind: str
    doc: str
    command: str      # what it runs, in words
    make: object      # make(work) -> the block's text
    figures: tuple = ()   # (path in the work folder, path in the repository) copied by --write


EXAMPLES = [
    Example("options-errors", "fast", "docs/options.md", "; ".join(OPTION_ERRORS), options_errors),
    Example("readme-demo-done", "demo", "README.md", "python train.py", readme_demo_done,
            figures=tuple((f"runs/*/{name}", f"docs/demo/{name}") for name in
                          ("curves.png", "conv1_kernels.png", "figure4_predictions.png", "figure4_neighbours.png"))),
    Example("readme-ten-crop", "demo", "README.md", "python evaluate.py --ten-crop", readme_ten_crop),
    Example("training-demo-result", "demo", "docs/training.md", "python train.py; python evaluate.py --ten-crop",
            training_demo_result),
    Example("training-classify", "demo", "docs/training.md", f"python classify.py {PHOTOS}", training_classify),
    Example("training-python", "demo", "docs/training.md", "the Python example, run", training_python),
    Example("training-seeds", "slow", "docs/training.md", "python train.py --seed S, S = 1..7", demo_seeds),
    Example("experiments-overview", "slow", "docs/experiments.md",
            "python experiments.py all; python experiments.py --report", experiments_overview,
            figures=(("runs/experiments/all/towers/curves.png", "docs/experiments/towers.png"),
                     ("runs/experiments/all/pooling/curves.png", "docs/experiments/pooling.png"),
                     ("runs/experiments/all/lrn/curves.png", "docs/experiments/lrn.png"),
                     ("runs/experiments/all/figure1/curves.png", "docs/experiments/figure1.png"))),
    Example("experiments-towers", "slow", "docs/experiments.md", "(the same run)", experiments_towers),
    Example("experiments-figure1", "slow", "docs/experiments.md", "(the same run)", experiments_figure1),
    Example("ranks-bench-dist", "reference", "docs/ranks.md", "python benchmarks/bench_dist.py", ranks_bench_dist),
]


# --------------------------------------------------------------------------- the documents

def blocks(text):
    """{name: (start, end, body)}: each marked block of a document (start, end: the body's span)."""
    found = {}
    for begin in BEGIN.finditer(text):
        name = begin.group("name")
        end = END_RE.search(text, begin.end())
        if end is None or end.group("name") != name:
            raise ValueError(f"the block {name} has no end marker of its own")
        body = text[begin.end():end.start()]
        if name in found:
            raise ValueError(f"the block {name} appears twice")
        found[name] = (begin.end(), end.start(), body, end.group("digest"))
    return found


def wrap(body):
    return body.rstrip("\n") + "\n"


def check_digests(root=ROOT):
    """Problems (one line each): a block edited by hand, a block without its example, an
    example without its block."""
    problems = []
    registered = {e.name: e for e in EXAMPLES}
    seen = set()
    for doc in DOCS:
        try:
            found = blocks(open(os.path.join(root, doc)).read())
        except ValueError as error:
            problems.append(f"{doc}: {error}")
            continue
        for name, (_, _, body, written) in found.items():
            seen.add(name)
            if name not in registered:
                problems.append(f"{doc}: the block {name} is no example of docs/examples.py")
            elif registered[name].doc != doc:
                problems.append(f"{doc}: the block {name} belongs in {registered[name].doc}")
            if written == "pending" and name in registered and registered[name].kind in ("slow", "reference"):
                option = "--slow" if registered[name].kind == "slow" else "--reference, on a quiet machine"
                print(f"note: {doc}: the {registered[name].kind} example {name} is not yet regenerated on "
                      f"this code (python docs/examples.py --write {option})")
            elif digest(body) != written:
                problems.append(f"{doc}: the block {name} was edited by hand (its digest is {digest(body)}, "
                                f"the marker says {written}): regenerate it, "
                                f"python docs/examples.py --write --only {name}")
    problems += [f"{e.doc}: no block for the example {e.name}" for e in EXAMPLES if e.name not in seen]
    return problems


def rewrite(doc, name, body, root=ROOT):
    """The block ``name`` of ``doc`` replaced by ``body`` (and its digest), the file written whole."""
    path = os.path.join(root, doc)
    text = open(path).read()
    start, end, _, _ = blocks(text)[name]
    body = wrap(body)
    end_marker = END_RE.match(text, end)
    text = text[:start] + body + END.format(name=name, digest=digest(body)) + text[end_marker.end():]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def copy_figures(example, work):
    for pattern, target in example.figures:
        found = sorted(glob.glob(work.path(pattern)), key=os.path.getmtime)
        if found:
            shutil.copyfile(found[-1], os.path.join(ROOT, target))
            print(f"  {target} <- {os.path.relpath(found[-1], work.folder)}")


def selected(args):
    kinds = {"fast"} if args.fast else {"fast", "demo"} | ({"slow"} if args.slow else set()) \
        | ({"reference"} if args.reference else set())
    chosen = [e for e in EXAMPLES if e.kind in kinds]
    if args.only:
        unknown = set(args.only) - {e.name for e in EXAMPLES}
        if unknown:
            raise SystemExit(f"error: --only {' '.join(sorted(unknown))}: no such example (--list names them)")
        chosen = [e for e in EXAMPLES if e.name in args.only]
    return chosen


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python docs/examples.py", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="rerun and compare; change nothing")
    mode.add_argument("--write", action="store_true", help="rerun and rewrite the blocks that changed")
    mode.add_argument("--list", action="store_true", help="name every example, its kind, file and command")
    parser.add_argument("--fast", action="store_true", help="the fast examples only (no training)")
    parser.add_argument("--slow", action="store_true", help="also the slow examples (10-20 minutes and more)")
    parser.add_argument("--reference", action="store_true",
                        help="also the timings' reference runs (on a quiet machine; never compared)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these examples only (any kind)")
    parser.add_argument("--workdir", help="the folder to run in (kept; reused: a finished demo or "
                                          "experiments run there is not trained again); default: a temporary one")
    args = parser.parse_args(argv)
    if args.list:
        for e in EXAMPLES:
            print(f"{e.name:22s} {e.kind:9s} {e.doc:20s} {e.command}")
        return 0
    problems = check_digests()
    temporary = None if args.workdir else tempfile.mkdtemp(prefix="examples-")
    work = Work(os.path.abspath(args.workdir or temporary))
    try:
        for example in selected(args):
            started = time.perf_counter()
            body = wrap(example.make(work))
            path = os.path.join(ROOT, example.doc)
            old = blocks(open(path).read()).get(example.name)
            same = old is not None and masked(old[2]) == masked(body)
            print(f"{example.name} ({example.kind}, {example.doc}): "
                  f"{'agrees' if same else 'differs'} ({time.perf_counter() - started:.0f} s)")
            if old is None:
                continue   # check_digests named it: its markers are to be added to the document
            if args.write:
                if not same or example.kind == "reference" or digest(old[2]) != old[3]:
                    rewrite(example.doc, example.name, body)
                    print("  rewritten")
                copy_figures(example, work)
            elif example.kind == "reference":
                print("  (a reference run: not compared)")
            elif not same:
                problems.append(f"{example.doc}: the block {example.name} is not what `{example.command}` prints now")
                print("".join(difflib.unified_diff((old[2] if old else "").splitlines(True), body.splitlines(True),
                                                   f"{example.doc} ({example.name})", "now")))
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    if args.write:
        problems = check_digests()
    for line in problems:
        print(line)
    print("every block checked agrees" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
