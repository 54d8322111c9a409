"""Finished outputs survive a failed job (the workflow's onstart / onerror hooks, rules/common.smk).

Snakemake removes a job's existing outputs before it starts the job (``Job.prepare``) and again
when the job fails, so a rerun that fails (a config change the DAG cannot judge, a NaN loss, a
killed node) would otherwise lose the previous run's checkpoints and results. Before any job
starts, every existing output of the jobs about to run is hard-linked (copied where links are
impossible, keeping the modification time) into a hidden folder, with Snakemake's metadata
record of it (the params and code it was made with). After a failed run, each job none of whose
outputs exist any more (it failed, and Snakemake removed them) gets its previous outputs and
their records back: the same bytes and times, so with the old config ``snakemake -n`` wants
nothing, and with the new one the job is still wanted. Jobs that succeeded keep their new
outputs; jobs that never started were never touched. Only the Snakemake process that schedules
the jobs does this (not a cluster job's own Snakemake).

Torch-free: it runs inside Snakemake.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from pathlib import Path

FOLDER = Path(".snakemake") / "atop-previous"


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: a copy with the same times
        shutil.copy2(source, target)


class PreviousOutputs:
    """Keep the outputs a run is about to replace; give back those of jobs that failed."""

    def __init__(self, workflow, folder: str | os.PathLike = FOLDER):
        self.workflow = workflow
        self.folder = Path(folder)
        # One entry per job to run: (output path, its kept link, metadata key, its record or None).
        self.jobs: list[list[tuple[Path, Path, str, object]]] = []
        # Every job to run: (its outputs, its logs), to name the failed ones' reasons afterwards.
        self.planned: list[tuple[list[Path], list[Path]]] = []
        self.started = time.time()

    def _active(self) -> bool:
        # The scheduling process only: a cluster job's Snakemake runs the same hooks.
        return not (self.workflow.remote_exec or self.workflow.subprocess_exec)

    def keep(self) -> int:
        """onstart: link the existing outputs of every job about to run; return how many."""
        if not self._active():
            return 0
        shutil.rmtree(self.folder, ignore_errors=True)  # a killed run's leftovers: its outputs were kept or rerun
        persistence = self.workflow.persistence
        self.started = time.time()
        count = 0
        for job_index, job in enumerate(self.workflow.dag.needrun_jobs()):
            self.planned.append(([Path(str(o)) for o in job.output], [Path(str(f)) for f in getattr(job, "log", [])]))
            kept = []
            for output_index, output in enumerate(job.output):
                path = Path(str(output))
                if not path.is_file():
                    continue  # missing (nothing to lose) or a directory output
                link = self.folder / f"{job_index}.{output_index}.{path.name}"
                _link(path, link)
                key = persistence._get_key(output)
                kept.append((path, link, key, copy.deepcopy(persistence.metadata(output))))
                count += 1
            if kept:
                self.jobs.append(kept)
        return count

    def restore(self) -> list[Path]:
        """onerror: give each failed job (none of its outputs left) its previous outputs back."""
        if not self._active():
            return []
        persistence = self.workflow.persistence
        restored = []
        for kept in self.jobs:
            if any(path.exists() for path, *_ in kept):
                continue  # finished anew, never started, or kept by --keep-incomplete
            for path, link, key, record in kept:
                _link(link, path)
                if record is not None:
                    persistence._write_record(key, record)
                restored.append(path)
        persistence._clear_cache()
        self.discard()
        return restored

    def failures(self) -> list[str]:
        """onerror: one line per job that ran and failed (outputs missing, log written by this run):
        the reason its log gives (the stage's one-line error, else the log's last line) and the log."""
        lines = []
        for outputs, logs in self.planned:
            if all(path.exists() for path in outputs):
                continue
            for log in logs:
                if not log.is_file() or log.stat().st_mtime < self.started - 1:
                    continue
                text = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
                reason = next((line for line in reversed(text) if " failed: " in line), text[-1] if text else "")
                reason = reason.split(" ERROR ", 1)[-1]
                lines.append(f"{reason or 'no message'} (log: {log})")
        return lines

    def discard(self) -> None:
        """onsuccess (and after a restore): the kept links are not needed any more."""
        if self._active():
            shutil.rmtree(self.folder, ignore_errors=True)
            self.jobs = []
