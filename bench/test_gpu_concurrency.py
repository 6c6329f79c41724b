"""Several fine-tunes at once on one GPU: aggregate images/s and SM utilisation at K = 1, 2, 4, 8, 16
concurrent worker processes, for the default model and the paper-like one; and that a fine-tune's result
does not change when it trains beside others. Skips without a GPU. Run on a GPU machine:

    pytest bench/test_gpu_concurrency.py --benchmark-only -s

16 worker processes are spawned once per model (1 CPU thread each, as the local executor's workers; data
and augmentation on the GPU). For each K a barrier starts the first K together; each trains the same
fine-tune (its own seed) and reports its rate and a hash of its final weights. Worker 0 trains the same seed
at every K, so its hash must be the same alone (K = 1) and beside 15 others (K = 16).
"""
from __future__ import annotations

import hashlib
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


def _worker(model: dict, index: int, barrier, results) -> None:
    import numpy as np

    torch.set_num_threads(1)
    from harness import train
    from harness.train.settings import TrainSettings

    def settings(steps: int) -> TrainSettings:
        return TrainSettings(encoder=model["encoder"], size=model["size"], decoder_channels=model["decoder"],
                             schedule="fast", select="last", steps_frozen=0, steps_unfrozen=steps)

    rng = np.random.default_rng(index)
    images = rng.random((64, model["size"], model["size"])).astype(np.float16)
    masks = (rng.random((64, model["size"], model["size"])) * 3).astype(np.uint8)
    net = train.build_model(model["encoder"], None, model["decoder"], seed=index)
    train.fine_tune(net, images, masks, settings(WARMUP), index, index)  # warm-up: kernels, allocator
    torch.cuda.synchronize()
    for k in KS:
        net = train.build_model(model["encoder"], None, model["decoder"], seed=index)
        barrier.wait()
        if index >= k:
            continue
        started = time.perf_counter()
        train.fine_tune(net, images, masks, settings(STEPS), index, index)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        digest = hashlib.sha256()
        for value in net.state_dict().values():
            digest.update(value.detach().float().cpu().numpy().tobytes())
        results.put((k, index, STEPS * 8 / seconds, digest.hexdigest()[:12]))
    barrier.wait()


def _utilisation(stop: threading.Event, samples: list[float]) -> None:
    while not stop.wait(0.25):
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            samples.append(float(out.stdout.split()[0]))


@pytest.mark.parametrize("name", list(MODELS))
def test_concurrent_fine_tunes(benchmark, name):
    spawn = multiprocessing.get_context("spawn")
    workers = max(KS)
    barrier, results = spawn.Barrier(workers + 1), spawn.Queue()
    processes = [spawn.Process(target=_worker, args=(MODELS[name], i, barrier, results)) for i in range(workers)]
    for p in processes:
        p.start()
    rows, hashes = [], {}
    for k in KS:
        barrier.wait(timeout=900)
        stop, samples = threading.Event(), []
        watcher = threading.Thread(target=_utilisation, args=(stop, samples))
        watcher.start()
        reports = [results.get(timeout=900) for _ in range(k)]
        stop.set()
        watcher.join()
        rates = [r[2] for r in reports]
        hashes[k] = {r[1]: r[3] for r in reports}
        rows.append({"K": k, "aggregate_img_s": round(sum(rates), 1), "per_worker_img_s": round(sum(rates) / k, 1),
                     "sm_util_mean": round(sum(samples) / max(len(samples), 1), 1),
                     "sm_util_max": max(samples, default=0.0)})
        print(f"\n{torch.cuda.get_device_name()} | {name} | K={k}: {rows[-1]}", file=sys.stderr)
    barrier.wait(timeout=900)
    for p in processes:
        p.join()
    same = len({hashes[k][0] for k in KS}) == 1
    print(f"\nworker 0's weights after the same fine-tune at K = {', '.join(map(str, KS))}: "
          f"{'identical' if same else 'DIFFERENT: ' + str({k: hashes[k][0] for k in KS})}", file=sys.stderr)
    benchmark.extra_info.update({"gpu": torch.cuda.get_device_name(), "model": name, "sweep": rows,
                                 "speedup_best_over_k1": round(max(r["aggregate_img_s"] for r in rows)
                                                               / rows[0]["aggregate_img_s"], 2),
                                 "same_result_alone_and_beside_others": same, "cpus": os.cpu_count()})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert same, "a fine-tune's result changed when it trained beside others"
