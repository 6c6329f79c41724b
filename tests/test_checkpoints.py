"""Checkpoints and inits: safe loading, cards, plain state_dicts, head mapping, fingerprints and seeding."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from harness import train
from harness.errors import UsageError
from harness.inits import parse_inits
from harness.train.model import architecture, parse_classes, tensor_fingerprint


def _weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()])


@pytest.fixture(scope="module")
def small():
    return train.build_model("resnet18", seed=0)


def test_harness_checkpoint_round_trips_with_its_card(tmp_path, small):
    card = {"architecture": architecture("resnet18", train.DECODER_CHANNELS, 128), "training": {"data": "x"}}
    train.save_checkpoint(small, tmp_path / "m.pt", card)
    assert (tmp_path / "m.json").exists() and not list(tmp_path.glob(".*tmp"))
    checkpoint = train.read_checkpoint(tmp_path / "m.pt")
    assert checkpoint.architecture["encoder"] == "resnet18" and checkpoint.classes == train.CLASSES
    model = train.model_from_checkpoint(checkpoint, "resnet18", train.DECODER_CHANNELS)
    assert torch.equal(_weights(model), _weights(small))
    assert checkpoint.fingerprint == checkpoint.card["fingerprint"]


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.write_text, (marker, "code ran"))

    for name, save in (("zip.pt", lambda obj, f: torch.save(obj, f)),
                       ("legacy.pt", lambda obj, f: f.write_bytes(pickle.dumps(obj, protocol=2)))):
        path = tmp_path / name
        save({"state_dict": {"w": torch.zeros(1)}, "payload": Evil()}, path)
        with pytest.raises(UsageError, match="was refused: it holds Python objects .* could run code"):
            train.read_checkpoint(path)
        assert not marker.exists(), f"{name}: loading ran code"


def test_plain_state_dict_loads_and_a_wrong_architecture_names_keys_and_the_fix(tmp_path, small):
    path = tmp_path / "plain.pt"
    torch.save({f"module.{k}": v for k, v in small.state_dict().items()}, path)  # DataParallel prefix too
    checkpoint = train.read_checkpoint(path)
    assert checkpoint.card is None
    assert torch.equal(_weights(train.model_from_checkpoint(checkpoint, "resnet18", train.DECODER_CHANNELS)),
                       _weights(small))
    with pytest.raises(UsageError) as error:
        train.model_from_checkpoint(checkpoint, "resnet18", (256, 128, 64, 32, 16))
    message = str(error.value)
    assert "mismatched keys, first: decoder." in message and "checkpoint (" in message and "vs model (" in message
    assert "it fits --encoder resnet18 --decoder-channels 128,64,32,16,16" in message


def test_a_four_class_head_is_mapped_by_name_or_refused(tmp_path):
    four = train.build_model("resnet18", classes=4, seed=1)  # ACDC order: background, RV, MY, LV
    path = tmp_path / "acdc4.pt"
    torch.save(four.state_dict(), path)
    with pytest.raises(UsageError, match="head with 4 classes .* --checkpoint-classes"):
        train.read_checkpoint(path)
    checkpoint = train.read_checkpoint(path, parse_classes("background,rv,my,lv"))
    head = four.state_dict()["segmentation_head.0.weight"]
    mapped = checkpoint.state_dict["segmentation_head.0.weight"]
    assert torch.equal(mapped[0], head[0]) and torch.equal(mapped[1], head[3]) and torch.equal(mapped[2], head[2])
    train.model_from_checkpoint(checkpoint, "resnet18", train.DECODER_CHANNELS)  # fits a 3-class U-Net
    with pytest.raises(UsageError, match="has no MY class"):
        train.read_checkpoint(path, parse_classes("background,rv,lv,rv"))


@pytest.mark.parametrize("content, reason", [(None, "does not exist"), (b"hello, I am text", "not a PyTorch"),
                                             ("truncated", "truncated or corrupt")])
def test_missing_foreign_or_truncated_files_get_one_clear_line(tmp_path, small, content, reason):
    path = tmp_path / "x.pt"
    if content == "truncated":
        torch.save(small.state_dict(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UsageError, match=reason) as error:
        train.read_checkpoint(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_fingerprint_is_the_tensors_not_the_file(tmp_path, small):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(small.state_dict(), a)
    torch.save({"state_dict": small.state_dict(), "epoch": 3}, b)  # another wrapper, same tensors
    assert train.read_checkpoint(a).fingerprint == train.read_checkpoint(b).fingerprint
    changed = dict(small.state_dict())
    changed["segmentation_head.0.bias"] = changed["segmentation_head.0.bias"] + 1e-3
    torch.save(changed, a)
    assert train.read_checkpoint(a).fingerprint != train.read_checkpoint(b).fingerprint
    assert tensor_fingerprint(small.state_dict()) == train.read_checkpoint(b).fingerprint


def test_the_init_seed_draws_random_weights_and_nothing_else():
    one, again, two = (train.build_model("resnet18", seed=s) for s in (1, 1, 2))
    assert torch.equal(_weights(one), _weights(again))
    assert not torch.equal(_weights(one), _weights(two))
    state = torch.random.get_rng_state()
    train.build_model("resnet18", seed=3)
    assert torch.equal(state, torch.random.get_rng_state()), "building a model must not move the global generator"


def test_init_names_and_errors():
    inits = parse_inits("source,checkpoint:models/acdc v2.pt,imagenet,random")
    assert [i.name for i in inits] == ["source", "ckpt-acdc-v2", "imagenet", "random"]
    assert [i.has_base for i in inits] == [True, True, False, False]
    for bad, match in (("checkpoint", "needs a path"), ("imagnet", "not known"), ("random,random", "twice"),
                       ("", "empty")):
        with pytest.raises(UsageError, match=match):
            parse_inits(bad)


def test_a_runs_init_stream_seeds_random_weights_but_not_a_checkpoints(tmp_path, small):
    from harness.grid import StudySettings, stream_seeds
    from harness.runner import Study
    from harness.store import RunSpec

    path = tmp_path / "lab.pt"
    train.save_checkpoint(small, path, {"architecture": architecture("resnet18", train.DECODER_CHANNELS, 128)})
    study = Study(StudySettings(inits=(f"checkpoint:{path}", "random")), store=None, cache=tmp_path)
    settings = train.TrainSettings()

    def start(init: str, seed: int) -> torch.Tensor:
        fingerprint = study.checkpoints["ckpt-lab"].fingerprint if init == "ckpt-lab" else "random"
        spec = RunSpec(strategy="ed_es", n=1, seed=seed, fold=0, params={}, streams=stream_seeds(seed), dataset="d",
                       split={}, init=init, init_fingerprint=fingerprint, train=settings.to_dict())
        return _weights(study.initial_model(spec, settings))

    assert torch.equal(start("ckpt-lab", 0), start("ckpt-lab", 1)) and torch.equal(start("ckpt-lab", 0), _weights(small))
    assert torch.equal(start("random", 0), start("random", 0))
    assert not torch.equal(start("random", 0), start("random", 1))


def test_imagenet_init_fails_fast_offline(capsys, tmp_path):
    from harness.cli import main

    assert main(["run", "--init", "imagenet", "--out", str(tmp_path / "s"), "--cache-dir", str(tmp_path)]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err


def test_tuning_storage_can_be_a_journal_file_for_shared_filesystems(tmp_path):
    import optuna

    from harness.tune import storage_for

    storage = storage_for(f"journal:{tmp_path / 'tune.log'}", tmp_path)
    study = optuna.create_study(study_name="x", storage=storage, load_if_exists=True)
    study.optimize(lambda trial: trial.suggest_float("a", 0, 1), n_trials=2)
    again = optuna.load_study(study_name="x", storage=storage_for(f"journal:{tmp_path / 'tune.log'}", tmp_path))
    assert len(again.trials) == 2 and (tmp_path / "tune.log").stat().st_size > 0
    assert storage_for(None, tmp_path).startswith("sqlite:///")
