"""Training stages: exact resume, loud non-finite losses, purifier pre-training and fine-tuning."""

from __future__ import annotations

import math
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import atop.train.classifier as classifier_stage
import atop.train.purifier as purifier_stage
from atop.data import PreparedData
from atop.models import build_classifier
from atop.train.classifier import train_classifier
from atop.train.loop import NonFiniteLoss, batches, epoch_seed, fit
from atop.train.purifier import FineTuneCollapse, finetune_purifier, pretrain_purifier

from synthetic_data import PURIFIER_SPEC, brightness_data, finetune_spec

CPU = torch.device("cpu")
SIZE = 16


def _prepared(n_train=64, n_val=16, n_test=16, seed=0) -> PreparedData:
    return brightness_data(n_train, n_val, n_test, seed, SIZE)


CLASSIFIER_SPEC = {
    "arch": "small_cnn",
    "arch_params": {"width": 4},
    "epochs": 3,
    "batch_size": 16,
    "lr": 1e-2,
    "weight_decay": 0.0,
}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


class Interrupted(RuntimeError):
    pass


def _patch_fit(monkeypatch, stage_module, stop_at: int | None, ran: list[int]):
    """Route ``stage_module``'s fit through a recorder; optionally die when epoch ``stop_at`` starts."""

    def patched(**kwargs):
        inner = kwargs["run_epoch"]

        def run_epoch(epoch):
            if stop_at is not None and epoch == stop_at:
                raise Interrupted(f"killed at epoch {epoch}")
            ran.append(epoch)
            return inner(epoch)

        return fit(**{**kwargs, "run_epoch": run_epoch})

    monkeypatch.setattr(stage_module, "fit", patched)


# --------------------------------------------------------------------------- the shared loop


def test_epoch_seed_and_batches():
    assert epoch_seed(0, 1) != epoch_seed(0, 2) != epoch_seed(1, 1)
    assert epoch_seed(0, 1, stream=1) != epoch_seed(0, 1)
    x, y = torch.arange(10).float().view(10, 1), torch.arange(10)
    seen = [yb for _, yb in batches(x, y, 4, torch.Generator().manual_seed(0))]
    assert [len(b) for b in seen] == [4, 4, 2]
    assert sorted(torch.cat(seen).tolist()) == list(range(10))
    again = [yb for _, yb in batches(x, y, 4, torch.Generator().manual_seed(0))]
    assert all(torch.equal(a, b) for a, b in zip(seen, again))


def test_classifier_resume_after_interruption_is_bitwise_identical(tmp_path, monkeypatch):
    data = _prepared(n_train=32)
    model, meta, history = train_classifier(data, CLASSIFIER_SPEC, 0, CPU, tmp_path / "straight.resume")
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert meta["width"] == 4 and meta["num_classes"] == 2 and meta["image_size"] == SIZE

    resume = tmp_path / "interrupted.resume"
    ran: list[int] = []
    _patch_fit(monkeypatch, classifier_stage, stop_at=2, ran=ran)
    with pytest.raises(Interrupted):
        train_classifier(data, CLASSIFIER_SPEC, 0, CPU, resume)
    assert ran == [0, 1]
    assert torch.load(resume, weights_only=True)["epoch"] == 2

    ran.clear()
    _patch_fit(monkeypatch, classifier_stage, stop_at=None, ran=ran)
    resumed, _, resumed_history = train_classifier(data, CLASSIFIER_SPEC, 0, CPU, resume)
    assert ran == [2], "the second attempt must resume after epoch 2, not start over"
    assert _same_state(model.state_dict(), resumed.state_dict())
    assert _without_seconds(resumed_history) == _without_seconds(history)

    # The comparison can fail: another seed gives other weights.
    other, _, _ = train_classifier(data, CLASSIFIER_SPEC, 1, CPU, tmp_path / "other.resume")
    assert not _same_state(model.state_dict(), other.state_dict())


def test_resume_file_of_another_configuration_is_ignored(tmp_path, monkeypatch):
    data = _prepared(n_train=32)
    spec = {**CLASSIFIER_SPEC, "epochs": 2}
    resume = tmp_path / "run.resume"
    train_classifier(data, spec, 0, CPU, resume)
    ran: list[int] = []
    _patch_fit(monkeypatch, classifier_stage, stop_at=None, ran=ran)
    train_classifier(data, {**spec, "lr": 5e-3}, 0, CPU, resume)
    assert ran == [0, 1]
    ran.clear()
    # The same configuration again finds everything done.
    _, _, history = train_classifier(data, {**spec, "lr": 5e-3}, 0, CPU, resume)
    assert ran == [] and [row["epoch"] for row in history] == [1, 2]


def _stepping_run_epoch(module, optimizer, bad_epoch, bad_value):
    def run_epoch(epoch):
        loss = (module(torch.ones(4, 3)) - 1).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": bad_value if epoch == bad_epoch else loss.item(), "other": 1.0}

    return run_epoch


@pytest.mark.parametrize("bad_value", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_raises_and_keeps_the_last_good_state(tmp_path, bad_value):
    torch.manual_seed(0)
    module = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    resume = tmp_path / "stage.resume"
    snapshots = []
    step = _stepping_run_epoch(module, optimizer, bad_epoch=2, bad_value=bad_value)

    def run_epoch(epoch):
        row = step(epoch)
        snapshots.append({k: v.clone() for k, v in module.state_dict().items()})
        return row

    with pytest.raises(NonFiniteLoss) as info:
        fit(
            stage="toy",
            modules={"m": module},
            optimizers={"m": optimizer},
            epochs=4,
            run_epoch=run_epoch,
            resume_path=resume,
            fingerprint={"x": 1},
        )
    message = str(info.value)
    assert "loss" in message and "epoch 3" in message and str(resume) in message
    state = torch.load(resume, weights_only=True)
    assert state["epoch"] == 2
    assert [row["epoch"] for row in state["history"]] == [1, 2]
    assert _same_state(state["modules"]["m"], snapshots[1])  # after the last good epoch ...
    assert not _same_state(state["modules"]["m"], snapshots[2])  # ... not the bad one
    assert [p.name for p in tmp_path.iterdir()] == ["stage.resume"]


def test_non_finite_loss_in_classifier_training_then_recovery(tmp_path, monkeypatch):
    data = _prepared(n_train=32)
    spec = {**CLASSIFIER_SPEC, "epochs": 3}
    calls = {"n": 0}

    def poisoned_cross_entropy(*args, **kwargs):
        calls["n"] += 1
        loss = F.cross_entropy(*args, **kwargs)
        return loss * math.nan if calls["n"] > 2 else loss  # 2 batches per epoch: epoch 2 goes bad

    monkeypatch.setattr(classifier_stage, "F", types.SimpleNamespace(cross_entropy=poisoned_cross_entropy))
    resume = tmp_path / "classifier.resume"
    with pytest.raises(NonFiniteLoss, match="train_loss"):
        train_classifier(data, spec, 0, CPU, resume)
    assert torch.load(resume, weights_only=True)["epoch"] == 1

    monkeypatch.setattr(classifier_stage, "F", F)
    model, _, history = train_classifier(data, spec, 0, CPU, resume)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all(math.isfinite(row["train_loss"]) for row in history)
    clean, _, _ = train_classifier(data, spec, 0, CPU, tmp_path / "clean.resume")
    assert _same_state(model.state_dict(), clean.state_dict())


# --------------------------------------------------------------------------- purifier


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    data = _prepared(n_train=32, n_val=8, n_test=8)
    resume = tmp_path_factory.mktemp("pretrain") / "purifier.resume"
    modules, model_meta, transform_meta, history = pretrain_purifier(data, PURIFIER_SPEC, 0, CPU, resume)
    return data, modules, model_meta, transform_meta, history, resume


def test_pretrain_purifier_one_epoch(pretrained):
    data, modules, model_meta, transform_meta, history, resume = pretrained
    assert model_meta == {"arch": "gan_unet", "in_channels": 3, "image_size": None, "base_channels": 4}
    assert transform_meta == {"name": "rt2", "params": PURIFIER_SPEC["transform_params"]}
    assert set(modules.keys()) == {"generator", "discriminator"}
    assert len(history) == 1 and history[0]["epoch"] == 1
    assert {"d_loss", "g_adv", "l1", "g_loss", "val_l1"} <= history[0].keys()
    assert all(math.isfinite(v) for v in history[0].values())
    assert 0 < history[0]["val_l1"] < 1
    assert resume.is_file()
    x = data.images("val")[:2]
    out = modules["generator"](x, torch.zeros(2, 1, SIZE, SIZE))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_pretrain_purifier_changes_the_weights(pretrained):
    _, modules, model_meta, *_ = pretrained
    torch.manual_seed(0)
    fresh = purifier_stage.build_purifier(**model_meta).as_module()
    assert not _same_state(fresh.state_dict(), modules.state_dict())


def test_pretrain_purifier_resume_is_bitwise_identical(tmp_path, monkeypatch):
    data = _prepared(n_train=16, n_val=8, n_test=8)
    spec = {**PURIFIER_SPEC, "pretrain": {**PURIFIER_SPEC["pretrain"], "epochs": 2}}
    straight, *_ = pretrain_purifier(data, spec, 0, CPU, tmp_path / "a.resume")
    ran: list[int] = []
    _patch_fit(monkeypatch, purifier_stage, stop_at=1, ran=ran)
    with pytest.raises(Interrupted):
        pretrain_purifier(data, spec, 0, CPU, tmp_path / "b.resume")
    _patch_fit(monkeypatch, purifier_stage, stop_at=None, ran=ran)
    resumed, *_ = pretrain_purifier(data, spec, 0, CPU, tmp_path / "b.resume")
    assert ran == [0, 1]
    assert _same_state(straight.state_dict(), resumed.state_dict())


def _classifier():
    torch.manual_seed(0)
    return build_classifier("small_cnn", num_classes=2, mean=[0.5] * 3, std=[0.25] * 3, image_size=SIZE, width=4).eval()


def test_finetune_purifier_collapse_guard(pretrained, tmp_path):
    data, modules, model_meta, transform_meta, _, _ = pretrained
    state = modules.state_dict()
    snapshot = {k: v.clone() for k, v in state.items()}
    with pytest.raises(FineTuneCollapse, match="max_clean_drop"):
        finetune_purifier(
            data,
            finetune_spec(max_clean_drop=-1.5),
            0,
            CPU,
            _classifier(),
            state,
            model_meta,
            transform_meta,
            tmp_path / "collapse.resume",
        )
    # Control: a satisfiable bound publishes the model and reports the check.
    tuned, history, check = finetune_purifier(
        data,
        finetune_spec(max_clean_drop=1.0),
        0,
        CPU,
        _classifier(),
        state,
        model_meta,
        transform_meta,
        tmp_path / "ok.resume",
    )
    assert check["drop"] == pytest.approx(
        check["pretrained_val_clean_accuracy"] - check["finetuned_val_clean_accuracy"]
    )
    assert check["max_clean_drop"] == 1.0 and check["draws"] == 1
    assert len(history) == 1 and {"ce", "l1", "g_loss", "val_clean_accuracy"} <= history[0].keys()
    assert all(math.isfinite(v) for v in history[0].values())
    assert not _same_state(tuned.state_dict(), snapshot)
    # The pre-trained weights passed in are not modified in place.
    assert _same_state(snapshot, modules.state_dict())


@pytest.mark.parametrize(
    "attack",
    [
        "fgsm_classifier",
        "fgsm_checked",
        "pgd_defense",
    ],
)
def test_finetune_purifier_resume_is_bitwise_identical(pretrained, tmp_path, monkeypatch, attack):
    data, modules, model_meta, transform_meta, _, _ = pretrained
    small = PreparedData(
        tensors={**data.tensors, "x_train": data.tensors["x_train"][:16], "y_train": data.tensors["y_train"][:16]},
        info=data.info,
    )
    spec = finetune_spec(attack=attack, epochs=2)
    args = (small, spec, 0, CPU, _classifier(), modules.state_dict(), model_meta, transform_meta)
    straight, straight_history, _ = finetune_purifier(*args, tmp_path / "a.resume")
    ran: list[int] = []
    _patch_fit(monkeypatch, purifier_stage, stop_at=1, ran=ran)
    with pytest.raises(Interrupted):
        finetune_purifier(*args, tmp_path / "b.resume")
    _patch_fit(monkeypatch, purifier_stage, stop_at=None, ran=ran)
    resumed, resumed_history, _ = finetune_purifier(*args, tmp_path / "b.resume")
    assert ran == [0, 1]
    assert _same_state(straight.state_dict(), resumed.state_dict())
    assert _without_seconds(straight_history) == _without_seconds(resumed_history)


def test_finetune_monitor_changes_no_weight_and_writes_its_columns(pretrained, tmp_path):
    from atop.diagnostics.detectors import COLUMNS

    data, modules, model_meta, transform_meta, _, _ = pretrained
    args = (data, 0, CPU, _classifier(), modules.state_dict(), model_meta, transform_meta)
    off = finetune_spec(monitor={"train_images": 0, "val_images": 0})
    on = finetune_spec(monitor={"train_images": 8, "val_images": 8, "steps": 2, "eot": 2})
    plain, plain_history, _ = finetune_purifier(args[0], off, *args[1:], tmp_path / "off.resume")
    monitored, history, _ = finetune_purifier(args[0], on, *args[1:], tmp_path / "on.resume")
    assert _same_state(plain.state_dict(), monitored.state_dict())
    assert set(COLUMNS) <= history[0].keys() and not set(COLUMNS) & plain_history[0].keys()
    assert history[0]["val_clean_accuracy"] == plain_history[0]["val_clean_accuracy"]
    assert all(0 <= history[0][c] <= 1 for c in COLUMNS)
