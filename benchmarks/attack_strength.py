"""Attack strength on a randomized defense: each attack next to EOT-PGD at the same budget.

On the default digits defense (RT2 + gan_unet purifier + small_cnn, briefly
trained: see fixtures.py), every attack is run through ``evaluate_defense``
(the evaluation's multi-draw scoring) on the same fixed test images. An attack
that comes out clearly above EOT-PGD at its budget is flattering the
randomized defense (one-draw success tests, skipped images, no EOT).

    python benchmarks/attack_strength.py [--n 64] [--draws 8] [--eot 4] [--only cw_l2 pgd_l2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fixtures import add_fixture_args, digits_defense

LINF, L2 = 0.1, 1.0
# name -> (attack spec, the EOT-PGD reference at the same budget)
SETTINGS = {
    "eot_pgd_linf": {"method": "eot_pgd", "eps": LINF, "alpha": LINF / 4, "steps": 10, "eot": "EOT"},
    "fgsm": {"method": "fgsm", "eps": LINF},
    "pgd_linf": {"method": "pgd_linf", "eps": LINF, "alpha": LINF / 4, "steps": 10},
    "aa_rand": {"method": "aa_rand", "eps": LINF, "steps": 10, "eot": "EOT"},
    "aa_standard": {"method": "aa_standard", "eps": LINF, "steps": 10, "n_queries": 200},
    "pgd_l2_eot": {"method": "pgd_l2", "eps": L2, "alpha": L2 / 4, "steps": 10, "eot": "EOT"},
    "pgd_l2": {"method": "pgd_l2", "eps": L2, "alpha": L2 / 4, "steps": 10},
    "cw_l2": {"method": "cw_l2", "eps": L2, "alpha": L2 / 4, "steps": 10},
    "stadv": {"method": "stadv", "bound": 0.05, "steps": 30},
    "stadv_eot1": {"method": "stadv", "bound": 0.05, "steps": 30, "eot": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="test images")
    parser.add_argument("--draws", type=int, default=8, help="draws per image when scoring")
    parser.add_argument("--eot", type=int, default=4, help="evaluation.eot: what eot 'auto' becomes")
    parser.add_argument("--only", nargs="*", default=None, help="attack names (default: all)")
    parser.add_argument("--json", default=None, help="also write the rows here")
    add_fixture_args(parser)
    args = parser.parse_args()
    from atop.evaluate import evaluate_defense  # after fixtures put this checkout's src first on the path

    torch.set_num_threads(args.threads)
    data, _, defense = digits_defense(cache=args.cache)
    spec = {
        "n_samples": args.n,
        "sample_seed": 0,
        "draws": args.draws,
        "eot": args.eot,
        "batch_size": 128,
        "checks": {"gradient_samples": 1, "eps_zero_samples": 0},
    }
    rows = []
    for name in args.only or SETTINGS:
        attack = {k: (args.eot if v == "EOT" else v) for k, v in SETTINGS[name].items()}
        began = time.perf_counter()
        result = evaluate_defense(defense, "ap", name, attack, data, spec, seed=0)
        row = {
            "attack": name,
            "eot": result["eot"],
            "steps": result["steps"],
            "clean": round(100 * result["clean"]["accuracy"], 1),
            "robust": round(100 * result["robust"]["accuracy"], 1),
            "robust_ci95": [round(100 * v, 1) for v in result["robust"]["ci95"]],
            "strict": round(100 * result["robust"]["strict_accuracy"], 1),
            "seconds": round(time.perf_counter() - began, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
