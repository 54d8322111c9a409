"""Scoring protocols (src/atop/protocols.py) on constructed defenses whose answers are known.

- A defense robust only through randomness: a random pick of K linear models, each broken by a
  small L2 step along its own feature. Attacked with EOT (one-shot, resubmission) it stands: a
  budget spread over all K features moves each model too little. Frozen at one draw and known to
  the attacker (deterministic white-box) it falls.
- A noisy classifier that answers a random wrong class on some passes: its majority vote over K
  copies fixes most of those clean errors.
- A deterministic defense: every protocol gives the same number (while-optimizing at most it).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from atop.attacks import build_attack
from atop.evaluate import run_attack
from atop.metrics import correct_per_draw
from atop.protocols import JOB_PROTOCOLS, PROTOCOLS, protocol_defense
from atop.report.protocols import protocol_outcomes, protocol_table, ranking_lines, resubmission_curve

K = 256  # random models, one vulnerable feature each
MARGIN = 0.1  # distance of x0 from the decision boundary
EPS = 0.05  # L2 budget: < MARGIN on x0 alone, and C * EPS / sqrt(K) << MARGIN across all K features


class RandomPick(nn.Module):
    """Two classes by the sign of (x0 - 0.5) + C (x_i - 0.5), i drawn per image and pass."""

    C = 5.0

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # a parameter: the device
        self.generator = torch.Generator().manual_seed(0)

    randomized = True

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(int(seed))

    def forward(self, x):
        flat = x.flatten(1)
        pick = torch.randint(1, K + 1, (len(x),), generator=self.generator)
        score = (flat[:, 0] - 0.5) + self.C * (flat.gather(1, pick[:, None])[:, 0] - 0.5)
        return torch.stack([-score, score], dim=1)


def _two_class_images(n: int = 64, spread: bool = False):
    """x0 at MARGIN from the boundary (``spread``: margins from 0.02 to 0.15, so a budget breaks some)."""
    generator = torch.Generator().manual_seed(1)
    y = torch.randint(0, 2, (n,), generator=generator)
    margin = torch.linspace(0.02, 0.15, n) if spread else torch.full((n,), MARGIN)
    x = torch.full((n, 1, 1, K + 1), 0.5)
    x[:, 0, 0, 0] = 0.5 + margin * (2 * y.float() - 1)
    return x, y


def _robust(defense, x, y, attack_params, draws, seed=0):
    attack = build_attack("pgd_l2", defense, attack_params, num_classes=2, seed=seed, draws=draws)
    defense.reseed(seed + 1)
    torch.manual_seed(seed)
    adversarial = run_attack(attack, x, y, len(x), "test")
    defense.reseed(seed + 2)
    correct = correct_per_draw(defense, adversarial, y, draws, len(x))
    return correct.float(), attack.fooled


ATTACK = {"eps": EPS, "alpha": EPS / 4, "steps": 20, "eot": 32}


def test_robust_only_through_randomness_falls_to_the_deterministic_white_box():
    x, y = _two_class_images()
    defense = RandomPick()
    assert correct_per_draw(defense, x, y, 4, len(x)).all()  # clean: every draw right
    one_shot, fooled = _robust(defense, x, y, ATTACK, draws=4)
    assert one_shot.mean() > 0.95  # EOT cannot break every draw with this budget
    assert one_shot.all(0).float().mean() > 0.9  # nor resubmission of 4
    frozen = protocol_defense("deterministic", defense, seed=7)
    assert not frozen.randomized
    deterministic, _ = _robust(frozen, x, y, ATTACK, draws=1)
    assert deterministic.mean() < 0.05  # the attacker who knows the draw breaks (almost) every image
    assert fooled.shape == (len(x),)


class NoisyClassifier(nn.Module):
    """Right on every image, except that with probability P a pass answers a random wrong class."""

    P = 0.3

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.classes = classes
        self.weight = nn.Parameter(torch.eye(classes), requires_grad=False)
        self.generator = torch.Generator().manual_seed(0)

    randomized = True

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(int(seed))

    def forward(self, x):
        logits = 5 * x.flatten(1)[:, : self.classes] @ self.weight
        wrong = torch.rand(len(x), generator=self.generator) < self.P
        shift = torch.randint(1, self.classes, (len(x),), generator=self.generator)
        noisy = (logits.argmax(1) + shift) % self.classes
        flipped = torch.nn.functional.one_hot(noisy, self.classes).float() * 10
        return torch.where(wrong[:, None], flipped + 0 * logits, logits)


def test_majority_vote_fixes_a_noisy_classifiers_clean_errors():
    classes, n = 10, 400
    y = torch.arange(n) % classes
    x = torch.nn.functional.one_hot(y, classes).float().view(n, 1, 1, classes)
    noisy = NoisyClassifier(classes)
    single = correct_per_draw(noisy, x, y, 8, n).float().mean().item()
    vote = protocol_defense("majority_vote", noisy, seed=0, copies=9)
    voted = correct_per_draw(vote, x, y, 8, n).float().mean().item()
    assert abs(single - (1 - NoisyClassifier.P)) < 0.05
    assert voted > 0.97 > single + 0.2
    # the vote's gradient is the K copies' mean probability: a gradient attack has one to follow
    xg = x[:8].clone().requires_grad_(True)
    vote(xg).gather(1, y[:8, None]).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


class Deterministic(nn.Module):
    randomized = False

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(K + 1, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-1.0] + [0.0] * K, [1.0] + [0.0] * K]))
            self.fc.bias.copy_(torch.tensor([0.5, -0.5]))

    def reseed(self, seed: int) -> None:
        pass

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_a_deterministic_defense_scores_the_same_under_every_protocol():
    x, y = _two_class_images(spread=True)
    params = {"eps": 0.08, "alpha": 0.02, "steps": 10, "eot": 4}
    defense = Deterministic()
    one_shot, fooled = _robust(defense, x, y, params, draws=1)
    frozen, _ = _robust(protocol_defense("deterministic", defense, seed=3), x, y, params, draws=1)
    vote, _ = _robust(protocol_defense("majority_vote", defense, seed=0, copies=5), x, y, params, draws=1)
    assert 0 < one_shot.mean() < 1  # a budget that breaks some images, not all
    assert torch.equal(one_shot, frozen) and torch.equal(one_shot, vote)
    while_optimizing = one_shot[0] * (~fooled).float()
    assert while_optimizing.mean() <= one_shot.mean()


def test_protocol_names_and_wrappers():
    assert list(PROTOCOLS) == [
        "one_shot",
        "resubmission",
        "while_optimizing",
        "deterministic",
        "majority_vote",
        "selective_eot",
    ]
    assert JOB_PROTOCOLS == ("deterministic", "majority_vote", "selective_eot")
    defense = Deterministic()
    assert protocol_defense("selective_eot", defense, seed=0) is defense  # the attack differs, not the defense
    with pytest.raises(ValueError, match="needs no job of its own"):
        protocol_defense("one_shot", Deterministic(), seed=0)
    with pytest.raises(ValueError, match="copies >= 1"):
        protocol_defense("majority_vote", Deterministic(), seed=0, copies=0)


def _result(defense, robust, indices, draws=4, protocol=None, fooled=None):
    result = {
        "defense": defense,
        "attack": "eot_pgd",
        "seed": 0,
        "draws": draws,
        "sample_indices": indices,
        "per_sample": {"robust_correct_fraction": robust},
    }
    if protocol:
        result["protocol"] = protocol
    if fooled is not None:
        result["fooled_while_optimizing"] = fooled
    return result


def test_the_report_matches_protocol_jobs_to_the_evaluation_on_the_same_images():
    evaluation = _result("atop", [1.0, 0.75, 0.5, 1.0], [3, 5, 8, 9], fooled=[False, False, True, True])
    jobs = [
        _result("atop", [0.0, 1.0], [3, 5], draws=1, protocol={"name": "deterministic"}),
        _result("atop", [1.0, 0.5], [3, 5], protocol={"name": "majority_vote", "copies": 3}),
    ]
    (found,) = protocol_outcomes([evaluation], jobs)
    assert found.indices.tolist() == [3, 5]
    assert found.per_image["one_shot"].tolist() == [1.0, 0.75]
    assert found.per_image["resubmission"].tolist() == [1.0, 0.0]
    assert found.per_image["while_optimizing"].tolist() == [1.0, 0.0]
    assert found.per_image["deterministic"].tolist() == [0.0, 1.0]
    table = protocol_table([found])
    assert table.loc["atop", "majority vote (K = 3)"].value == 0.75
    assert table.loc["atop", "resubmission (all 4 draws)"].value == 0.5
    curve = resubmission_curve(found)
    assert [round(e.value, 4) for e in curve] == [0.875, 0.75, 0.625, 0.5]  # 3 of 4 draws: C(3,N)/C(4,N)
    with pytest.raises(ValueError, match="no evaluation result beside them"):
        protocol_outcomes([], jobs)


def test_ranking_lines_say_when_protocols_disagree():
    n = 200
    indices = list(range(n))
    a = _result("ap", [1.0] * n, indices, fooled=[False] * n)  # robust one-shot, ...
    b = _result("atop", [0.0] * n, indices, fooled=[False] * n)
    jobs = [
        _result("ap", [0.0] * n, indices, draws=1, protocol={"name": "deterministic"}),  # ... broken when frozen
        _result("atop", [1.0] * n, indices, draws=1, protocol={"name": "deterministic"}),
    ]
    outcomes = protocol_outcomes([a, b], jobs)
    (line,) = ranking_lines(outcomes)
    assert line.startswith("ap - atop:") and "DISAGREE" in line
    same = protocol_outcomes([a, b], [dict(jobs[0], per_sample={"robust_correct_fraction": [1.0] * n}), jobs[1]])
    assert "no protocol reverses the order" in ranking_lines(same)[0]


def test_while_optimizing_interval_covers_in_simulation():
    """The protocols table's interval (image bootstrap of a 0/1 per-image outcome) covers at >= 95 %."""
    from atop.report.protocols import estimate

    rng = np.random.default_rng(0)
    truth, covered, trials = 0.4, 0, 300
    for _ in range(trials):
        e = estimate((rng.random(128) < truth).astype(float), "sim")
        covered += e.low <= truth <= e.high
    assert covered / trials >= 0.93  # 95 % nominal; 300 trials: the 2-sigma band reaches ~92.5 %
