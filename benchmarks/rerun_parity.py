"""What one edit recomputes, through each front door, printed side by side.

Builds an experiment once (default: the tiny config) in a temporary git + DVC copy of
the workflow with plain Snakemake, as `make run` does; the first row is `dvc repro` (and
`snakemake all`) over that run with nothing changed: no job may run, DVC only hashes the
outputs and records its lock. Then for each single edit it starts from two copies of that finished run
(file times kept), applies the edit in both and runs `snakemake all` in one and
`dvc repro` in the other (and, for parameter edits, `dvc exp run -S` in a third). The
jobs a front door reran are read from Snakemake's own job listing in its output (rule and
output files of every job it started; DVC passes its stages' output through); the sets
must match. Beside them: the result and checkpoint files with new times (logs and
benchmark files left out; where DVC's cache links files, `.dvc/config`, DVC relinks an
output whose bytes did not change to its cached copy, old time included, so that count can
be lower under DVC for the same jobs) and the seconds per front door.

    python benchmarks/rerun_parity.py [--config config/tiny.yaml] [--edits no-change attack variant ...]

`--built DIR` starts from a copy of a build made elsewhere by `dvc repro` (the test suite's)
instead; the first row is then "no change after `dvc repro`".
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from dvc_noop import ENV  # git + DVC in a scratch repository: the same environment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # this checkout's code closures

from atop.code_closure import command_closure

TRAINING_COMMANDS = ("train-classifier", "train-adversarial", "pretrain-purifier", "finetune-purifier")
FILES = ("Snakefile", "rules", "config", "profiles", "report", "environment.yml", "src", "dvc.yaml", "params.yaml")


@dataclass(frozen=True)
class Edit:
    """One change a user makes: a config key (dotted path) set to a value, a source file touched, or nothing."""

    name: str
    key: str | None = None  # evaluation.attacks.<attack>.steps
    value: object = None
    source: str | None = None  # a file under src/ to append a comment to


def attack_module(config: dict) -> tuple[str, str]:
    """An attack module only evaluations run (not training's monitors), and which attack of the config
    runs it; else a module no job of this config runs."""
    training = set().union(*(command_closure(REPO, command) for command in TRAINING_COMMANDS))
    used = set()
    for name, spec in config["evaluation"]["attacks"].items():
        modules = [
            path
            for path in command_closure(REPO, "evaluate", (spec["method"],))
            if "/attacks/" in path and not path.endswith("__init__.py")
        ]
        used |= set(modules)
        own = [path for path in modules if path not in training]
        if own:
            return own[0], f"only {name} runs it"
    unused = sorted(str(p.relative_to(REPO)) for p in (REPO / "src/atop/attacks").glob("*.py"))
    unused = [path for path in unused if path not in used | training and not path.endswith("__init__.py")]
    return unused[0], "no job of this config runs it"


def edits_for(config: dict, built_by: str) -> dict[str, Edit]:
    attack = next(name for name, spec in config["evaluation"]["attacks"].items() if "steps" in spec)
    steps = config["evaluation"]["attacks"][attack]["steps"]
    variant = next(iter(config["purifiers"]))
    epochs = config["purifiers"][variant]["pretrain"]["epochs"]
    module, why = attack_module(config)
    return {
        "no-change": Edit(f"no change after `{built_by}`"),
        "attack": Edit(f"{attack}.steps {steps} -> {steps + 1}", f"evaluation.attacks.{attack}.steps", steps + 1),
        "variant": Edit(
            f"purifier {variant} pretrain.epochs {epochs} -> {epochs + 1}",
            f"purifiers.{variant}.pretrain.epochs",
            epochs + 1,
        ),
        "finetune": Edit(
            f"finetune.ce_weight {config['finetune']['ce_weight']} -> x2",
            "finetune.ce_weight",
            2 * config["finetune"]["ce_weight"],
        ),
        "report-code": Edit("src/atop/report/figures.py edited", source="src/atop/report/figures.py"),
        "attack-code": Edit("src/atop/attacks/eot.py edited", source="src/atop/attacks/eot.py"),
        "attack-module": Edit(f"one attack module edited: {module} ({why})", source=module),
    }


def run(args: list[str], cwd: Path) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def stamps(folder: Path, experiment: str) -> dict[str, int]:
    found = {}
    for top in ("results", "models"):
        for path in (folder / top / experiment).rglob("*"):
            relative = path.relative_to(folder)
            # DVC writes .gitignore files beside its outs: bookkeeping, not a job's output
            if path.is_file() and path.name != ".gitignore" and not {"logs", "benchmarks"} & set(relative.parts):
                found[str(relative)] = path.stat().st_mtime_ns
    return found


# A job in Snakemake's listing: "rule <name>:" (or "localrule"), indented fields, one of them "output:".
JOB = re.compile(r"^(?:local)?rule (\w+):\n(?:[ \t]+.*\n)*?[ \t]+output: (.+)$", re.MULTILINE)


def jobs_run(log: str) -> set[str]:
    """Every job a Snakemake run (or a DVC stage running Snakemake) started: 'rule: outputs'."""
    return {f"{rule}: {outputs}" for rule, outputs in JOB.findall(log)}


def summarise_jobs(jobs: set[str]) -> str:
    counts: dict[str, int] = {}
    for job in jobs:
        rule = job.split(":", 1)[0]
        counts[rule] = counts.get(rule, 0) + 1
    return ", ".join(f"{rule} x{n}" if n > 1 else rule for rule, n in sorted(counts.items())) or "-"


def job_outputs(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {path for path, stamp in after.items() if before.get(path) != stamp}


def set_key(config_path: Path, key: str, value) -> None:
    config = yaml.safe_load(config_path.read_text())
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def apply(edit: Edit, folder: Path, configfile: str) -> None:
    if edit.key is None and edit.source is None:
        return
    if edit.source:
        path = folder / edit.source
        path.write_text(path.read_text() + "\n# an edit\n")
    else:
        set_key(folder / configfile, edit.key, edit.value)


def summarise(files: set[str]) -> str:
    """Rewritten files by folder: 'eval: eot_pgd.json x4; report: 24 files' reads better than 30 paths."""
    groups: dict[str, dict[str, int]] = {}
    for path in files:
        parts = Path(path).parts[2:]  # drop results|models/<experiment>
        folder = parts[0] if len(parts) > 1 else "."
        groups.setdefault(folder, {}).setdefault(parts[-1], 0)
        groups[folder][parts[-1]] += 1
    shown = []
    for folder, names in sorted(groups.items()):
        if folder == "report":
            shown.append(f"report: {sum(names.values())} files")
            continue
        listed = ", ".join(f"{name} x{count}" if count > 1 else name for name, count in sorted(names.items()))
        shown.append(listed if folder == "." else f"{folder}: {listed}")
    return "; ".join(shown) or "-"


def build(base: Path, configfile: str, experiment: str, cores: str) -> None:
    """The workflow's files in ``base``, made a git + DVC repository, ``configfile`` built by `snakemake all`
    (no DVC lock yet: the "no change" row's `dvc repro` records it)."""
    base.mkdir()
    for name in FILES:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, base / name)
    (base / "params.yaml").write_text(yaml.safe_dump({"configfile": configfile, "experiment": experiment}))
    for command in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "base"],
    ):
        run(command, base)
    print(f"building {configfile} through snakemake all (as make run) in {base} ...", flush=True)
    build_seconds, _ = run(["snakemake", "--cores", cores, "all", "--configfile", configfile], base)
    print(f"built in {build_seconds:.1f} s\n", flush=True)


def record_lock(base: Path) -> None:
    """A build by `snakemake all` gets DVC's lock (`dvc repro`: nothing to run), committed."""
    if not (base / "dvc.lock").is_file():
        run(["dvc", "repro"], base)
    run(["git", "add", "-A"], base)
    run(["git", "commit", "-qm", "dvc lock", "--allow-empty"], base)


def check_build(built: Path, configfile: str, experiment: str) -> None:
    """Exit naming the problem unless ``built`` is a git + DVC checkout whose params select ``configfile``."""
    params = built / "params.yaml"
    if not params.is_file() or not (built / ".dvc").is_dir():
        sys.exit(f"--built {built}: not a git + DVC checkout of the workflow (no params.yaml or .dvc/)")
    selection = yaml.safe_load(params.read_text()) or {}
    if (selection.get("configfile"), selection.get("experiment")) != (configfile, experiment):
        sys.exit(f"--built {built}: params.yaml selects {selection}, not {configfile} / {experiment}")


def start_from_build(built: Path, base: Path, configfile: str) -> None:
    """A copy of a checked build (file times kept) as ``base``; exits unless it is up to date."""
    shutil.copytree(built, base, symlinks=True)
    _, dry_run = run(["snakemake", "-n", "all", "--configfile", configfile], base)
    if "Nothing to be done" not in dry_run:
        sys.exit(f"--built {built}: the build is not up to date (snakemake -n all plans jobs)")
    print(f"starting from the build in {built}\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/tiny.yaml", help="the experiment to build and edit")
    parser.add_argument("--cores", default="2")
    parser.add_argument("--edits", nargs="+", help="which edits (default: all)")
    parser.add_argument(
        "--built",
        type=Path,
        help="start from a copy of this git + DVC checkout where --config was already built by DVC"
        " (the tests' session build) instead of building it here",
    )
    args = parser.parse_args()
    config = yaml.safe_load((REPO / args.config).read_text())
    experiment = config["experiment"]
    edits = edits_for(config, "dvc repro" if args.built else "make run")
    chosen = args.edits or list(edits)
    unknown = sorted(set(chosen) - set(edits))
    if unknown:
        sys.exit(f"unknown edits {unknown}; choose from {sorted(edits)}")

    if args.built:
        check_build(args.built, args.config, experiment)  # before any temporary folder exists
    work = Path(tempfile.mkdtemp(prefix="atop-rerun-"))
    base = work / "base"
    if args.built:
        start_from_build(args.built, base, args.config)
    else:
        build(base, args.config, experiment, args.cores)

    rows = []
    chosen = sorted(chosen, key=lambda key: key != "no-change")  # before the base gets DVC's lock
    for key in chosen:
        if key != "no-change" and not (base / "dvc.lock").is_file():
            record_lock(base)
        edit = edits[key]
        doors = {
            "snakemake": ["snakemake", "--cores", args.cores, "all", "--configfile", args.config],
            "dvc repro": ["dvc", "repro"],
        }
        if edit.key:
            doors["dvc exp run -S"] = ["dvc", "exp", "run", "-S", f"{args.config}:{edit.key}={edit.value}"]
        outcome = {}
        for door, command in doors.items():
            # no change, `dvc repro`: run in the base itself, which so gets DVC's lock for the edits
            in_base = key == "no-change" and door == "dvc repro"
            folder = base if in_base else work / f"{key}-{door.split()[0]}-{len(outcome)}"
            if not in_base:
                shutil.copytree(base, folder, symlinks=True)  # copy2 keeps file times: the run stays current
            if door != "dvc exp run -S":
                apply(edit, folder, args.config)
            before = stamps(folder, experiment)
            seconds, log = run(command, folder)
            outcome[door] = (jobs_run(log), job_outputs(before, stamps(folder, experiment)), seconds)
            if not in_base:
                shutil.rmtree(folder)
        if key == "no-change":
            record_lock(base)
        reference = outcome["snakemake"][0]
        same = all(jobs == reference for jobs, _, _ in outcome.values())
        rows.append((edit.name, outcome, same))
        print(f"{edit.name}:", flush=True)
        for door, (jobs, files, seconds) in outcome.items():
            print(f"  {door:<16}{seconds:7.1f} s  {len(jobs):3d} jobs: {summarise_jobs(jobs)}", flush=True)
            print(f"  {'':<16}{'':9}  {len(files):3d} files with new times: {summarise(files)}", flush=True)
        print(f"  same jobs: {'yes' if same else 'NO'}\n", flush=True)

    print(f"{'edit':<48}{'same jobs':>10}" + "".join(f"{door + ' s':>20}" for door in rows[0][1]))
    for name, outcome, same in rows:
        print(
            f"{name:<48}{'yes' if same else 'NO':>10}"
            + "".join(f"{seconds:>20.1f}" for *_, seconds in outcome.values())
        )
    shutil.rmtree(work)
    if not all(same for *_, same in rows):
        sys.exit("the front doors disagree")


if __name__ == "__main__":
    main()
