"""Faults a multi-day run meets: interrupted jobs, foreign checkpoints, reruns. Nothing may be lost or mixed."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from atop import cli

from conftest import SNAKEMAKE, copy_workflow, run_snakemake, tiny_config, write_config

PYTHON = sys.executable


def _data_spec(split_seed: int) -> dict:
    return {
        "experiment": "faults",
        "seed": 0,
        "device": "cpu",
        "data": {
            "dataset": "digits",
            "image_size": 8,
            "limit": 120,
            "val_size": 20,
            "test_size": 40,
            "split_seed": split_seed,
        },
    }


def _prepare(folder: Path, split_seed: int) -> Path:
    out = folder / f"data{split_seed}.pt"
    args = [
        "prepare-data",
        "--spec",
        json.dumps(_data_spec(split_seed)),
        "--out-data",
        str(out),
        "--out-manifest",
        str(folder / f"manifest{split_seed}.json"),
    ]
    assert cli.main(args) == 0
    return out


def test_checkpoint_from_another_experiment_is_refused(tmp_path, caplog):
    data_a, data_b = _prepare(tmp_path, 0), _prepare(tmp_path, 1)
    classifier = tmp_path / "classifier.pt"
    spec = {
        **_data_spec(0),
        "classifier": {
            "arch": "small_cnn",
            "arch_params": {"width": 4},
            "epochs": 1,
            "batch_size": 32,
            "lr": 1e-3,
            "weight_decay": 0,
        },
    }
    assert (
        cli.main(
            [
                "train-classifier",
                "--spec",
                json.dumps(spec),
                "--data",
                str(data_a),
                "--out-checkpoint",
                str(classifier),
                "--out-curve",
                str(tmp_path / "curve.csv"),
            ]
        )
        == 0
    )
    evaluation = {
        "n_samples": 8,
        "sample_seed": 0,
        "draws": 1,
        "batch_size": "auto",
        "checks": {"gradient_samples": 4, "eps_zero_samples": 0},
    }
    eval_spec = {**_data_spec(1), "evaluation": evaluation, "attack": {"method": "fgsm", "eps": "8/255"}}
    out = tmp_path / "result.json"
    code = cli.main(
        [
            "evaluate",
            "--spec",
            json.dumps(eval_spec),
            "--data",
            str(data_b),
            "--defense",
            "standard",
            "--attack",
            "fgsm",
            "--classifier",
            str(classifier),
            "--out",
            str(out),
        ]
    )
    assert code == 1
    assert "trained on another dataset file" in caplog.text and str(classifier) in caplog.text
    assert not out.exists()
    eval_spec["data"]["split_seed"] = 0
    assert (
        cli.main(
            [
                "evaluate",
                "--spec",
                json.dumps(eval_spec),
                "--data",
                str(data_a),
                "--defense",
                "standard",
                "--attack",
                "fgsm",
                "--classifier",
                str(classifier),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["n"] == 8


def _kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_killed_evaluation_leaves_no_result_and_reruns(tmp_path):
    """SIGKILL in the middle of an attack: no result file (complete or partial), and a rerun completes."""
    data = _prepare(tmp_path, 0)
    classifier = tmp_path / "classifier.pt"
    spec = {
        **_data_spec(0),
        "classifier": {
            "arch": "small_cnn",
            "arch_params": {"width": 4},
            "epochs": 1,
            "batch_size": 32,
            "lr": 1e-3,
            "weight_decay": 0,
        },
    }
    assert (
        cli.main(
            [
                "train-classifier",
                "--spec",
                json.dumps(spec),
                "--data",
                str(data),
                "--out-checkpoint",
                str(classifier),
                "--out-curve",
                str(tmp_path / "curve.csv"),
            ]
        )
        == 0
    )
    out = tmp_path / "eval" / "result.json"
    evaluation = {
        "n_samples": 40,
        "sample_seed": 0,
        "draws": 1,
        "batch_size": 4,
        "checks": {"gradient_samples": 4, "eps_zero_samples": 0},
    }
    slow = {
        **_data_spec(0),
        "evaluation": evaluation,
        "attack": {"method": "pgd_linf", "eps": "8/255", "alpha": "1/255", "steps": 400},
    }
    command = [
        PYTHON,
        "-m",
        "atop",
        "evaluate",
        "--spec",
        json.dumps(slow),
        "--data",
        str(data),
        "--defense",
        "standard",
        "--attack",
        "pgd",
        "--classifier",
        str(classifier),
        "--out",
        str(out),
    ]
    log = tmp_path / "eval.log"
    with log.open("w") as handle:
        process = subprocess.Popen(command, stderr=handle, stdout=handle, start_new_session=True)
        deadline = time.time() + 120
        while "standard/pgd" not in log.read_text() and time.time() < deadline:
            time.sleep(0.2)  # tqdm's first line: the attack has started
        assert process.poll() is None, log.read_text()
        _kill_group(process)
    assert not out.exists()
    assert not any(out.parent.glob(".*.tmp")) if out.parent.exists() else True
    quick = {**slow, "attack": {"method": "pgd_linf", "eps": "8/255", "alpha": "2/255", "steps": 2}}
    command[command.index("--spec") + 1] = json.dumps(quick)
    subprocess.run(command, check=True, capture_output=True)
    assert json.loads(out.read_text())["steps"] == 2


def _interruptible_config() -> dict:
    """The tiny config cut to one chain that takes every kind of job (training of classifier, AT baseline and
    purifier, fine-tuning, a randomized defense's evaluation, checks, diagnostics, report): half its jobs."""
    config = tiny_config()
    evaluation = config["evaluation"]
    evaluation["defenses"] = ["standard", "at", "atop"]
    evaluation["attacks"] = {"eot_pgd": evaluation["attacks"]["eot_pgd"]}
    evaluation["sweeps"] = {}
    return config


def _run_interruptible(folder: Path) -> str:
    copy_workflow(folder)
    configfile = write_config(folder, _interruptible_config())
    run = run_snakemake(folder, "--cores", "2", "all", "--configfile", str(configfile))
    if run.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed:\n{run.stderr[-3000:]}")
    return configfile.name


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> tuple[Path, str]:
    """``_interruptible_config`` run to the end once per test run (workers share it): (folder, config file
    name). Read it, or copy it (file times kept) to change it."""
    from conftest import _shared_build

    return _shared_build(tmp_path_factory, "interruptible-run", _run_interruptible)


@pytest.mark.workflow
def test_interrupted_workflow_reruns_to_the_same_numbers(tmp_path, finished_run):
    """Kill Snakemake and its jobs mid-run, rerun: the result equals an uninterrupted run's, bit for bit."""
    folder = tmp_path / "interrupted"
    folder.mkdir()
    copy_workflow(folder)
    configfile = write_config(folder, _interruptible_config())
    process = subprocess.Popen(
        [SNAKEMAKE, "--cores", "2", "all", "--configfile", str(configfile)],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    curve = folder / "results" / "tiny" / "curves" / "classifier" / "seed0.csv"
    deadline = time.time() + 300
    while not curve.exists() and time.time() < deadline:
        time.sleep(0.5)  # the first training job has finished; others are running
    assert process.poll() is None
    _kill_group(process)
    # A killed Snakemake leaves its lock behind; unlocking is the documented first step.
    unlock = run_snakemake(folder, "--unlock", "all", "--configfile", str(configfile))
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    run = run_snakemake(folder, "--cores", "2", "all", "--configfile", str(configfile))
    assert run.returncode == 0, run.stderr[-3000:]
    first, second = finished_run[0] / "results" / "tiny", folder / "results" / "tiny"  # uninterrupted, interrupted
    assert (first / "report" / "metrics.json").read_text() == (second / "report" / "metrics.json").read_text()
    for result in sorted((first / "eval").rglob("*.json")):
        a = json.loads(result.read_text())
        b = json.loads((second / result.relative_to(first)).read_text())
        assert a["per_sample"] == b["per_sample"] and a["robust"] == b["robust"], result
    # Checkpoint files differ (their metadata records per-epoch wall times); their weights must not.
    for checkpoint in sorted((first.parent.parent / "models").rglob("*.pt")):
        twin = second.parent.parent / "models" / checkpoint.relative_to(first.parent.parent / "models")
        a = torch.load(checkpoint, weights_only=True)["state_dict"]
        b = torch.load(twin, weights_only=True)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), checkpoint


def _report_text(folder: Path) -> dict[str, str]:
    """Every table, markdown and JSON file of a report by relative path (figures: names only)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): "" if p.suffix in (".png", ".svg") else p.read_text() for p in files}


def test_killed_report_leaves_the_previous_report_or_none_never_a_mix(tmp_path):
    """SIGKILL while the report is being written: the old complete report survives (or none), rerun completes."""
    from atop.report import write_report

    from report_fixtures import make_result, write_results

    def results(robust: float) -> list[dict]:
        return [
            make_result(d, a, robust if d != "standard" else 0.0, n=64)
            for d in ("standard", "ap-gan-rt2", "atop-gan-rt2")
            for a in ("pgd", "eot_pgd", "fgsm")
        ]

    write_results(tmp_path / "old", results(0.40))
    report = tmp_path / "report"
    write_report([tmp_path / "old" / "eval"], report, "faults", "digits")
    before = _report_text(report)
    assert "metrics.json" in before and "robustness.csv" in before

    write_results(tmp_path / "new", results(0.55))
    command = [
        PYTHON,
        "-m",
        "atop",
        "report",
        "--experiment",
        "faults",
        "--dataset",
        "digits",
        "--results",
        str(tmp_path / "new" / "eval"),
        "--out-dir",
        str(report),
    ]
    log = tmp_path / "report.log"
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=handle, start_new_session=True)
        deadline = time.time() + 120
        while not any(tmp_path.glob(".report.staging-*/robustness.csv")) and time.time() < deadline:
            time.sleep(0.01)  # the new report has begun to be written (figures come after the tables)
        assert process.poll() is None, log.read_text()
        _kill_group(process)
    # The previous report, byte for byte, or (killed between the two renames) no report at all.
    assert not report.exists() or _report_text(report) == before

    assert subprocess.run(command, capture_output=True, check=False).returncode == 0
    after = _report_text(report)
    assert after.keys() == before.keys() and after != before
    assert json.loads(after["metrics.json"])["defenses"]["atop-gan-rt2"]["pgd"] == 0.55
    assert not list(tmp_path.glob(".report.*")), "staging folders of the killed run were not cleaned up"


@pytest.mark.parametrize("damage", ["truncated", "altered", "stale manifest"])
def test_damaged_prepared_dataset_is_detected_and_never_used(tmp_path, caplog, damage):
    """A dataset file a killed or interfered-with job left behind stops the next stage, naming the file."""
    folder = tmp_path / "data"
    folder.mkdir()
    data, manifest = folder / "dataset.pt", folder / "manifest.json"
    assert (
        cli.main(
            [
                "prepare-data",
                "--spec",
                json.dumps(_data_spec(0)),
                "--out-data",
                str(data),
                "--out-manifest",
                str(manifest),
            ]
        )
        == 0
    )
    raw = data.read_bytes()
    if damage == "truncated":
        data.write_bytes(raw[: len(raw) // 2])
    elif damage == "altered":  # same size, a few bytes in the middle of the image tensor changed
        middle = len(raw) // 2
        data.write_bytes(raw[:middle] + bytes(b ^ 0xFF for b in raw[middle : middle + 8]) + raw[middle + 8 :])
    else:  # the data file of another split under this manifest: a job killed between the two writes
        _prepare(tmp_path, 1).replace(data)
    checkpoint = tmp_path / "classifier.pt"
    spec = {
        **_data_spec(0),
        "classifier": {
            "arch": "small_cnn",
            "arch_params": {"width": 4},
            "epochs": 1,
            "batch_size": 32,
            "lr": 1e-3,
            "weight_decay": 0,
        },
    }
    code = cli.main(
        [
            "train-classifier",
            "--spec",
            json.dumps(spec),
            "--data",
            str(data),
            "--out-checkpoint",
            str(checkpoint),
            "--out-curve",
            str(tmp_path / "curve.csv"),
        ]
    )
    assert code == 1
    assert str(data) in caplog.text and "rerun prepare_data" in caplog.text
    assert not checkpoint.exists() and not (tmp_path / "curve.csv").exists()


# --------------------------------------------------------------------------- mistakes caught before any job
# Issue 27: a config a job would refuse is refused by the DAG's own validation (`snakemake -n` says so,
# naming the key), so no job starts and no finished output is removed.


def _dry_run(folder: Path, config: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    configfile = write_config(folder, config)
    return run_snakemake(folder, "-n", "all", "--configfile", str(configfile), *args, env=env)


def _set(config: dict, dotted: str, value) -> dict:
    *parents, leaf = dotted.split(".")
    section = config
    for key in parents:
        section = section.setdefault(key, {})
    section[leaf] = value
    return config


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data.test_size", 5000, r"data\.val_size \+ data\.test_size = 40 \+ 5000 = 5040 leaves no training images"),
        ("data.limit", None, None),  # without the limit the whole 1797 digits are there: valid
        ("evaluation.n_samples", 5000, r"evaluation\.n_samples = 5000 exceeds data\.test_size = 60"),
        ("evaluation.sweeps.eps.n_samples", 61, r"evaluation\.sweeps\.eps\.n_samples = 61 exceeds data\.test_size"),
        (
            "diagnostics.measures.n_images",
            41,
            r"diagnostics\.measures\.n_images = 41 exceeds evaluation\.n_samples = 40",
        ),
        ("finetune.eps", "8/0", r"finetune\.eps: '8/0' is neither a number nor a fraction"),
        ("data.dataset", "cifar10", r"data\.image_size = 16: cifar10 images are 32x32"),
    ],
)
def test_config_a_job_would_refuse_is_refused_by_the_dry_run(workflow_dir, key, value, message):
    run = _dry_run(workflow_dir, _set(tiny_config(), key, value))
    if message is None:
        assert run.returncode == 0, run.stderr[-2000:]
        return
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert re.search(message, output), output[-2000:]
    assert len(output.strip().splitlines()) < 10, output  # the key, not a schema dump


def test_cuda_on_a_machine_without_one_is_refused_by_the_dry_run(workflow_dir):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU visible, whatever this machine has
    run = _dry_run(workflow_dir, _set(tiny_config(), "device", "cuda"), env=env)
    assert run.returncode != 0
    assert "device = 'cuda', but this machine shows no CUDA device" in run.stdout + run.stderr, run.stdout[-2000:]
    assert _dry_run(workflow_dir, _set(tiny_config(), "device", "cpu"), env=env).returncode == 0


def test_provided_weights_that_do_not_exist_are_refused_by_the_dry_run(workflow_dir):
    config = tiny_config()
    config["classifier"]["pretrained"] = {"path": "Standard.pt", "sha256": "a" * 64}
    run = _dry_run(workflow_dir, config)
    assert run.returncode != 0
    assert "classifier.pretrained.path = 'Standard.pt': no such file" in run.stdout + run.stderr, run.stdout[-2000:]


# --------------------------------------------------------------------------- finished work survives a failed rerun


def _outputs(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every output of the experiment (not the jobs' logs and benchmarks): its bytes and modification time."""
    files = [*(folder / "results" / "tiny").rglob("*"), *(folder / "models" / "tiny").rglob("*")]
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in files
        if p.is_file() and not {"logs", "benchmarks"} & set(p.relative_to(folder).parts) and p.suffix != ".resume"
    }


# One config change per stage, each making that stage's jobs rerun; the reruns fail on purpose after
# writing their new outputs (ATOP_FAIL_COMMANDS: the worst moment), which a valid config cannot cause.
FAILED_RERUNS = [
    ("prepare_data", "data.split_seed", 1),
    ("train_classifier, train_adversarial", "classifier.lr", 2.0e-3),
    ("pretrain_purifier", "purifiers.gan-rt2.pretrain.l1_weight", 2.0),
    ("finetune_purifier", "finetune.ce_weight", 0.25),
    ("evaluate", "evaluation.attacks.eot_pgd.steps", 2),
    ("robustness_measures", "diagnostics.measures.n_images", 4),
    ("report", "verdicts.equivalence_margin", 0.1),
]


@pytest.mark.workflow
def test_failed_rerun_of_each_stage_leaves_the_finished_outputs_as_they_were(tmp_path, finished_run):
    """Complete run; then, stage by stage, a config change whose rerun fails: every previous output is back,
    byte for byte with its modification time, and with the old config `snakemake -n` wants nothing."""
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(finished_run[0], folder, symlinks=True)  # copy2: file times kept, the run stays finished
    configfile = folder / finished_run[1]
    before = _outputs(folder)
    assert any(name.endswith(".pt") for name in before) and any("report" in name for name in before)

    env = {**os.environ, "ATOP_FAIL_COMMANDS": "*"}
    for stage, key, value in FAILED_RERUNS:
        changed = write_config(folder, _set(_interruptible_config(), key, value), name="changed.yaml")
        failed = run_snakemake(folder, "--cores", "2", "--keep-going", "all", "--configfile", str(changed), env=env)
        assert failed.returncode != 0, f"{stage}: the rerun did not fail\n{failed.stderr[-2000:]}"
        assert "previous outputs are back in place" in failed.stderr, f"{stage}\n{failed.stderr[-3000:]}"
        assert "failed: ATOP_FAIL_COMMANDS names" in failed.stderr, f"{stage}\n{failed.stderr[-3000:]}"
        after = _outputs(folder)
        assert after.keys() >= before.keys(), f"{stage}: lost {sorted(before.keys() - after.keys())}"
        changed_files = [name for name in before if after[name] != before[name]]
        assert not changed_files, f"{stage}: changed {changed_files}"
        dry = run_snakemake(folder, "-n", "all", "--configfile", str(configfile))
        assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, f"{stage}\n{dry.stdout[-3000:]}"
        assert not (folder / ".snakemake" / "atop-previous").exists()


def _messages(run: subprocess.CompletedProcess) -> str:
    return run.stdout + run.stderr


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda c: c.update(evalution=c.pop("evaluation")),
            "unknown key 'evalution' at the top level; did you mean 'evaluation'?",
        ),
        (
            lambda c: c["data"].update(val_sise=c["data"].pop("val_size")),
            "unknown key 'val_sise' in data; did you mean 'val_size'?",
        ),
        (lambda c: c["evaluation"]["attacks"]["fgsm"].update(method="fgssm"), "did you mean 'fgsm'?"),
        (lambda c: [c.pop(k) for k in ("data", "classifier", "finetune")], "--configfile replaces config/config.yaml"),
    ],
    ids=["top-level typo", "nested typo", "misspelt method", "partial config"],
)
def test_schema_mistakes_name_the_file_and_key_in_a_few_lines(workflow_dir, edit, expected):
    config = tiny_config()
    edit(config)
    run = _dry_run(workflow_dir, config)
    output = _messages(run)
    assert run.returncode != 0
    assert expected in output and "test.yaml: " in output, output[-3000:]
    assert len(output.strip().splitlines()) < 12, output  # no schema dump


def test_command_line_overrides_take_yaml_values(workflow_dir):
    """--config seeds=[0,1] is a list of integers and nested values are numbers, validated like the file."""
    configfile = write_config(workflow_dir, tiny_config())
    args = ("-n", "--configfile", str(configfile), "--config", "seeds=[0,1]", "evaluation={n_samples: 10}", "--")
    run = run_snakemake(workflow_dir, *args, "all")
    assert run.returncode == 0, _messages(run)[-3000:]
    assert "seed1" in run.stdout  # the second seed's jobs are planned
    bad = run_snakemake(
        workflow_dir, "-n", "--configfile", str(configfile), "--config", "evaluation={n_samples: 500}", "--", "all"
    )
    assert bad.returncode != 0 and "evaluation.n_samples = 500 exceeds data.test_size = 60" in _messages(bad)


# --------------------------------------------------------------------------- every error names its file


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("nan", r"robust\.accuracy = nan is not an accuracy in \[0, 1\]"),
        ("above its interval", r"robust\.accuracy = 0\.95 lies outside its own robust\.ci95"),
        ("truncated", r"not valid JSON \(truncated\?\)"),
    ],
)
def test_damaged_result_is_named_with_its_field_and_counted_missing(tmp_path, caplog, damage, reason):
    """A result no evaluation writes (NaN, robust above its own interval, cut short): the report names the
    file and the field, leaves it out, and counts it missing (the log agrees)."""
    from report_fixtures import make_result, write_results

    caplog.set_level(logging.INFO)
    results = [make_result(d, a, 0.3, n=64) for d in ("standard", "ap", "atop") for a in ("fgsm", "pgd")]
    paths = write_results(tmp_path, results)
    damaged = paths[-1]
    result = json.loads(damaged.read_text())
    if damage == "nan":
        result["robust"]["accuracy"] = float("nan")
        damaged.write_text(json.dumps(result))
    elif damage == "above its interval":
        result["robust"]["accuracy"] = 0.95  # above clean 0.9, its interval still around 0.3
        damaged.write_text(json.dumps(result))
    else:
        damaged.write_text(damaged.read_text()[:100])
    args = ["report", "--experiment", "faults", "--dataset", "digits", "--results", str(tmp_path / "eval")]
    args += ["--expected", *map(str, paths), "--out-dir", str(tmp_path / "report")]
    assert cli.main(args) == 0
    problem = next(line for line in caplog.text.splitlines() if str(damaged) in line and "unreadable" in line)
    assert re.search(reason, problem), problem
    assert "(6 results, 1 missing)" not in caplog.text and "(5 results, 1 missing)" in caplog.text
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["missing"] == 1


@pytest.mark.parametrize("damage", ["truncated", "zero bytes"])
def test_damaged_checkpoint_is_named_with_a_reason(tmp_path, caplog, damage):
    from atop.errors import CheckpointError
    from atop.io import load_checkpoint, save_checkpoint

    checkpoint = tmp_path / "classifier.pt"
    save_checkpoint(checkpoint, {"w": torch.zeros(64, 64)}, {"kind": "classifier"})
    raw = checkpoint.read_bytes()
    checkpoint.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(checkpoint)
    message = str(info.value)
    assert str(checkpoint) in message and "delete it and rerun the rule that makes it" in message
    assert ("is empty (0 bytes)" if damage == "zero bytes" else "truncated or damaged") in message
    assert "Invalid argument" not in message.split("(")[0]


def test_yaml_syntax_error_is_named_with_file_and_line(workflow_dir):
    """A tab in the default config: `snakemake -n` names the file and line; for a --configfile (which
    Snakemake reads before the workflow, naming neither) `python -m atop.config` does."""
    default = workflow_dir / "config" / "config.yaml"
    lines = default.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("  val_size:"))
    lines[row] = "\t" + lines[row].lstrip()
    default.write_text("\n".join(lines) + "\n")
    run = run_snakemake(workflow_dir, "-n", "all")
    assert run.returncode != 0
    assert f"config/config.yaml:{row + 1}:1: YAML syntax error" in _messages(run), _messages(run)[-2000:]

    check = subprocess.run(
        [PYTHON, "-m", "atop.config", str(default)], capture_output=True, text=True, check=False, cwd=workflow_dir
    )
    assert check.returncode == 1 and f"config.yaml:{row + 1}:1: YAML syntax error" in check.stderr, check.stderr


class _Persistence:
    """Snakemake's metadata store, as PreviousOutputs uses it."""

    def __init__(self):
        self.records = {}

    def _get_key(self, output):
        return str(output)

    def metadata(self, output):
        return self.records.get(str(output))

    def _write_record(self, key, record):
        self.records[key] = record

    def _clear_cache(self):
        pass


class _Workflow:
    def __init__(self, jobs, remote=False):
        self.persistence, self.remote_exec, self.subprocess_exec = _Persistence(), remote, False
        self.dag = type("Dag", (), {"needrun_jobs": lambda _: jobs})()


def test_previous_outputs_come_back_only_for_jobs_that_failed(tmp_path, monkeypatch):
    """Unit check of the mechanism: a failed job (outputs gone) gets its bytes, times and records back;
    a finished job keeps its new outputs; a cluster job's own Snakemake does nothing."""
    from atop.previous_outputs import FOLDER, PreviousOutputs

    monkeypatch.chdir(tmp_path)
    paths = {name: Path(f"results/{name}.pt") for name in ("failed", "finished", "waiting")}
    for path in paths.values():
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"old {path.stem}")
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    jobs = [type("Job", (), {"output": [str(p)]})() for p in paths.values()]
    workflow = _Workflow(jobs)
    workflow.persistence.records = {str(p): {"params": "old"} for p in paths.values()}
    previous = PreviousOutputs(workflow)
    assert previous.keep() == 3
    paths["failed"].unlink()  # Snakemake removed it before the job, which then failed
    workflow.persistence.records[str(paths["failed"])] = {"params": "new"}  # and recorded the new params
    paths["finished"].unlink()
    paths["finished"].write_text("new finished")
    assert previous.restore() == [paths["failed"]]
    assert paths["failed"].read_text() == "old failed" and paths["failed"].stat().st_mtime_ns == 1_000_000_000
    assert workflow.persistence.records[str(paths["failed"])] == {"params": "old"}
    assert paths["finished"].read_text() == "new finished" and paths["waiting"].read_text() == "old waiting"
    assert not FOLDER.exists()

    remote = PreviousOutputs(_Workflow(jobs, remote=True))
    assert remote.keep() == 0 and not FOLDER.exists()


def test_failed_job_is_named_on_the_console_with_its_reason_and_log(workflow_dir):
    """The console gives each failed job's one-line reason and its log (not only "check log file(s)"),
    and says its previous outputs are back."""
    configfile = write_config(workflow_dir, tiny_config())
    target = "results/tiny/data/dataset.pt"
    assert run_snakemake(workflow_dir, "--cores", "1", target, "--configfile", str(configfile)).returncode == 0
    before = (workflow_dir / target).read_bytes()
    changed = write_config(workflow_dir, _set(tiny_config(), "data.split_seed", 3), name="changed.yaml")
    env = {**os.environ, "ATOP_FAIL_COMMANDS": "prepare-data"}
    failed = run_snakemake(workflow_dir, "--cores", "1", target, "--configfile", str(changed), env=env)
    assert failed.returncode != 0
    reason = "prepare-data failed: ATOP_FAIL_COMMANDS names 'prepare-data'"
    assert f"{reason}: failing on purpose, after the work was done (log: results/tiny/logs/prepare_data.log)" in (
        failed.stderr
    ), failed.stderr[-3000:]
    assert "previous outputs are back in place (2 files" in failed.stderr
    assert (workflow_dir / target).read_bytes() == before
