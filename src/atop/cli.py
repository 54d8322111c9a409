"""``python -m atop <stage>``: the command each Snakemake rule runs.

Every stage takes its slice of the validated workflow config as one JSON
string (``--spec``), reads its inputs, and writes its outputs atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from . import __version__
from .config import resolve_numbers
from .errors import EXPECTED_ERRORS, InjectedFault

log = logging.getLogger("atop")


def _spec(text: str) -> dict:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--spec is not valid JSON: {error}") from error
    if not isinstance(spec, dict):
        raise argparse.ArgumentTypeError("--spec must be a JSON object")
    return spec


def _setup(spec: dict):
    import torch

    from .provenance import pick_device

    device = pick_device(spec.get("device", "auto"))
    torch.manual_seed(spec.get("seed", 0))
    log.info("atop %s on %s, %d CPU threads", __version__, device, torch.get_num_threads())
    return device


def _fast_path(spec: dict, stage: str, device):
    """The stage's speed settings, with TF32 switched on or off for the whole process."""
    from .fastpath import FastPath

    fast = FastPath.resolve(spec.get("performance"), stage, device)
    fast.apply_backends()
    log.info("%s fast path: %s", stage, fast.record())
    return fast


def cmd_prepare_data(args) -> None:
    from .data import prepare_dataset
    from .io import write_json

    manifest = prepare_dataset(args.spec["data"], args.out_data)
    write_json(args.out_manifest, manifest)
    log.info("prepared %s: %s", args.spec["data"]["dataset"], manifest["sizes"])


def _checkpoint_meta(kind: str, stage: str, spec: dict, device, inputs: dict, **extra) -> dict:
    from .io import sha256_file
    from .provenance import provenance

    return {
        "kind": kind,
        "stage": stage,
        "seed": spec.get("seed", 0),
        "spec": spec,
        "provenance": provenance(device, {name: sha256_file(path) for name, path in inputs.items()}),
        **extra,
    }


def _write_curve(path, history) -> None:
    import pandas as pd

    from .io import atomic_path

    with atomic_path(path) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)


def cmd_train_classifier(args) -> None:
    from .data import load_prepared
    from .io import save_checkpoint
    from .train.classifier import train_classifier

    device = _setup(args.spec)
    data = load_prepared(args.data)
    spec = args.spec["classifier"]
    inputs = {"data": args.data}
    if spec.get("pretrained"):
        # A user-provided RobustBench checkpoint replaces training.
        from .models.classifiers import load_robustbench_classifier

        provided = spec["pretrained"]
        model, model_meta = load_robustbench_classifier(
            provided["path"], provided["sha256"], spec["arch"], data.num_classes, data.info["image_shape"][-1]
        )
        stage, history, inputs["pretrained"] = "provided", [], provided["path"]
    else:
        resume = Path(str(args.out_checkpoint) + ".resume")
        fast = _fast_path(args.spec, "training", device)
        model, model_meta, history = train_classifier(data, spec, args.spec["seed"], device, resume, fast)
        stage = "trained"
    performance = {"performance": fast.record()} if stage == "trained" else {}
    meta = _checkpoint_meta("classifier", stage, args.spec, device, inputs, model=model_meta, **performance)
    save_checkpoint(args.out_checkpoint, model.state_dict(), meta)
    _write_curve(args.out_curve, history)
    if stage == "trained":
        resume.unlink(missing_ok=True)


def cmd_train_adversarial(args) -> None:
    from .data import load_prepared
    from .io import save_checkpoint
    from .train.adversarial import selected_epoch, train_adversarial

    device = _setup(args.spec)
    data = load_prepared(args.data)
    resume = Path(str(args.out_checkpoint) + ".resume")
    fast = _fast_path(args.spec, "training", device)
    model, model_meta, history = train_adversarial(
        data, args.spec["classifier"], args.spec["adversarial_training"], args.spec["seed"], device, resume, fast
    )
    meta = _checkpoint_meta(
        "classifier",
        "adversarially_trained",
        args.spec,
        device,
        {"data": args.data},
        model=model_meta,
        performance=fast.record(),
        selected_epoch=selected_epoch(history),  # best validation robust accuracy (Rice et al. 2020)
    )
    save_checkpoint(args.out_checkpoint, model.state_dict(), meta)
    _write_curve(args.out_curve, history)
    resume.unlink(missing_ok=True)


def cmd_pretrain_purifier(args) -> None:
    from .data import load_prepared
    from .io import save_checkpoint
    from .train.purifier import pretrain_purifier

    device = _setup(args.spec)
    data = load_prepared(args.data)
    resume = Path(str(args.out_checkpoint) + ".resume")
    fast = _fast_path(args.spec, "training", device)
    modules, model_meta, transform_meta, history = pretrain_purifier(
        data, args.spec["purifier"], args.spec["seed"], device, resume, fast
    )
    meta = _checkpoint_meta(
        "purifier",
        "pretrained",
        args.spec,
        device,
        {"data": args.data},
        model=model_meta,
        transform=transform_meta,
        variant=args.spec.get("variant"),
        performance=fast.record(),
    )
    save_checkpoint(args.out_checkpoint, modules.state_dict(), meta)
    _write_curve(args.out_curve, history)
    resume.unlink(missing_ok=True)


def cmd_finetune_purifier(args) -> None:
    from .data import load_prepared
    from .defense import load_classifier
    from .io import CheckpointError, load_checkpoint, require_same_data, save_checkpoint, sha256_file, write_json
    from .train.purifier import finetune_purifier

    device = _setup(args.spec)
    spec = {**args.spec, "finetune": resolve_numbers(args.spec["finetune"])}
    data = load_prepared(args.data)
    data_sha = sha256_file(args.data)
    classifier, classifier_meta = load_classifier(args.classifier)
    state, pre_meta = load_checkpoint(args.purifier, expect_kind="purifier")
    require_same_data(classifier_meta, args.data, data_sha, args.classifier)
    require_same_data(pre_meta, args.data, data_sha, args.purifier)
    if pre_meta["stage"] != "pretrained":
        raise CheckpointError(f"{args.purifier} is a {pre_meta['stage']} purifier, fine-tuning needs a pretrained one")
    resume = Path(str(args.out_checkpoint) + ".resume")
    fast = _fast_path(spec, "training", device)
    modules, history, check = finetune_purifier(
        data, spec, spec["seed"], device, classifier, state, pre_meta["model"], pre_meta["transform"], resume, fast
    )
    inputs = {"data": args.data, "classifier": args.classifier, "pretrained_purifier": args.purifier}
    meta = _checkpoint_meta(
        "purifier",
        "finetuned",
        spec,
        device,
        inputs,
        model=pre_meta["model"],
        transform=pre_meta["transform"],
        collapse_check=check,
        variant=pre_meta.get("variant"),
        performance=fast.record(),
    )
    save_checkpoint(args.out_checkpoint, modules.state_dict(), meta)
    _write_curve(args.out_curve, history)
    write_json(args.out_check, check)
    resume.unlink(missing_ok=True)


def cmd_evaluate(args) -> None:
    from .data import load_prepared
    from .defense import build_defense, fast_defense
    from .evaluate import evaluate_defense
    from .io import load_checkpoint, require_same_data, sha256_file, write_json
    from .provenance import provenance

    device = _setup(args.spec)
    spec = args.spec
    attack_spec = resolve_numbers(spec["attack"])
    data = load_prepared(args.data)
    data_sha = sha256_file(args.data)
    for checkpoint in filter(None, (args.classifier, args.purifier)):
        require_same_data(load_checkpoint(checkpoint)[1], args.data, data_sha, checkpoint)
    defense, built_from = build_defense(args.defense, args.classifier, args.purifier, seed=spec["seed"])
    fast = _fast_path(spec, "evaluation", device)
    defense = fast_defense(defense.to(device), fast, device)
    result = evaluate_defense(
        defense,
        args.defense,
        args.attack,
        attack_spec,
        data,
        spec["evaluation"],
        spec["seed"],
        finetune_attack=spec.get("finetune_attack"),
    )
    result["performance"] = fast.record()
    result["precision"] = fast.precision
    result |= built_from  # kind, variant, purifier arch and RT: the report reads them, not just the name
    if "sweep" in spec:
        result["sweep"] = spec["sweep"]
    inputs = {"data": args.data, "classifier": args.classifier}
    if args.purifier:
        inputs["purifier"] = args.purifier
    result["experiment"] = spec["experiment"]
    result["provenance"] = provenance(device, {name: sha256_file(path) for name, path in inputs.items()})
    write_json(args.out, result)


def cmd_checks(args) -> None:
    from .checks import cross_attack_checks, sweep_checks
    from .io import read_json, write_json

    results = [read_json(path) for path in args.results]
    points = [read_json(path) for path in args.sweeps]
    per_result = [
        {"defense": r["defense"], "attack": r["attack"], "check": name, **check}
        for r in results + points
        for name, check in r.get("checks", {}).items()
    ]
    summary = {
        "per_result": per_result,
        "cross_attack": cross_attack_checks(results),
        "sweeps": sweep_checks(points),
    }
    failed = [c for group in summary.values() for c in group if not c["passed"]]
    summary["passed"] = not failed
    summary["failed"] = failed
    write_json(args.out, summary)
    for check in failed:
        log.warning("OBFUSCATION CHECK FAILED: %s: %s", check.get("defense"), check["detail"])
    log.info(
        "%d checks, %d failed", sum(len(g) for g in summary.values() if isinstance(g, list)) - len(failed), len(failed)
    )


def _diagnostic_defense(spec: dict, data_path, defense_name: str, classifier, purifier, device):
    """The defense as the evaluation builds it (no fast path: diagnostics measure fp32 gradients)."""
    from .defense import build_defense
    from .io import load_checkpoint, require_same_data, sha256_file

    data_sha = sha256_file(data_path)
    for checkpoint in filter(None, (classifier, purifier)):
        require_same_data(load_checkpoint(checkpoint)[1], data_path, data_sha, checkpoint)
    defense, built_from = build_defense(defense_name, classifier, purifier, seed=spec["seed"])
    return defense.to(device), built_from


def _diagnostic_attack(spec: dict, defense, num_classes: int):
    """The evaluation attack diagnostics.attack names, at its budget (EOT 1 on a deterministic defense)."""
    from .attacks import build_attack

    params = {k: v for k, v in resolve_numbers(spec["attack"]).items() if k not in ("method", "defenses")}
    if "eot" in params and not defense.randomized:
        params["eot"] = 1
    draws = spec["evaluation"]["draws"] if defense.randomized else 1
    context = {"num_classes": num_classes, "seed": spec["seed"], "draws": draws}
    return build_attack(spec["attack"]["method"], defense, params, **context), draws


def _test_subset(data, spec: dict, n_images: int):
    """The first ``n_images`` of the evaluation's fixed test subset (the same seeded order)."""
    from .evaluate import sample_indices

    n = min(n_images, spec["evaluation"]["n_samples"])
    idx = sample_indices(len(data.labels("test")), n, spec["evaluation"]["sample_seed"])
    return data.images("test")[idx], data.labels("test")[idx], idx


# Draws of the defense batched into one gradient pass (GPUs want large batches).
GRADIENT_REPLICAS = {"cuda": 64, "cpu": 16}


def cmd_gradient_concentration(args) -> None:
    from .data import load_prepared
    from .diagnostics.concentration import gradient_concentration
    from .diagnostics.settings import check_concentration
    from .io import write_json

    device = _setup(args.spec)
    settings = args.spec["diagnostics"]["gradient_concentration"]
    check_concentration(settings["draws"], settings["reference_draws"], settings["cosine"])
    data = load_prepared(args.data)
    defense, built_from = _diagnostic_defense(
        args.spec, args.data, args.defense, args.classifier, args.purifier, device
    )
    x, y, idx = _test_subset(data, args.spec, settings["n_images"])
    defense.reseed(args.spec["seed"])
    began = time.perf_counter()
    # All draws of a deterministic defense coincide: two of each show it (R = 1, k = 1) at no cost.
    draws, reference = (settings["draws"], settings["reference_draws"]) if defense.randomized else (2, 2)
    result = gradient_concentration(
        defense, x, y, draws, reference, settings["cosine"], chunk=GRADIENT_REPLICAS.get(device.type, 16)
    )
    result |= {
        "defense": args.defense,
        "randomized": defense.randomized,
        "sample_indices": idx.tolist(),
        "seconds": time.perf_counter() - began,
        **built_from,
    }
    write_json(args.out, result)
    log.info(
        "%s: R = %.3f over %d draws; EOT needed for cosine %.2f: %s",
        args.defense,
        result["mean_resultant_length"],
        draws,
        settings["cosine"],
        result["eot_needed"],
    )


def cmd_robustness_measures(args) -> None:
    import torch

    from .data import load_prepared
    from .diagnostics.measures import robustness_measures
    from .diagnostics.settings import check_flatness
    from .io import write_json

    device = _setup(args.spec)
    settings = args.spec["diagnostics"]["measures"]
    check_flatness(settings["flatness_xi"], settings["flatness_draws"])
    data = load_prepared(args.data)
    defense, built_from = _diagnostic_defense(
        args.spec, args.data, args.defense, args.classifier, args.purifier, device
    )
    attack, draws = _diagnostic_attack(args.spec, defense, data.num_classes)
    x_test, y_test, test_idx = _test_subset(data, args.spec, settings["n_images"])
    order = torch.randperm(len(data.labels("train")), generator=torch.Generator().manual_seed(args.spec["seed"]))
    train_idx = order[: settings["n_images"]].sort().values
    networks = {"classifier": defense.classifier}
    if defense.purifier is not None:
        networks["purifier"] = defense.purifier
    began = time.perf_counter()
    result = robustness_measures(
        defense,
        attack,
        (data.images("train")[train_idx], data.labels("train")[train_idx]),
        (x_test, y_test),
        draws,
        args.spec["seed"],
        settings["flatness_xi"],
        settings["flatness_draws"],
        networks,
    )
    result |= {
        "defense": args.defense,
        "randomized": defense.randomized,
        "attack": args.spec["attack_name"],
        "attack_params": args.spec["attack"],
        "train_indices": train_idx.tolist(),
        "test_indices": test_idx.tolist(),
        "seconds": time.perf_counter() - began,
        **built_from,
    }
    write_json(args.out, result)
    log.info(
        "%s: robust accuracy train %.3f test %.3f (gap %.3f); flatness %s",
        args.defense,
        result["train"]["robust_accuracy"],
        result["test"]["robust_accuracy"],
        result["robust_generalization_gap"],
        {part: round(f["flatness"], 4) for part, f in result["flatness"].items()},
    )


def cmd_boundary_distortion(args) -> None:
    from .data import load_prepared
    from .diagnostics.distortion import boundary_distortion
    from .diagnostics.settings import distortion_settings
    from .io import write_json

    device = _setup(args.spec)
    settings = distortion_settings(resolve_numbers(args.spec["diagnostics"]["distortion"]))
    if settings["eps"] is None:
        raise ValueError("diagnostics.distortion.eps is null here: the rule resolves it to finetune.eps")
    data = load_prepared(args.data)
    defense, built_from = _diagnostic_defense(
        args.spec, args.data, args.defense, args.classifier, args.purifier, device
    )
    x, y, idx = _test_subset(data, args.spec, settings["n_images"])
    began = time.perf_counter()
    result = boundary_distortion(
        defense, x, y, settings["eps"], settings["points"], settings["draws"], seed=args.spec["seed"]
    )
    result |= {
        "defense": args.defense,
        "randomized": defense.randomized,
        "sample_indices": idx.tolist(),
        "seconds": time.perf_counter() - began,
        **built_from,
    }
    write_json(args.out, result)
    log.info(
        "%s: decision-boundary distortion %s (%d of %d segments right at both ends, m = %d, %d draws)",
        args.defense,
        "none measurable" if result["distortion"] is None else f"{result['distortion']:.3f}",
        result["distorted"],
        result["eligible"],
        settings["points"],
        result["draws"],
    )


def cmd_diagnostic_pictures(args) -> None:
    import torch

    from .data import load_prepared
    from .diagnostics.pictures import defense_pictures, pictures_figure

    device = _setup(args.spec)
    data = load_prepared(args.data)
    positions = args.spec["diagnostics"]["pictures"]["images"]
    x_all, y_all, _ = _test_subset(data, args.spec, max(positions) + 1)
    chosen = torch.tensor(positions)
    pictures = {}
    for name, classifier, *purifier in args.defense:
        defense, _ = _diagnostic_defense(
            args.spec, args.data, name, classifier, purifier[0] if purifier else None, device
        )
        attack, _ = _diagnostic_attack(args.spec, defense, data.num_classes)
        pictures[name] = defense_pictures(defense, attack, x_all[chosen], y_all[chosen], args.spec["seed"])
    pictures_figure(pictures, args.out)
    log.info("pictures of %d images through %d defenses: %s", len(positions), len(pictures), args.out)


def cmd_diagnostics_summary(args) -> None:
    from .diagnostics.summary import write_summary
    from .io import read_json

    counts = write_summary(
        [read_json(p) for p in args.measures],
        [read_json(p) for p in args.concentration],
        [read_json(p) for p in args.results],
        args.out_dir,
        [read_json(p) for p in args.distortion],
    )
    log.info("diagnostics of %(defenses)d defenses; %(checks)d EOT-sufficiency checks, %(failed)d failed", counts)


def cmd_report(args) -> None:
    from .report import write_report

    metrics = write_report(
        args.results,
        args.out_dir,
        args.experiment,
        args.dataset,
        curve_paths=args.curves,
        reference_paths=args.reference,
        expected=args.expected,
        purifier=args.purifier,
        transform=args.transform,
        checks_paths=args.checks,
        overfitting=args.overfitting,
        verdicts=args.verdicts,
    )
    log.info("report written to %s (%d results, %d missing)", args.out_dir, metrics["results"], metrics["missing"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m atop", description=__doc__)
    parser.add_argument("--version", action="version", version=f"atop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def stage(name, func, help_text):
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(func=func)
        return p

    p = stage("prepare-data", cmd_prepare_data, "build the split dataset file and its manifest")
    p.add_argument("--spec", type=_spec, required=True)
    p.add_argument("--out-data", type=Path, required=True)
    p.add_argument("--out-manifest", type=Path, required=True)

    for name, func, help_text in [
        ("train-classifier", cmd_train_classifier, "train the classifier normally (or load a provided one)"),
        ("train-adversarial", cmd_train_adversarial, "PGD adversarial training of the classifier (the AT baseline)"),
        ("pretrain-purifier", cmd_pretrain_purifier, "pre-train the purifier on RT-transformed clean images"),
    ]:
        p = stage(name, func, help_text)
        p.add_argument("--spec", type=_spec, required=True)
        p.add_argument("--data", type=Path, required=True)
        p.add_argument("--out-checkpoint", type=Path, required=True)
        p.add_argument("--out-curve", type=Path, required=True)

    p = stage("finetune-purifier", cmd_finetune_purifier, "AToP: fine-tune the purifier with an adversarial loss")
    p.add_argument("--spec", type=_spec, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--classifier", type=Path, required=True)
    p.add_argument("--purifier", type=Path, required=True, help="the pre-trained purifier checkpoint")
    p.add_argument("--out-checkpoint", type=Path, required=True)
    p.add_argument("--out-curve", type=Path, required=True)
    p.add_argument("--out-check", type=Path, required=True, help="JSON of the clean-accuracy collapse check")

    p = stage("evaluate", cmd_evaluate, "run one attack on one defense")
    p.add_argument("--spec", type=_spec, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--defense", required=True)
    p.add_argument("--attack", required=True, help="the attack's name in the config")
    p.add_argument("--classifier", type=Path, required=True)
    p.add_argument("--purifier", type=Path, help="purifier checkpoint, for defenses that have one")
    p.add_argument("--out", type=Path, required=True)

    p = stage("checks", cmd_checks, "cross-attack and sweep gradient-obfuscation checks")
    p.add_argument("--results", type=Path, nargs="+", required=True)
    p.add_argument("--sweeps", type=Path, nargs="*", default=[])
    p.add_argument("--out", type=Path, required=True)

    p = stage("gradient-concentration", cmd_gradient_concentration, "GradDiv gradient concentration and EOT need")
    p.add_argument("--spec", type=_spec, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--defense", required=True)
    p.add_argument("--classifier", type=Path, required=True)
    p.add_argument("--purifier", type=Path, help="purifier checkpoint, for defenses that have one")
    p.add_argument("--out", type=Path, required=True)

    p = stage("robustness-measures", cmd_robustness_measures, "robust-generalization measures of one defense")
    p.add_argument("--spec", type=_spec, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--defense", required=True)
    p.add_argument("--classifier", type=Path, required=True)
    p.add_argument("--purifier", type=Path, help="purifier checkpoint, for defenses that have one")
    p.add_argument("--out", type=Path, required=True)

    p = stage("boundary-distortion", cmd_boundary_distortion, "decision-boundary distortion of one defense")
    p.add_argument("--spec", type=_spec, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--defense", required=True)
    p.add_argument("--classifier", type=Path, required=True)
    p.add_argument("--purifier", type=Path, help="purifier checkpoint, for defenses that have one")
    p.add_argument("--out", type=Path, required=True)

    p = stage("diagnostic-pictures", cmd_diagnostic_pictures, "fixed test images through every defense, as PNG")
    p.add_argument("--spec", type=_spec, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument(
        "--defense",
        nargs="+",
        action="append",
        required=True,
        metavar="NAME CLASSIFIER [PURIFIER]",
        help="a defense and its checkpoints; repeat for each defense",
    )
    p.add_argument("--out", type=Path, required=True)

    p = stage("diagnostics-summary", cmd_diagnostics_summary, "diagnostics table, figures and EOT-sufficiency checks")
    p.add_argument("--measures", type=Path, nargs="+", required=True)
    p.add_argument("--concentration", type=Path, nargs="+", required=True)
    p.add_argument("--results", type=Path, nargs="*", default=[], help="evaluation results the EOT checks judge")
    p.add_argument(
        "--distortion",
        type=Path,
        nargs="*",
        default=[],
        help="decision-boundary distortion JSONs (fine-tuned defenses)",
    )
    p.add_argument("--out-dir", type=Path, required=True)

    p = stage("report", cmd_report, "tables, figures, metrics and summary from whatever results exist")
    p.add_argument("--experiment", required=True)
    p.add_argument(
        "--dataset", required=True, help="the run's dataset; paper numbers of other datasets are not compared"
    )
    p.add_argument("--results", type=Path, nargs="+", required=True, help="result JSONs, or folders searched for them")
    p.add_argument("--curves", type=Path, nargs="*", default=[], help="training-curve CSVs, or folders of them")
    p.add_argument(
        "--reference", type=Path, nargs="*", default=[], help="CSVs of the paper's numbers (config/reference)"
    )
    p.add_argument("--expected", type=Path, nargs="*", default=[], help="result files the experiment should have")
    p.add_argument(
        "--checks",
        type=Path,
        nargs="*",
        default=[],
        help="obfuscation_checks/seed<N>.json (cross-attack and sweep checks) and diagnostics/seed<N>/eot_checks.json (EOT sufficiency), of every seed",
    )
    p.add_argument(
        "--overfitting",
        type=_spec,
        default=None,
        help="JSON of the overfitting detectors' thresholds (config diagnostics.overfitting); default: the schema's",
    )
    p.add_argument(
        "--verdicts",
        type=_spec,
        default=None,
        help="JSON of config verdicts (decide_on, equivalence_margin); default: the schema's",
    )
    p.add_argument("--purifier", help="purifier architecture behind bare ap / atop defense names")
    p.add_argument("--transform", help="random transform (rt1|rt2|rt3) behind bare ap / atop defense names")
    p.add_argument("--out-dir", type=Path, required=True)
    return parser


# Fault injection for the fault suite (tests/test_reliability.py): commands named here (comma-separated,
# or *) fail after doing their work, the worst moment: their new outputs are written, then the job fails.
FAIL_COMMANDS = "ATOP_FAIL_COMMANDS"


def _injected_fault(command: str) -> None:
    named = {name.strip() for name in os.environ.get(FAIL_COMMANDS, "").split(",")}
    if command in named or "*" in named:
        raise InjectedFault(f"{FAIL_COMMANDS} names {command!r}: failing on purpose, after the work was done")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    began = time.perf_counter()
    try:
        args.func(args)
        _injected_fault(args.command)
    except EXPECTED_ERRORS as error:
        log.error("%s failed: %s", args.command, error)
        return 1
    log.info("%s done in %.1f s", args.command, time.perf_counter() - began)
    return 0
