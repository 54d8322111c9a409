"""The paper presets run end to end, shrunk in size only (tests/preset_shrink.py), on synthetic archives
in the exact upstream layouts: every rule, purifier, transform, attack, sweep, check and the report."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from preset_shrink import SHRINK, covering_defenses, path_features, shrink_preset

import atop.data as data_module
from atop.config import attack_defenses, check_config, purifier_variant
from atop.defense_kinds import split_defense

from conftest import REPO, run_snakemake, write_config

PRESETS = sorted((REPO / "config" / "paper").glob("*.yaml"))
# Each preset runs a covering subset of its defenses (every path once); ATOP_TEST_FULL_PRESETS=1 runs
# CIFAR-10 with every defense and the other presets with every attack and sweep (about 30 min more
# on 2 cores: beyond CI's budget).
FULL_RUN = os.environ.get("ATOP_TEST_FULL_PRESETS") == "1"
FULL = {"cifar10"} if FULL_RUN else set()
# CIFAR-10's run takes every attack method, sweep and check the other presets name (asserted by
# test_cifar10_covers_the_other_presets_attacks); the others run their own data, models, purifier
# variants and diagnostics under these two attacks (the obfuscation checks' FGSM and the headline
# EOT-PGD, which the diagnostics attack), so their attack code is not run three times over.
REFERENCE = "cifar10"
DATASET_ATTACKS = ("fgsm", "eot_pgd")


def _attacks(preset: Path) -> tuple[str, ...] | None:
    return None if FULL_RUN or preset.stem == REFERENCE else DATASET_ATTACKS


def _preset(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --------------------------------------------------------------------------- synthetic upstream archives


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _class_images(rng, labels: np.ndarray, num_classes: int, height: int, width: int) -> np.ndarray:
    """uint8 (N, H, W, 3): one colour per class plus noise, so two epochs learn something."""
    palette = np.random.default_rng(1).integers(30, 226, size=(num_classes, 3))
    noise = rng.integers(-25, 26, size=(len(labels), height, width, 3))
    return np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)


def _cifar_batch(rng, n: int, num_classes: int, label_key: str) -> dict:
    # Upstream: a latin1-pickled dict, 'data' a (N, 3072) uint8 array in channel-major order.
    labels = rng.integers(0, num_classes, size=n)
    images = _class_images(rng, labels, num_classes, 32, 32).transpose(0, 3, 1, 2).reshape(n, 3072)
    return {"batch_label": "synthetic", "data": images, label_key: labels.tolist(), "filenames": [""] * n}


def build_cifar10(path: Path, per_batch: int = 8, test: int = 16) -> None:
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = _cifar_batch(rng, test if name == "test_batch" else per_batch, 10, "labels")
            _add(tar, f"cifar-10-batches-py/{name}", pickle.dumps(batch, protocol=2))
        meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}
        _add(tar, "cifar-10-batches-py/batches.meta", pickle.dumps(meta, protocol=2))


def build_cifar100(path: Path, train: int = 40, test: int = 16) -> None:
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for name, n in (("train", train), ("test", test)):
            batch = _cifar_batch(rng, n, 100, "fine_labels") | {"coarse_labels": [0] * n}
            _add(tar, f"cifar-100-python/{name}", pickle.dumps(batch, protocol=2))
        meta = {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
        _add(tar, "cifar-100-python/meta", pickle.dumps(meta, protocol=2))


IMAGENETTE_WNIDS = (  # the ten upstream classes
    "n01440764",
    "n02102040",
    "n02979186",
    "n03000684",
    "n03028079",
    "n03394916",
    "n03417042",
    "n03425413",
    "n03445777",
    "n03888257",
)


def build_imagenette(path: Path, train_per_class: int = 4, val_per_class: int = 2) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split, per_class in (("train", train_per_class), ("val", val_per_class)):
            for label, wnid in enumerate(IMAGENETTE_WNIDS):
                for i in range(per_class):
                    # Upstream: 320 px shorter side; here small, but above the shrunk 32 px, both orientations.
                    height, width = (40, 56) if i % 2 else (56, 44)
                    pixels = _class_images(rng, np.array([label]), len(IMAGENETTE_WNIDS), height, width)[0]
                    buffer = io.BytesIO()
                    Image.fromarray(pixels).save(buffer, format="JPEG")
                    _add(tar, f"imagenette2-320/{split}/{wnid}/{wnid}_{i}.JPEG", buffer.getvalue())
        _add(tar, "imagenette2-320/noisy_imagenette.csv", b"path,noisy_labels_0\n")


ARCHIVE_BUILDERS = {"cifar10": build_cifar10, "cifar100": build_cifar100, "imagenette": build_imagenette}


def install_archive(workflow_dir: Path, config: dict) -> Path:
    """Build the dataset's archive where the workflow expects it (data.raw_dir), and point the
    workflow copy's published checksums at it: the loader verifies it as it would the real one."""
    dataset = config["data"]["dataset"]
    archive = data_module.ARCHIVES[dataset]
    target = workflow_dir / config["data"].get("raw_dir", "data/raw") / archive.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    ARCHIVE_BUILDERS[dataset](target)
    payload = target.read_bytes()
    source = workflow_dir / "src" / "atop" / "data.py"
    text = source.read_text()
    for name in ("md5", "sha256"):
        published = getattr(archive, name)
        if published:
            assert text.count(f'"{published}"') == 1, f"{name} of {archive.filename} not found once in atop/data.py"
            text = text.replace(f'"{published}"', f'"{getattr(hashlib, name)(payload).hexdigest()}"')
    source.write_text(text)
    return target


# --------------------------------------------------------------------------- the shrinking (fast)


def _sizes(node, path=()):
    """(key path, value) of every int under a key the shrink table names."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SHRINK and isinstance(value, int) and not isinstance(value, bool):
                yield (*path, key), value
            yield from _sizes(value, (*path, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _sizes(item, (*path, i))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_shrinking_keeps_every_path_and_is_a_valid_config(preset: Path, schema_validator):
    full = _preset(preset)
    small = shrink_preset(full)
    schema_validator.validate(small)
    check_config(small)
    assert small["data"]["dataset"] == full["data"]["dataset"]
    assert small["evaluation"]["defenses"] == full["evaluation"]["defenses"]
    assert {n: a["method"] for n, a in small["evaluation"]["attacks"].items()} == {
        n: a["method"] for n, a in full["evaluation"]["attacks"].items()
    }
    for name, purifier in full.get("purifiers", {}).items():
        shrunk = small["purifiers"][name]
        assert (shrunk["arch"], shrunk["transform"], shrunk["transform_params"]) == (
            purifier["arch"],
            purifier["transform"],
            purifier.get("transform_params", {}),
        )
    for name, sweep in full["evaluation"].get("sweeps", {}).items():
        shrunk = small["evaluation"]["sweeps"][name]
        assert (shrunk["attack"], shrunk["param"], len(shrunk["values"])) == (sweep["attack"], sweep["param"], 2)
    if full["classifier"]["arch"].startswith("resnet"):
        assert small["classifier"]["arch"] == full["classifier"]["arch"]
        assert small["classifier"]["arch_params"]["stem"] == full["classifier"]["arch_params"]["stem"]
    if full["classifier"]["arch"].startswith("wrn"):  # the same WideResNet code path, WRN-10-1
        assert small["classifier"] == {**small["classifier"], "arch": "wide_resnet"}
    for path, value in _sizes(small):
        # sizes stop at 48 (a purifier's 256 px: above the data's 32, so the resize still runs)
        assert value <= (48 if path[-1] == "image_size" else 32), (path, value)
    budgets = [a.get(k) for a in small["evaluation"]["attacks"].values() for k in ("steps", "eot", "n_queries")]
    assert max(b for b in budgets if b is not None) <= 8
    assert small["experiment"] == f"{full['experiment']}-smoke"


def test_unknown_keys_stay_and_defaults_shrink(schema_validator):
    full = _preset(REPO / "config" / "paper" / "cifar10.yaml")
    full["evaluation"]["attacks"]["square"] = {"method": "square", "eps": "8/255"}  # n_queries left at 5000
    full["evaluation"]["attacks"]["fgsm"]["future_knob"] = 1000
    full["purifiers"]["gan-rt2"]["image_size"] = 256
    small = shrink_preset(full)
    assert small["evaluation"]["attacks"]["square"]["n_queries"] == SHRINK["n_queries"](5000) == 8
    assert small["evaluation"]["attacks"]["fgsm"]["future_knob"] == 1000
    aa_standard = small["evaluation"]["attacks"]["aa_standard"]  # its 100 steps and 5000 queries are defaults
    assert (aa_standard["steps"], aa_standard["n_queries"]) == (2, 8)
    assert small["purifiers"]["gan-rt2"]["arch_params"]["discriminator_channels"] == 4  # a default, shrunk
    # a purifier resized away from the data's size stays resized (the path), just smaller
    assert (small["purifiers"]["gan-rt2"]["image_size"], small["data"]["image_size"]) == (48, 32)
    diagnostics = small["diagnostics"]  # the preset leaves them at the schema's defaults (32 images, 64 draws)
    assert "diagnostics" not in full
    assert (diagnostics["gradient_concentration"]["reference_draws"], diagnostics["measures"]["n_images"]) == (4, 4)
    sweeps = small["evaluation"]["sweeps"]
    assert (sweeps["steps"]["values"], sweeps["eot"]["values"], sweeps["eps"]["values"]) == (
        [1, 2],
        [1, 2],
        [0, "128/255"],
    )


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_covering_subset_takes_every_path(preset: Path, schema_validator):
    small = shrink_preset(_preset(preset))
    chosen = covering_defenses(small)
    every = set().union(*(path_features(small, d) for d in small["evaluation"]["defenses"]))
    assert set().union(*(path_features(small, d) for d in chosen)) == every
    assert {"standard", "at", "ap", "atop"} <= {f[1] for f in every if f[0] == "kind"}
    covered = shrink_preset(_preset(preset), cover=True)
    assert covered["evaluation"]["defenses"] == chosen
    schema_validator.validate(covered)
    check_config(covered)
    for name in covered["evaluation"]["attacks"]:
        assert attack_defenses(covered, name), f"attack {name} lost every defense"


def _methods_and_sweeps(config: dict) -> set[tuple]:
    evaluation = config["evaluation"]
    attacks = evaluation["attacks"]
    named = {("method", attack["method"], attack.get("norm")) for attack in attacks.values()}
    sweeps = {("sweep", s["param"], attacks[s["attack"]]["method"]) for s in evaluation.get("sweeps", {}).values()}
    return named | sweeps


def test_cifar10_covers_the_other_presets_attacks(schema_validator):
    """What lets the other presets run two attacks: CIFAR-10's covered run takes every attack method (and
    norm), sweep and protocol they name; their own runs keep every purifier variant and defense kind."""
    reference = shrink_preset(_preset(REPO / "config" / "paper" / f"{REFERENCE}.yaml"), cover=True)
    for preset in PRESETS:
        full = _preset(preset)
        assert _methods_and_sweeps(full) <= _methods_and_sweeps(reference), preset.stem
        if preset.stem == REFERENCE:
            continue
        small = shrink_preset(full, cover=True, attacks=DATASET_ATTACKS)
        schema_validator.validate(small)
        check_config(small)
        assert set(small["evaluation"]["attacks"]) == set(DATASET_ATTACKS) and "sweeps" not in small["evaluation"]
        kept = {purifier_variant(small, d) for d in small["evaluation"]["defenses"]} - {None}
        assert kept == set(full.get("purifiers", {})), f"{preset.stem}: a purifier variant is not run"
        kinds = {split_defense(d)[0] for d in small["evaluation"]["defenses"]}
        assert kinds == {"standard", "at", "ap", "atop"}, preset.stem


def test_keeping_an_attack_the_preset_lacks_is_named():
    with pytest.raises(ValueError, match=r"paper-cifar100-smoke has no attacks \['nope'\]"):
        shrink_preset(_preset(REPO / "config" / "paper" / "cifar100.yaml"), cover=True, attacks=("fgsm", "nope"))


@pytest.fixture(scope="module")
def schema_validator():
    import jsonschema

    return jsonschema.Draft202012Validator(yaml.safe_load((REPO / "config" / "schema.yaml").read_text()))


# --------------------------------------------------------------------------- the runs (slow)


def expected_results(config: dict) -> dict[str, tuple[str, str]]:
    """results/<experiment>/... path of every evaluation and sweep point -> (defense, attack name)."""
    evaluation = config["evaluation"]
    expected = {
        f"eval/seed{seed}/{defense}/{attack}.json": (defense, attack)
        for seed in config["seeds"]
        for attack in evaluation["attacks"]
        for defense in attack_defenses(config, attack)
    }
    for seed in config["seeds"]:
        for name, sweep in evaluation.get("sweeps", {}).items():
            for defense in sweep.get("defenses", evaluation["defenses"]):
                for point in range(len(sweep["values"])):
                    expected[f"sweeps/seed{seed}/{name}/{defense}/{point}.json"] = (defense, sweep["attack"])
    return expected


def check_run(results: Path, config: dict) -> None:
    """Every expected result of ``config``'s run in ``results`` (results/<experiment>) is there, in range,
    from the purifier and transform the config names; the checks and the report were written."""
    manifest = json.loads((results / "data" / "manifest.json").read_text())
    assert manifest["dataset"] == config["data"]["dataset"] and manifest["test_drawn_from"] == "upstream test split"
    assert manifest["sizes"]["test"] == config["data"]["test_size"]

    expected = expected_results(config)
    attacks = config["evaluation"]["attacks"]
    for relative, (defense, attack) in expected.items():
        result = json.loads((results / relative).read_text())
        assert (result["defense"], result["method"]) == (defense, attacks[attack]["method"]), relative
        clean, robust = result["clean"]["accuracy"], result["robust"]["accuracy"]
        assert 0 <= robust <= 1 and 0 <= clean <= 1, relative
        assert result["checks"]["robust_not_above_clean"]["passed"], (relative, result["checks"])
        assert result["checks"]["input_gradients"]["finite"], relative
        assert result["n"] == min(config["evaluation"]["n_samples"], config["data"]["test_size"])
        variant = purifier_variant(config, defense)
        if variant is not None:  # the purifier and transform the preset names really ran
            purifier = config["purifiers"][variant]
            assert (result["purifier"], result["transform"]) == (purifier["arch"], purifier["transform"]), relative

    checks = [json.loads((results / "obfuscation_checks" / f"seed{seed}.json").read_text()) for seed in config["seeds"]]
    assert sum(len(c["per_result"]) for c in checks) >= len(expected)
    report = results / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["results"] == len(expected)
    assert set(metrics["defenses"]) == set(config["evaluation"]["defenses"])
    assert (report / "robustness.csv").stat().st_size > 0
    summary = (report / "summary.md").read_text()
    listed = re.findall(r"^- (\S+) / (\S+) \(no result\)$", summary, flags=re.MULTILINE)
    assert "(expected, not found)" not in summary
    assert len(listed) == metrics["missing"]
    assert not [cell for cell in listed if cell[0] in attack_defenses(config, cell[1])], "a selected result is missing"
    assert not listed, f"cells no attack selects are listed as missing: {listed}"
    assert "Nothing: every expected result is here" in summary


@pytest.mark.workflow
@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_shrunk_preset_runs_end_to_end(workflow_dir: Path, preset: Path):
    config = shrink_preset(_preset(preset), cover=preset.stem not in FULL, attacks=_attacks(preset))
    install_archive(workflow_dir, config)
    configfile = write_config(workflow_dir, config, "smoke.yaml")
    run = run_snakemake(workflow_dir, "--cores", "2", "all", "--configfile", str(configfile), timeout=1800)
    results = workflow_dir / "results" / config["experiment"]
    if run.returncode != 0:
        failed = re.findall(r"Error in rule \w+:.*?log: (\S+)", run.stderr, flags=re.DOTALL)
        logs = "".join(f"\n--- {log}\n{(workflow_dir / log).read_text()[-3000:]}" for log in failed[:3])
        pytest.fail(f"{preset.name} shrunk failed:\n{run.stderr[-3000:]}\n{logs}")
    check_run(results, config)
