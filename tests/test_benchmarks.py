"""The on-demand benchmarks still run (smallest settings): a benchmark that rots is found here, not on a GPU.

Their figures are not checked - only that each script runs end to end and prints its
side-by-side comparison. Timings belong to `make bench`, never to the test suite.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.workflow  # subprocesses of several seconds each

SMALL = {
    "eot.py": [
        "--images",
        "4",
        "--steps",
        "1",
        "--repeats",
        "1",
        "--trials",
        "1",
        "--reference-draws",
        "8",
        "--pass-sizes",
        "4",
        "8",
        "--seconds-per-size",
        "0.2",
    ],
    "harness.py": ["--images", "8", "--repeats", "1"],
    "scaling.py": ["--samples", "4", "8", "--eot", "1", "2", "--fixed-samples", "4", "--steps", "1", "--repeats", "1"],
    "gpu_fastpath.py": ["--smoke", "--device", "cpu", "--steps", "1", "--eot", "2"],
    "rerun_parity.py": ["--edits", "report-code"],  # the cheapest edit, from the session build (below)
    "startup.py": ["--before", "HEAD", "--repeats", "1", "--commands", "checks"],
    "monitors.py": ["--smoke", "--repeats", "1"],
}
CACHED = {"eot.py", "harness.py", "scaling.py", "monitors.py"}
PRINTS = {
    "eot.py": ["speed-up vs EOTPGD", "target >= 3x on the CPU", "images per pass", "gradient quality"],
    "harness.py": ["img/s"],
    "scaling.py": ["s per image", "s per EOT sample", "R^2"],
    "gpu_fastpath.py": ["on / off", "TFLOP/s", "fast path on"],
    "rerun_parity.py": ["same jobs", "dvc repro", "report: "],
    "startup.py": ["after / before", "checks"],
    "monitors.py": ["AT monitor call", "fine-tuning monitor call", "added to the default DAG"],
}


@pytest.mark.parametrize("script", sorted(SMALL))
def test_benchmark_runs_and_prints_its_comparison(script, tmp_path, request):
    args = list(SMALL[script])
    if script in CACHED:  # the digits fixture: trained weights kept in a folder of the test's own
        args += ["--threads", "1", "--cache", str(tmp_path / "cache")]
    if script == "rerun_parity.py":  # the session's tiny DVC build (tests/dvc_repo.py), not a second one
        args += ["--built", str(request.getfixturevalue("tiny_dvc_build")[0])]
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for fragment in PRINTS[script]:
        assert fragment in run.stdout, f"{script}: {fragment!r} not printed:\n{run.stdout[-2000:]}"


def _rerun_parity_from(folder) -> subprocess.CompletedProcess:
    script = str(REPO / "benchmarks" / "rerun_parity.py")
    args = [sys.executable, script, "--edits", "report-code", "--built", str(folder)]
    return subprocess.run(args, capture_output=True, check=False, text=True, timeout=120)


def test_rerun_parity_refuses_a_folder_that_is_not_a_build(tmp_path):
    (tmp_path / "params.yaml").write_text("configfile: config/tiny.yaml\nexperiment: other\n")
    for folder in (tmp_path / "missing", tmp_path):
        run = _rerun_parity_from(folder)
        assert run.returncode != 0 and "not a git + DVC checkout" in run.stderr, run.stderr
    (tmp_path / ".dvc").mkdir()  # a DVC checkout now, but of another experiment
    run = _rerun_parity_from(tmp_path)
    assert run.returncode != 0 and "not config/tiny.yaml / tiny" in run.stderr, run.stderr
