"""Fine-tuning throughput: the harness's loop against a bare smp/PyTorch loop, same model, batch,
precision, number of steps and device (the GPU where there is one, with the harness's deterministic
settings for both), all layers trainable in both (the harness's frozen-encoder stage is cheaper per step and
would flatter it). The bare loop has its data on the device and no augmentation; the ratio shows what the
harness's augmentation, batching, schedule and loss watch cost. Run: ``pytest bench --benchmark-only -s``;
the ratio is printed and stored in extra_info."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import train
from harness.data.phantom import phantom_dataset

STEPS = 40
SETTINGS = train.TrainSettings(steps_frozen=0, steps_unfrozen=STEPS)
DEVICE = train.device()
PRECISION = train.resolve_precision(SETTINGS.precision, DEVICE)
RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    data = phantom_dataset("target", 2, 0, SETTINGS.size, tmp_path_factory.mktemp("phantom"))
    rows = data.index.index[data.index["phase"].notna()]
    return data.images[rows], data.masks[rows]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return train.build_model(SETTINGS.encoder).to(DEVICE, memory_format=torch.channels_last)


def _record(benchmark, name: str) -> None:
    images_per_second = STEPS * SETTINGS.batch_size / benchmark.stats.stats.mean
    RESULTS[name] = images_per_second
    benchmark.extra_info.update({"images_per_second": round(images_per_second, 2), "precision": PRECISION,
                                 "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
                                 "threads": torch.get_num_threads(),
                                 "encoder": SETTINGS.encoder, "size": SETTINGS.size, "batch": SETTINGS.batch_size})


def test_harness_fine_tune_loop(benchmark, target):
    images, masks = target
    benchmark.pedantic(lambda: train.fine_tune(_model(), images, masks, SETTINGS, 0, 1),
                       rounds=3, iterations=1, warmup_rounds=1)
    _record(benchmark, "harness")


def test_bare_smp_loop(benchmark, target):
    images, masks = target
    x_all = torch.from_numpy(images.astype(np.float32))[:, None].to(DEVICE)
    y_all = torch.from_numpy(train.to_classes(masks)).to(DEVICE)

    def loop():
        model = _model()
        model.train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        for _ in range(STEPS):
            idx = torch.randint(0, len(x_all), (SETTINGS.batch_size,), generator=gen, device=DEVICE)
            x = x_all[idx].contiguous(memory_format=torch.channels_last)
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=PRECISION == "bf16"):
                loss = F.cross_entropy(model(x), y_all[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

    benchmark.pedantic(loop, rounds=3, iterations=1, warmup_rounds=1)
    _record(benchmark, "bare")


def test_ratio(benchmark):
    if set(RESULTS) != {"harness", "bare"}:
        pytest.skip("needs both loops measured in this run")
    ratio = RESULTS["harness"] / RESULTS["bare"]
    benchmark.extra_info.update({"harness_over_bare": round(ratio, 3), **{k: round(v, 2) for k, v in RESULTS.items()}})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    print(f"\nfine-tune images/s: harness {RESULTS['harness']:.1f}, bare smp loop {RESULTS['bare']:.1f}, "
          f"ratio {ratio:.2f}")
