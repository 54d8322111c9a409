"""How a randomized defense is scored: the field's competing protocols, each described once.

The same attack budget, attacked and scored six ways (docs/protocols.md has the sources and the reading):

- ``one_shot``: craft x', classify it once (AutoAttack; the paper). The evaluation's draw-mean.
- ``resubmission``: the attacker may submit x' N times; an image is robust only if all N are
  right (DiffHammer's N-evaluation, NeurIPS 2024). The curve over N = 1..draws is estimated
  without bias from the evaluation's draws (report/estimates.py, ``Outcomes.resubmitted``).
- ``while_optimizing``: the attack succeeds if any forward pass it makes while optimizing, or any
  scoring draw, is misclassified (DiffBreak, arXiv 2411.16598). Recorded by the attack itself
  (attacks/eot.py) during the headline evaluation: no extra job.
- ``deterministic``: the randomness fixed at one draw and known to the attacker (Liu et al., arXiv
  2404.14309): robustness from purification, without robustness from stochasticity. One job.
- ``majority_vote``: the defense answers by a vote over K independent copies (DiffBreak's batch
  mode); the attack targets the vote, with EOT over the K-copy ensemble. One job.
- ``selective_eot``: the attack weights each EOT draw's gradient by how close that draw is to a
  misclassification (softmax of its loss over the draws) instead of averaging them all
  (DiffHammer's selective EOT, approximated: attacks/eot.py); scored one-shot. One job.

On a deterministic defense one-shot, resubmission, deterministic and majority vote coincide;
while-optimizing can only be lower (an intermediate iterate may be misclassified).
Torch-free at import (the Snakefile reads PROTOCOLS); the wrappers import torch when built.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    name: str
    label: str  # the report's column / legend
    source: str  # who scores this way
    job: bool  # whether it needs its own evaluation job (else it is read from the headline result)
    description: str


PROTOCOLS = {
    p.name: p
    for p in (
        Protocol("one_shot", "one-shot (draw-mean)", "AutoAttack; the paper", False, "x' classified once"),
        Protocol(
            "resubmission",
            "resubmission (all N draws)",
            "DiffHammer",
            False,
            "robust only if all N submissions are right",
        ),
        Protocol(
            "while_optimizing",
            "evaluated while optimizing",
            "DiffBreak",
            False,
            "broken if any query during the attack, or any scoring draw, is misclassified",
        ),
        Protocol(
            "deterministic",
            "deterministic white-box",
            "Liu et al. 2024",
            True,
            "the randomness fixed at one draw and known to the attacker",
        ),
        Protocol(
            "majority_vote",
            "majority vote",
            "DiffBreak (batch mode)",
            True,
            "the defense votes over K copies; the attack targets the vote (EOT over the K copies)",
        ),
        Protocol(
            "selective_eot",
            "selective EOT (one-shot)",
            "DiffHammer",
            True,
            "the attack weights the draws closest to a misclassification instead of averaging them; scored one-shot",
        ),
    )
}
JOB_PROTOCOLS = tuple(name for name, p in PROTOCOLS.items() if p.job)


def protocol_defense(name: str, defense, seed: int, copies: int = 1):
    """The defense as protocol ``name`` scores it (a wrapper for the protocols that need a job)."""
    from torch import nn

    class FrozenRandomness(nn.Module):
        """Every pass reseeds the defense to ``seed``: one draw, fixed, that the attacker's gradients see too."""

        randomized = False  # to the attacker and the scorer alike: no EOT, one draw

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner, self.seed = inner, int(seed)

        def reseed(self, seed: int) -> None:
            """The randomness stays the one fixed draw."""

        def forward(self, x):
            self.inner.reseed(self.seed)
            return self.inner(x)

    class MajorityVote(nn.Module):
        """The defense answering by a vote of ``copies`` independent draws; its argmax is the vote (ties:
        the higher mean probability), its gradient that of the log mean softmax over the copies."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner, self.copies = inner, int(copies)

        @property
        def randomized(self) -> bool:
            return bool(self.inner.randomized)

        def reseed(self, seed: int) -> None:
            self.inner.reseed(seed)

        def forward(self, x):
            import torch
            from torch.nn import functional as F

            logits = self.inner(x.repeat(self.copies, *([1] * (x.dim() - 1)))).view(self.copies, len(x), -1)
            probabilities = logits.float().softmax(-1)
            mean = probabilities.mean(0)
            votes = F.one_hot(logits.argmax(-1), logits.shape[-1]).float().mean(0)
            surrogate = mean.clamp_min(1e-12).log()
            decision = (votes + 1e-3 * mean).log()  # the vote decides; the mean probability breaks ties
            return surrogate + (decision - surrogate).detach() if torch.is_grad_enabled() else decision

    wrappers = {"deterministic": FrozenRandomness, "majority_vote": MajorityVote, "selective_eot": None}
    if name not in wrappers:
        raise ValueError(f"protocol {name!r} needs no job of its own (protocols with a job: {', '.join(wrappers)})")
    if name == "majority_vote" and copies < 1:
        raise ValueError(f"majority_vote needs copies >= 1, not {copies}")
    if wrappers[name] is None:  # the attack differs (its eot_weighting), not the defense
        return defense
    return wrappers[name](defense)
