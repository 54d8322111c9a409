"""Synthetic evaluation results, shaped like src/atop/evaluate.py writes them."""

from __future__ import annotations

import json
from pathlib import Path

from atop.metrics import wilson_interval

PAPER_EPS = 8 / 255


def nested_fractions(rate: float, n: int) -> list[float]:
    """Per-image fractions of draws right with mean ``rate``: the first images right, the rest wrong.

    Every result ranks the images alike (easy images first), so a higher accuracy is right on a
    superset of images, as for defenses that differ in strength more than in kind; one image
    carries the remainder so the mean is ``rate`` exactly.
    """
    right = int(rate * n + 1e-9)
    return ([1.0] * right + [rate * n - right] + [0.0] * n)[:n]


def make_result(defense: str, attack: str, robust: float, clean: float = 0.9, n: int = 512, **extra) -> dict:
    """One result JSON; accuracies are fractions, intervals are Wilson like the evaluation's."""
    method = extra.pop("method", attack)
    per_sample = {
        "clean_correct_fraction": nested_fractions(clean, n),
        "robust_correct_fraction": nested_fractions(robust, n),
    }
    return {
        "defense": defense,
        "attack": attack,
        "method": method,
        "norm": extra.pop("norm", "Linf"),
        "eps": extra.pop("eps", PAPER_EPS),
        "steps": extra.pop("steps", 10),
        "eot": extra.pop("eot", 1),
        "n": n,
        "draws": 4,
        "clean": {
            "accuracy": clean,
            "strict_accuracy": clean,
            "ci95": list(wilson_interval(clean * n, n)),
            "n": n,
            "draws": 4,
        },
        "robust": {
            "accuracy": robust,
            "strict_accuracy": robust,
            "ci95": list(wilson_interval(robust * n, n)),
            "n": n,
            "draws": 4,
        },
        "per_sample": per_sample,
        "sample_indices": list(range(n)),
        # as evaluate.py records them: a result without checks is in doubt in the report
        "checks": extra.pop("checks", {"within_budget": {"passed": True, "detail": "synthetic"}}),
        "wall_seconds": 1.0,
        "images_per_second": 100.0,
        **extra,
    }


def write_results(folder: Path, results: list[dict]) -> list[Path]:
    paths = []
    for result in results:
        sweep = result.get("sweep")
        if sweep:
            path = folder / "sweeps" / sweep["name"] / result["defense"] / f"{sweep['point']}.json"
        else:
            path = folder / "eval" / result["defense"] / f"{result['attack']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))
        paths.append(path)
    return paths


def paper_scale_results(atop_gain: float = 0.13) -> list[dict]:
    """AT, AP and AToP (GAN x RT1-3, AE x RT2) under seen, unseen and classifier-only attacks.

    ``atop_gain`` is how much fine-tuning adds over AP: the claims judged from it follow its sign and size.
    """
    results = []
    base = {"standard": 0.0, "at": 0.55, "ap-gan-rt1": 0.30, "ap-gan-rt2": 0.60, "ap-gan-rt3": 0.50, "ap-ae-rt2": 0.45}
    for defense, robust in list(base.items()):
        if defense.startswith("ap-"):
            base["atop" + defense[2:]] = robust + atop_gain
    clean = {"standard": 0.95, "at": 0.84}
    for defense, robust in base.items():
        c = clean.get(defense, 0.90)
        unseen = 0.30 if defense == "at" else robust
        results += [
            make_result(defense, "pgd", robust + 0.05, c, method="pgd_linf", seen=True),
            make_result(defense, "eot_pgd", robust, c, method="eot_pgd", eot=20, steps=200, seen=True),
            make_result(defense, "pgd_l2", min(unseen + 0.1, c), c, method="pgd_l2", norm="L2", eps=0.5, seen=False),
            make_result(defense, "aa_rand", unseen, c, method="aa_rand", seen=False),
            make_result(
                defense,
                "bpda_eot",
                min(robust + 0.2, c),
                c,
                method="bpda_eot",
                gradient="bpda_identity",
                upper_bound=True,
                seen=False,
            ),
        ]
    for point, eps in enumerate([0.0, 4 / 255, 8 / 255, 16 / 255]):
        for defense in ("standard", "atop-gan-rt2"):
            robust = 0.95 if eps == 0 else max(0.0, base[defense] + 0.3 - 30 * eps)
            results.append(
                make_result(
                    defense,
                    f"pgd@eps={eps:.4f}",
                    robust,
                    method="pgd_linf",
                    eps=eps,
                    n=256,
                    sweep={"name": "eps", "param": "eps", "value": eps, "point": point, "base_attack": "pgd"},
                )
            )
    return results


def simulated_result(
    defense: str, attack: str, logit: float, difficulty, draws: int, seed: int, clean_logit: float = 3.0, **extra
) -> dict:
    """A randomized defense scored the way evaluate.py scores it: per image, ``draws`` independent passes.

    Image i is right on a draw with probability sigmoid(logit + difficulty[i]): results that share
    ``difficulty`` find the same images hard, so two defenses are correlated image by image as real ones are.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    difficulty = np.asarray(difficulty, dtype=float)
    n = difficulty.size

    def scored(shift: float) -> tuple[list[float], dict]:
        correct = rng.random((draws, n)) < 1 / (1 + np.exp(-(shift + difficulty)))
        mean = float(correct.mean())
        summary = {
            "accuracy": mean,
            "strict_accuracy": float(correct.all(axis=0).mean()),
            "ci95": list(wilson_interval(mean * n, n)),
            "n": n,
            "draws": draws,
        }
        return correct.mean(axis=0).tolist(), summary

    clean_fractions, clean = scored(clean_logit)
    robust_fractions, robust = scored(logit)
    result = make_result(defense, attack, robust["accuracy"], clean["accuracy"], n=n, **extra)
    result.update(
        draws=draws,
        clean=clean,
        robust=robust,
        per_sample={"clean_correct_fraction": clean_fractions, "robust_correct_fraction": robust_fractions},
    )
    return result


def digits_like_results(atop_shift: float = 0.1, n: int = 128, seed: int = 0) -> list[dict]:
    """The digits default's shape: standard, AP and AToP (4 draws) on 128 images under FGSM, PGD and EOT-PGD.

    AToP's per-image log-odds of surviving exceed AP's by ``atop_shift``; 0.1 gives draw-mean robust
    accuracies a couple of points apart, as a real digits run does.
    """
    import numpy as np

    difficulty = np.random.default_rng(seed).normal(0.0, 3.0, n)
    attacks = {"fgsm": (1.0, "fgsm", 1), "pgd": (0.5, "pgd_linf", 1), "eot_pgd": (0.3, "eot_pgd", 8)}
    results = []
    for k, (attack, (strength, method, eot)) in enumerate(attacks.items()):
        for defense, logit, draws in (("standard", -6.0, 1), ("ap", strength, 4), ("atop", strength + atop_shift, 4)):
            results.append(
                simulated_result(
                    defense, attack, logit, difficulty, draws, seed + 10 * k + len(results), method=method, eot=eot
                )
            )
    return results
