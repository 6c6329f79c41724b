"""Fine-tuning throughput: the harness's loop against a bare smp/PyTorch loop, same model, batch,
precision, number of steps, optimiser (fused AdamW) and device (the GPU where there is one), all layers
trainable in both (the harness's frozen-encoder stage is cheaper per step and would flatter it). The bare loop
has its data on the device and no augmentation; the ratio shows what the harness's augmentation, batching,
schedule and loss watch cost. The goal's comparison uses the harness's own deterministic loss in both
(``test_ratio``: alternating rounds, the median per-round ratio); each loop is also timed apart, and the bare
loop with plain F.cross_entropy too (on CUDA not deterministic). Run: ``pytest bench --benchmark-only -s``;
the ratio is printed and stored in extra_info.

Two models: the default (resnet18, 128 px, half decoder) and the paper-like one (resnet34, 256 px, smp's
decoder). The paper-like one runs on a GPU, or on a CPU with ``BENCH_PAPER=1`` (minutes there).
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import train
from harness.data.phantom import phantom_dataset
from harness.train.loop import cross_entropy
from harness.train.settings import SMP_DECODER_CHANNELS

DEVICE = train.device()
STEPS = 150 if DEVICE.type == "cuda" else 40  # on a GPU 40 steps last ~1 s: too short to time steadily
MODELS = {
    # the fast schedule: exactly STEPS optimiser steps and nothing else (the plateau default adds checks)
    "default": train.TrainSettings(schedule="fast", select="last", steps_frozen=0, steps_unfrozen=STEPS),
    "paper-like": train.TrainSettings(schedule="fast", select="last", steps_frozen=0, steps_unfrozen=STEPS,
                                      encoder="resnet34", size=256,
                                      decoder_channels=SMP_DECODER_CHANNELS),
}
RESULTS: dict[tuple[str, str], float] = {}


def _settings(name: str) -> train.TrainSettings:
    if name == "paper-like" and DEVICE.type == "cpu" and not os.environ.get("BENCH_PAPER"):
        pytest.skip("the paper-like model is measured on a GPU (BENCH_PAPER=1 runs it on the CPU: minutes)")
    return MODELS[name]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    cache = {}

    def get(size: int):
        if size not in cache:
            data = phantom_dataset("target", 2, 0, size, tmp_path_factory.mktemp("phantom"))
            rows = data.index.index[data.index["phase"].notna()]
            cache[size] = data.images[rows], data.masks[rows]
        return cache[size]

    return get


def _model(settings: train.TrainSettings) -> torch.nn.Module:
    torch.manual_seed(0)
    return train.build_model(settings.encoder, None, settings.decoder_channels).to(
        DEVICE, memory_format=torch.channels_last)


def _record(benchmark, model: str, loop: str, settings: train.TrainSettings) -> None:
    images_per_second = STEPS * settings.batch_size / benchmark.stats.stats.mean
    RESULTS[model, loop] = images_per_second
    benchmark.extra_info.update({"images_per_second": round(images_per_second, 2),
                                 "precision": train.resolve_precision(settings.precision, DEVICE),
                                 "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
                                 "threads": torch.get_num_threads(), "encoder": settings.encoder,
                                 "size": settings.size, "batch": settings.batch_size})


def _harness_loop(settings: train.TrainSettings, images: np.ndarray, masks: np.ndarray):
    def loop(net: torch.nn.Module) -> None:
        train.fine_tune(net, images, masks, settings, 0, 1)
    return loop


# the bare loop's loss: the harness's own (deterministic on this device: F.cross_entropy on a CPU, the sums-only
# form on CUDA, whose nll_loss2d has no deterministic kernel) -- the goal's comparison -- and plain F.cross_entropy
BARE_LOSSES = {"bare": cross_entropy, "bare F.cross_entropy": F.cross_entropy}


def _bare_loop(settings: train.TrainSettings, images: np.ndarray, masks: np.ndarray, loss: str):
    precision = train.resolve_precision(settings.precision, DEVICE)
    x_all = torch.from_numpy(images.astype(np.float32))[:, None].to(DEVICE)
    y_all = torch.from_numpy(train.to_classes(masks)).to(DEVICE)

    def loop(net: torch.nn.Module) -> None:
        net.train()
        optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        for _ in range(STEPS):
            idx = torch.randint(0, len(x_all), (settings.batch_size,), generator=gen, device=DEVICE)
            x = x_all[idx].contiguous(memory_format=torch.channels_last)
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                value = BARE_LOSSES[loss](net(x), y_all[idx])
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            optimiser.step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
    return loop


@pytest.mark.parametrize("model", list(MODELS))
def test_harness_fine_tune_loop(benchmark, phantom, model):
    settings = _settings(model)
    benchmark.pedantic(_harness_loop(settings, *phantom(settings.size)),
                       setup=lambda: ((_model(settings),), {}), rounds=5, iterations=1, warmup_rounds=1)
    _record(benchmark, model, "harness", settings)


@pytest.mark.parametrize("loss", list(BARE_LOSSES))
@pytest.mark.parametrize("model", list(MODELS))
def test_bare_smp_loop(benchmark, phantom, model, loss):
    settings = _settings(model)
    benchmark.pedantic(_bare_loop(settings, *phantom(settings.size), loss),
                       setup=lambda: ((_model(settings),), {}), rounds=5, iterations=1, warmup_rounds=1)
    _record(benchmark, model, loss, settings)


ROUNDS = 6


@pytest.mark.parametrize("model", list(MODELS))
def test_ratio(benchmark, phantom, model):
    """The goal's ratio, harness over bare loop (the harness's loss), from rounds that alternate the two loops
    (order swapped every round) so that a machine whose speed drifts within the run -- this 2-core VM's does,
    by 10 % -- weighs on both alike: the median of the per-round ratios, after one warm-up round."""
    settings = _settings(model)
    loops = {"harness": _harness_loop(settings, *phantom(settings.size)),
             "bare": _bare_loop(settings, *phantom(settings.size), "bare")}
    seconds: dict[str, list[float]] = {"harness": [], "bare": []}
    for round_ in range(ROUNDS + 1):
        for name in (("harness", "bare") if round_ % 2 else ("bare", "harness")):
            net = _model(settings)
            started = time.perf_counter()
            loops[name](net)
            seconds[name].append(time.perf_counter() - started)
    ratios = [bare / harness for harness, bare in zip(seconds["harness"][1:], seconds["bare"][1:])]
    ratio = float(np.median(ratios))
    benchmark.extra_info.update({"model": model, "harness_over_bare": round(ratio, 3),
                                 "per_round": [round(r, 3) for r in ratios],
                                 "harness_images_per_second": round(STEPS * settings.batch_size
                                                                    / float(np.median(seconds["harness"][1:])), 2)})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    where = torch.cuda.get_device_name() if DEVICE.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    separate = ""
    if (model, "harness") in RESULTS and (model, "bare F.cross_entropy") in RESULTS:
        separate = (f"; measured apart: harness {RESULTS[model, 'harness']:.1f} img/s, bare {RESULTS[model, 'bare']:.1f}, "
                    f"bare with F.cross_entropy {RESULTS[model, 'bare F.cross_entropy']:.1f}")
    print(f"\n{model} fine-tune on {where}: harness/bare {ratio:.3f} (median of {ROUNDS} alternating rounds: "
          f"{', '.join(f'{r:.3f}' for r in ratios)}){separate}")
