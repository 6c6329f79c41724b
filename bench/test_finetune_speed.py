"""Fine-tuning throughput: the harness's loop against a bare smp/PyTorch loop, same model, batch,
precision, number of steps and device (the GPU where there is one, with the harness's deterministic
settings for both), all layers trainable in both (the harness's frozen-encoder stage is cheaper per step and
would flatter it). The bare loop has its data on the device and no augmentation; the ratio shows what the
harness's augmentation, batching, schedule and loss watch cost. Both use a deterministic loss (the goal's
comparison); the bare loop with F.cross_entropy is measured too (on CUDA not deterministic). Run: ``pytest bench --benchmark-only -s``;
the ratio is printed and stored in extra_info.

Two models: the default (resnet18, 128 px, half decoder) and the paper-like one (resnet34, 256 px, smp's
decoder). The paper-like one runs on a GPU, or on a CPU with ``BENCH_PAPER=1`` (minutes there).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import train
from harness.data.phantom import phantom_dataset
from harness.train.loop import summed_cross_entropy
from harness.train.settings import SMP_DECODER_CHANNELS

DEVICE = train.device()
STEPS = 150 if DEVICE.type == "cuda" else 40  # on a GPU 40 steps last ~1 s: too short to time steadily
MODELS = {
    "default": train.TrainSettings(steps_frozen=0, steps_unfrozen=STEPS),
    "paper-like": train.TrainSettings(steps_frozen=0, steps_unfrozen=STEPS, encoder="resnet34", size=256,
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


@pytest.mark.parametrize("model", list(MODELS))
def test_harness_fine_tune_loop(benchmark, phantom, model):
    settings = _settings(model)
    images, masks = phantom(settings.size)
    benchmark.pedantic(lambda net: train.fine_tune(net, images, masks, settings, 0, 1),
                       setup=lambda: ((_model(settings),), {}), rounds=5, iterations=1, warmup_rounds=1)
    _record(benchmark, model, "harness", settings)


# a deterministic loss: the harness's sums-only cross-entropy (CUDA's nll_loss2d has no deterministic kernel)
BARE_LOSSES = {"bare": summed_cross_entropy, "bare F.cross_entropy": F.cross_entropy}


@pytest.mark.parametrize("loss", list(BARE_LOSSES))
@pytest.mark.parametrize("model", list(MODELS))
def test_bare_smp_loop(benchmark, phantom, model, loss):
    """The bare loop, with a deterministic loss as the harness's ("bare": the goal's comparison) and with
    F.cross_entropy (on CUDA its nll_loss2d kernel is faster but not deterministic; on a CPU both are)."""
    settings = _settings(model)
    images, masks = phantom(settings.size)
    precision = train.resolve_precision(settings.precision, DEVICE)
    x_all = torch.from_numpy(images.astype(np.float32))[:, None].to(DEVICE)
    y_all = torch.from_numpy(train.to_classes(masks)).to(DEVICE)

    def loop(net):
        net.train()
        optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=DEVICE.type == "cuda" or None)
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

    benchmark.pedantic(loop, setup=lambda: ((_model(settings),), {}), rounds=5, iterations=1, warmup_rounds=1)
    _record(benchmark, model, loss, settings)


@pytest.mark.parametrize("model", list(MODELS))
def test_ratio(benchmark, model):
    if (model, "harness") not in RESULTS or (model, "bare") not in RESULTS:
        pytest.skip("needs both loops of this model measured in this run")
    harness, bare = RESULTS[model, "harness"], RESULTS[model, "bare"]
    plain = RESULTS.get((model, "bare F.cross_entropy"), float("nan"))
    benchmark.extra_info.update({"model": model, "harness_over_bare": round(harness / bare, 3),
                                 "harness_over_bare_f_cross_entropy": round(harness / plain, 3),
                                 "harness": round(harness, 2), "bare": round(bare, 2),
                                 "bare_f_cross_entropy": round(plain, 2)})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    where = torch.cuda.get_device_name() if DEVICE.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"\n{model} fine-tune images/s on {where}: harness {harness:.1f}, bare smp loop {bare:.1f}, "
          f"ratio {harness / bare:.2f} (bare loop with F.cross_entropy {plain:.1f}, ratio {harness / plain:.2f})")
