"""``python -m atop finetune-purifier``: AToP's adversarial fine-tuning."""

from __future__ import annotations

from pathlib import Path

from ..config import resolve_numbers
from ._common import add_spec
from ._training import checkpoint_meta, publish, start

HELP = "AToP: fine-tune the purifier with an adversarial loss"


def add_arguments(parser) -> None:
    add_spec(parser)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--classifier", type=Path, required=True)
    parser.add_argument("--purifier", type=Path, required=True, help="the pre-trained purifier checkpoint")
    parser.add_argument("--out-checkpoint", type=Path, required=True)
    parser.add_argument("--out-curve", type=Path, required=True)
    parser.add_argument("--out-check", type=Path, required=True, help="JSON of the clean-accuracy collapse check")


def run(args) -> None:
    from ..defense import load_classifier
    from ..io import CheckpointError, load_checkpoint, require_same_data, sha256_file, write_json
    from ..train.purifier import finetune_purifier

    spec = {**args.spec, "finetune": resolve_numbers(args.spec["finetune"])}
    device, data, resume, fast = start(args, spec)
    data_sha = sha256_file(args.data)
    classifier, classifier_meta = load_classifier(args.classifier)
    state, pre_meta = load_checkpoint(args.purifier, expect_kind="purifier")
    require_same_data(classifier_meta, args.data, data_sha, args.classifier)
    require_same_data(pre_meta, args.data, data_sha, args.purifier)
    if pre_meta["stage"] != "pretrained":
        raise CheckpointError(f"{args.purifier} is a {pre_meta['stage']} purifier, fine-tuning needs a pretrained one")
    modules, history, check = finetune_purifier(
        data, spec, spec["seed"], device, classifier, state, pre_meta["model"], pre_meta["transform"], resume, fast
    )
    inputs = {"data": args.data, "classifier": args.classifier, "pretrained_purifier": args.purifier}
    meta = checkpoint_meta(
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
    write_json(args.out_check, check)
    publish(args, modules, meta, history, resume)
