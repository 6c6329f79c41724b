"""Where a fine-tune step's time goes: the harness's loop and the bare loop of bench/test_finetune_speed.py
under torch.profiler, top operators by device (or CPU) time. Not a benchmark; a tool for finding overhead.

    python bench/profile_fine_tune.py [default|paper-like] [steps]
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, "bench")
from test_finetune_speed import DEVICE, MODELS, _model  # noqa: E402

from harness import train  # noqa: E402
from harness.train.loop import cross_entropy  # noqa: E402
from harness.train.settings import TrainSettings  # noqa: E402


def main(name: str = "paper-like", steps: int = 20) -> None:
    import dataclasses

    settings: TrainSettings = dataclasses.replace(MODELS[name], steps_unfrozen=steps)
    rng = np.random.default_rng(0)
    images = rng.random((40, settings.size, settings.size)).astype(np.float16)
    masks = (rng.random((40, settings.size, settings.size)) * 3).astype(np.uint8)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])
    sort = "cuda_time_total" if DEVICE.type == "cuda" else "cpu_time_total"

    def harness_loop():
        train.fine_tune(_model(settings), images, masks, settings, 0, 1)

    x_all = torch.from_numpy(images.astype(np.float32))[:, None].to(DEVICE)
    y_all = torch.from_numpy(train.to_classes(masks)).to(DEVICE)

    def bare_loop():
        net = _model(settings)
        optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        for _ in range(steps):
            idx = torch.randint(0, len(x_all), (settings.batch_size,), generator=gen, device=DEVICE)
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16,
                                enabled=train.resolve_precision(settings.precision, DEVICE) == "bf16"):
                value = cross_entropy(net(x_all[idx].contiguous(memory_format=torch.channels_last)), y_all[idx])
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            optimiser.step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    for label, loop in (("harness", harness_loop), ("bare", bare_loop)):
        loop()  # warm-up
        with profile(activities=activities) as prof:
            loop()
        print(f"\n===== {label} loop, {name}, {steps} steps on {DEVICE}")
        print(prof.key_averages().table(sort_by=sort, row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "paper-like", int(sys.argv[2]) if len(sys.argv) > 2 else 20)
