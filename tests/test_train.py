from __future__ import annotations

import dataclasses


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import train
from harness.errors import TrainingError
from harness.train import loop, model as model_module
from harness.errors import UsageError


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = rng.random((6, 32, 32)).astype(np.float16)
    masks = np.zeros((6, 32, 32), np.uint8)
    masks[:, 8:24, 8:24] = 2
    masks[:, 12:20, 12:20] = 1
    masks[0, :4, :4] = 3  # RV: trained as background
    return images, masks


SMALL = train.TrainSettings(size=32, batch_size=4, schedule="fast", select="last", steps_frozen=2, steps_unfrozen=2,
                            precision="fp32")


def _weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_stage_one_freezes_the_encoder_but_not_its_batchnorm():
    model = train.build_model("resnet18")
    trainable = loop._set_stage(model, frozen_encoder=True)
    assert not model.encoder.conv1.weight.requires_grad
    assert model.encoder.bn1.weight.requires_grad and model.encoder.layer1[0].bn2.bias.requires_grad
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert len(trainable) < len(list(model.parameters()))
    assert len(loop._set_stage(model, frozen_encoder=False)) == len(list(model.parameters()))


def test_fine_tuning_is_reproducible_from_its_seeds(data):
    images, masks = data
    runs = []
    for order_seed, augment_seed in [(1, 2), (1, 2), (1, 3)]:
        torch.manual_seed(0)
        model = train.build_model("resnet18")
        train.fine_tune(model, images, masks, SMALL, order_seed, augment_seed)
        runs.append(_weights(model))
    print("max |difference| between identical seeds:", float((runs[0] - runs[1]).abs().max()))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_frozen_stage_leaves_encoder_convolutions_unchanged(data):
    images, masks = data
    torch.manual_seed(0)
    model = train.build_model("resnet18")
    before = model.encoder.conv1.weight.detach().clone()
    head_before = model.segmentation_head[0].weight.detach().clone()
    settings = dataclasses.replace(SMALL, steps_frozen=3, steps_unfrozen=0)
    train.fine_tune(model, images, masks, settings, 0, 0)
    assert torch.equal(before, model.encoder.conv1.weight.detach().cpu())
    assert not torch.equal(head_before, model.segmentation_head[0].weight.detach().cpu())


def test_every_subset_gets_the_same_number_of_steps():
    rng = np.random.default_rng(0)
    for n_images in (3, 17, 200):
        batches = list(loop._batches(n_images, 8, 25, rng))
        assert len(batches) == 25 and all(len(b) == min(8, n_images) for b in batches)


def test_augmentation_keeps_image_and_mask_aligned():
    x = torch.zeros(4, 1, 32, 32)
    x[:, :, 10:20, 5:15] = 1.0
    y = (x[:, 0] > 0.5).long()
    settings = train.TrainSettings(brightness=0.0, contrast=0.0)
    ax, ay = loop.Augmenter(settings, 0)(x, y)
    inside = ax[:, 0][ay == 1]
    assert inside.mean() > 0.8 and ax[:, 0][ay == 0].mean() < 0.1


def test_rv_becomes_background_for_training():
    assert train.to_classes(np.array([0, 1, 2, 3], np.uint8)).tolist() == [0, 1, 2, 0]


@pytest.mark.parametrize("loss", [loop.cross_entropy, loop.summed_cross_entropy])
def test_cross_entropy_equals_torch_and_leaves_uncontoured_pixels_out(loss):
    """Both the CPU loss and the sums-only one CUDA runs (for determinism) equal torch's, value and gradient."""
    torch.manual_seed(0)
    logits = torch.randn(3, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (3, 8, 8))
    target[0, :4] = train.IGNORE
    ours = loss(logits, target)
    (grad,) = torch.autograd.grad(ours, logits)
    theirs = F.cross_entropy(logits, target, ignore_index=train.IGNORE)
    (expected,) = torch.autograd.grad(theirs, logits)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    assert torch.allclose(grad, expected, atol=1e-7) and (grad[0, :, :4] == 0).all()
    nothing_known = torch.full_like(target, train.IGNORE)
    assert loss(logits, nothing_known).item() == 0.0


def test_soft_dice_loss_is_zero_for_a_perfect_prediction_and_ignores_uncontoured_pixels():
    target = torch.randint(0, 3, (2, 16, 16))
    target[:, 0, 0] = 1  # every foreground class present
    target[:, 0, 1] = 2
    perfect = 50.0 * F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    assert loop.soft_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    wrong = torch.roll(perfect, 1, dims=1)  # every pixel predicted as another class
    assert loop.soft_dice_loss(wrong, target).item() == pytest.approx(1.0, abs=0.01)
    # what the prediction says where the class is unknown does not count
    masked = target.clone()
    masked[:, 8:] = train.IGNORE
    scrambled = perfect.clone()
    scrambled[:, :, 8:] = torch.roll(perfect, 1, dims=1)[:, :, 8:]
    assert loop.soft_dice_loss(scrambled, masked).item() == pytest.approx(0.0, abs=1e-4)


def test_unknown_loss_is_refused_with_the_choices(data):
    images, masks = data
    with pytest.raises(TrainingError, match="loss 'dice' is not known; choose one of ce, ce\\+dice"):
        train.fine_tune(model_module.build_model("resnet18", None, SMALL.decoder_channels), images, masks, SMALL, 0, 0,
                        loss="dice")


def test_precision_resolution():
    assert train.resolve_precision("fp32") == "fp32"
    assert train.resolve_precision("auto") in ("bf16", "fp32")
    with pytest.raises(UsageError, match="precision must be"):
        train.resolve_precision("fp8")


def test_pretrained_weights_offline_fail_fast(monkeypatch):
    import segmentation_models_pytorch as smp

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(model_module.socket, "create_connection", lambda *a, **k: pytest.fail("tried the network"))
    monkeypatch.setattr(smp, "Unet", lambda *a, **k: pytest.fail("smp would retry the download"))
    with pytest.raises(UsageError, match="HF_HUB_OFFLINE is set.*--encoder-weights none"):
        train.build_model("resnet18", "imagenet")


def test_unreachable_hub_fails_in_seconds(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(model_module.socket, "create_connection", refuse)
    with pytest.raises(UsageError, match="not reachable"):
        train.check_weights_reachable("imagenet")


def test_a_nan_or_diverging_loss_stops_the_run_with_its_reason(data):
    images, masks = data
    bad = dataclasses.replace(SMALL, steps_frozen=0, steps_unfrozen=30, lr_unfrozen=1e4,
                              precision="fp32")
    with pytest.raises(TrainingError, match="training diverged: the loss .* of stage 2 .*lower the learning rate"):
        train.fine_tune(train.build_model("resnet18", seed=0), images, masks, bad, 0, 0)


def _scripted(scores, seen):
    """A validation function that returns ``scores`` in turn and keeps the weights it was shown."""
    values = iter(scores)

    def validate(model):
        seen.append(_weights(model).clone())
        value = next(values)
        return {"dice_lv": value, "dice_my": value, "score": value}

    return validate


def test_best_val_keeps_the_weights_of_the_best_check_and_last_keeps_the_last(data):
    images, masks = data
    seen = []
    # the start, then the checks after steps 2, 4 (end of stage 1), 6 and 8: the one after step 4 is best
    settings = dataclasses.replace(SMALL, steps_frozen=4, steps_unfrozen=4, select="best-val", checks=2)
    model = train.build_model("resnet18", seed=0)
    result = train.fine_tune(model, images, masks, settings, 0, 0, validate=_scripted([0.1, 0.2, 0.9, 0.1, 0.3], seen))
    assert [step for step, _ in result["checks"]] == [0, 2, 4, 6, 8]
    assert result["selected_step"] == 4 and result["stop_reason"] == "schedule"
    assert torch.equal(_weights(model), seen[2])
    assert [r["kept"] for r in result["record"]] == [False, False, True, False, False]
    last = train.build_model("resnet18", seed=0)
    result = train.fine_tune(last, images, masks, dataclasses.replace(settings, select="last"), 0, 0,
                             validate=_scripted([0.1, 0.2, 0.9, 0.1, 0.3], []))
    assert result["selected_step"] == 8 and not torch.equal(_weights(last), _weights(model))


def test_best_val_can_keep_the_starting_weights(data):
    images, masks = data
    model = train.build_model("resnet18", seed=0)
    start = _weights(model).clone()
    settings = dataclasses.replace(SMALL, steps_frozen=2, steps_unfrozen=2, select="best-val", checks=1)
    result = train.fine_tune(model, images, masks, settings, 0, 0, validate=_scripted([0.8, 0.5, 0.6], []))
    assert result["selected_step"] == 0 and torch.equal(_weights(model), start)


PLATEAU = dataclasses.replace(SMALL, schedule="plateau", select="best-val", check_images=6, patience=2,
                              max_checks=5, lr_unfrozen=1e-3, reductions=0)


def test_plateau_schedule_stops_when_validation_stops_improving_and_keeps_the_best_check(data):
    images, masks = data
    seen = []
    model = train.build_model("resnet18", seed=0)
    # start 0.5; checks 0.6, 0.7 (best), 0.7005 (no gain above 0.002), 0.69: plateau after 2 checks without one
    result = train.fine_tune(model, images, masks, PLATEAU, 0, 0,
                             validate=_scripted([0.5, 0.6, 0.7, 0.7005, 0.69, 0.9, 0.9], seen))
    assert result["stop_reason"] == "plateau" and result["converged"] is True
    steps_per_check = 2  # 6 images between checks: one epoch of 6 images in batches of 4
    assert [r["step"] for r in result["record"]] == [0, 2, 4, 6, 8]
    assert result["steps_run"] == 4 * steps_per_check and result["epochs"] == 4  # batches of 4: 2 an epoch
    # the kept check is the one with the best score (0.7005 > 0.7, though below the minimum improvement)
    assert result["kept_step"] == 6 and torch.equal(_weights(model), seen[3])
    record = result["record"]
    assert all(np.isfinite(r["loss"]) for r in record[1:]) and not np.isfinite(record[0]["loss"])
    assert record[0]["lr"] < record[-1]["lr"] == pytest.approx(1e-3)  # warm-up over the first check, then constant


def test_a_plateau_with_reductions_left_lowers_the_learning_rate_and_the_next_one_stops(data):
    images, masks = data
    settings = dataclasses.replace(PLATEAU, reductions=1, reduce_factor=0.25, max_checks=10)
    # checks 1-2 flat after the start's 0.5 and check 1's 0.6: a plateau at check 3 lowers the rate; check 4
    # improves (0.7 > 0.6 + 0.002), checks 5-6 do not: the second plateau stops the run at check 6
    result = train.fine_tune(train.build_model("resnet18", seed=0), images, masks, settings, 0, 0,
                             validate=_scripted([0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.9, 0.9], []))
    assert result["stop_reason"] == "plateau" and result["converged"] is True
    record = result["record"]
    assert len(record) == 7 and result["kept_step"] == record[4]["step"]
    rates = [r["lr"] for r in record[1:]]  # the rate each check's steps ended at
    assert rates[:3] == pytest.approx([1e-3] * 3) and rates[3:] == pytest.approx([2.5e-4] * 3)


def test_plateau_schedule_keeps_the_starting_weights_when_no_check_beats_them(data):
    images, masks = data
    model = train.build_model("resnet18", seed=0)
    start = _weights(model).clone()
    result = train.fine_tune(model, images, masks, PLATEAU, 0, 0, validate=_scripted([0.8, 0.7, 0.75, 0.9], []))
    assert result["stop_reason"] == "plateau" and result["kept_step"] == 0
    assert torch.equal(_weights(model), start)  # fine-tuning never ends below its start on validation


def test_plateau_schedule_that_is_still_improving_at_its_cap_is_not_converged(data):
    images, masks = data
    result = train.fine_tune(train.build_model("resnet18", seed=0), images, masks, PLATEAU, 0, 0,
                             validate=_scripted([0.1 * i for i in range(7)], []))
    assert result["stop_reason"] == "cap" and result["converged"] is False
    assert len(result["record"]) == 1 + PLATEAU.max_checks and result["kept_step"] == result["steps_run"]


def test_plateau_schedule_that_diverges_stops_and_keeps_its_best_weights(data):
    images, masks = data
    model = train.build_model("resnet18", seed=0)
    start = _weights(model).clone()
    bad = dataclasses.replace(PLATEAU, lr_unfrozen=1e4, check_images=60)  # 20 steps a check (10 epochs of 2)
    result = train.fine_tune(model, images, masks, bad, 0, 0, validate=_scripted([0.5] + [0.9] * 5, []))
    assert result["stop_reason"] == "diverged" and result["converged"] is False
    assert np.isnan(result["record"][-1]["val_score"]) and torch.equal(_weights(model), start)


def test_plateau_schedule_without_validation_trains_a_fixed_number_of_checks(data):
    images, masks = data
    settings = dataclasses.replace(PLATEAU, check_images=4)
    result = train.fine_tune(train.build_model("resnet18", seed=0), images, masks, settings, 0, 0)
    assert result["stop_reason"] == "fixed" and result["converged"] is None
    assert result["steps_run"] == loop.FIXED_CHECKS * 2  # one epoch (2 batches of 4) per check


def test_plateau_checks_and_keeps_the_moving_average_of_weights_and_batchnorm_statistics(data):
    images, masks = data
    shown = []

    def validate(m):
        shown.append((m, {k: v.detach().clone() for k, v in m.state_dict().items()}))
        return {"dice_lv": 0.5, "dice_my": 0.5, "score": 0.1 * len(shown)}  # improving: runs to the cap

    settings = dataclasses.replace(PLATEAU, select="last", max_checks=2)
    model = train.build_model("resnet18", seed=0)
    result = train.fine_tune(model, images, masks, settings, 0, 0, validate=validate)
    assert result["stop_reason"] == "cap" and all(m is not model for m, _ in shown)  # the average is checked
    final, last = model.state_dict(), shown[-1][1]
    assert all(torch.equal(final[k].cpu(), last[k].cpu()) for k in final)  # and kept, buffers included
    raw = train.build_model("resnet18", seed=0)  # decay 0: the average is the live model
    train.fine_tune(raw, images, masks, dataclasses.replace(settings, average_decay=0.0), 0, 0,
                    validate=_scripted([0.1, 0.2, 0.3], []))
    for name in ("encoder.bn1.running_mean", "segmentation_head.0.weight"):
        assert not torch.equal(model.state_dict()[name].cpu(), raw.state_dict()[name].cpu())


@pytest.mark.parametrize("scores, converged", [([0.1, 0.9] + [0.5] * 7, True), ([0.1 * i for i in range(9)], False)])
def test_a_fixed_schedule_is_converged_when_validation_stopped_improving_before_its_end(data, scores, converged):
    images, masks = data
    settings = dataclasses.replace(SMALL, steps_frozen=4, steps_unfrozen=4, checks=4)
    result = train.fine_tune(train.build_model("resnet18", seed=0), images, masks, settings, 0, 0,
                             validate=_scripted(scores, []))
    assert result["stop_reason"] == "schedule" and result["converged"] is converged
    assert len(result["record"]) == 9 and result["selected_step"] == 8  # select last


def test_without_validation_a_fixed_schedule_records_losses_and_leaves_convergence_unknown(data):
    images, masks = data
    result = train.fine_tune(train.build_model("resnet18", seed=0), images, masks, SMALL, 0, 0)
    assert result["converged"] is None and result["checks"] == []
    assert all(np.isnan(r["val_score"]) and np.isfinite(r["loss"]) for r in result["record"])
