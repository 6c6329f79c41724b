"""The U-Net, its initialisations and checkpoints: the only module that imports segmentation_models_pytorch.

Checkpoints are read with ``torch.load(weights_only=True)`` only, so a file cannot run code when it is
loaded. The harness writes its own as ``{"harness_checkpoint": 1, "state_dict": ..., "card": ...}`` with the
model card (architecture, classes, input preparation, provenance, validation Dice, versions) also written
beside it as JSON; a plain ``state_dict`` of an smp U-Net saved elsewhere loads too.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.errors import UsageError
from harness.train.settings import CLASSES, DECODER_CHANNELS, SMP_DECODER_CHANNELS

FORMAT_KEY = "harness_checkpoint"
HEAD = "segmentation_head.0"  # smp's final convolution: one output channel per class
CLASS_ALIASES = {"background": "background", "bg": "background", "lv": "LV", "lv blood pool": "LV",
                 "lv cavity": "LV", "my": "MY", "myo": "MY", "myocardium": "MY", "lv myocardium": "MY",
                 "rv": "RV", "rv cavity": "RV"}
INPUT_PREPARATION = {"padding": "zero-padded to a centred square, then resampled (linear) to size x size",
                     "normalisation": "per image: scaled to [0, 1] between its 1st and 99th intensity percentiles",
                     "channels": 1}


def device() -> torch.device:
    """The GPU when there is one, set up for run-to-run reproducible kernels; else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    # Deterministic cuBLAS/cuDNN choices, so a recorded seed reproduces a run. Ops without a
    # deterministic CUDA kernel (e.g. nearest-upsampling backward) warn instead of failing.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device("cuda")


def resolve_precision(precision: str, dev: torch.device | None = None) -> str:
    """'auto' picks bf16 on a GPU with bf16 or a CPU with native bf16 instructions, else fp32."""
    if precision in ("bf16", "fp32"):
        return precision
    if precision != "auto":
        raise UsageError(f"precision must be bf16, fp32 or auto, got '{precision}'")
    dev = dev or device()
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "fp32"
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def check_weights_reachable(encoder_weights: str | None) -> None:
    """Fail in seconds, not after minutes of retries, when pretrained weights cannot be downloaded."""
    if not encoder_weights:
        return
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise UsageError(
            f"encoder weights '{encoder_weights}' must be downloaded but HF_HUB_OFFLINE is set; "
            "unset it, or use --encoder-weights none / another --init"
        )
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError as exc:
        raise UsageError(
            f"encoder weights '{encoder_weights}' must be downloaded from huggingface.co, which is not "
            f"reachable ({exc.__class__.__name__}); connect to the network or use --encoder-weights none / "
            "another --init"
        ) from None


def build_model(encoder: str, encoder_weights: str | None = None,
                decoder_channels: tuple[int, ...] = DECODER_CHANNELS, classes: int = len(CLASSES),
                seed: int | None = None) -> torch.nn.Module:
    """An smp U-Net. With ``seed`` every randomly initialised weight comes from that seed alone (the
    global torch generator is forked, so nothing outside sees the draw)."""
    import segmentation_models_pytorch as smp

    check_weights_reachable(encoder_weights)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            return smp.Unet(encoder, encoder_weights=encoder_weights, in_channels=1, classes=classes,
                            decoder_channels=tuple(decoder_channels))
        except (KeyError, ValueError) as exc:
            raise UsageError(f"segmentation_models_pytorch cannot build encoder '{encoder}': {exc}") from None


@dataclass(frozen=True)
class Checkpoint:
    """Weights read from a file, mapped to the harness's classes, with the card when the harness wrote it."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    card: dict[str, Any] | None
    classes: tuple[str, ...]  # the file's head classes, in its order
    fingerprint: str  # hash of the mapped tensors: a changed file gives a new one

    @property
    def architecture(self) -> dict[str, Any] | None:
        return None if self.card is None else self.card["architecture"]


def tensor_fingerprint(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:12]


def _read(path: Path) -> Any:
    """torch.load with weights_only=True, its failures turned into one line each."""
    import pickle

    if not path.exists():
        raise UsageError(f"checkpoint '{path}' does not exist; give the path of a .pt file after 'checkpoint:'")
    if not path.is_file():
        raise UsageError(f"checkpoint '{path}' is a folder, not a file; give the .pt file inside it")
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head.startswith(b"PK") and not head.startswith(b"\x80"):
        raise UsageError(f"checkpoint '{path}' is not a PyTorch checkpoint (it does not start like a torch.save "
                         "file); give a file written by torch.save or `harness pretrain`")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise UsageError(
            f"checkpoint '{path}' was refused: it holds Python objects other than tensors and plain containers, "
            f"which could run code when loaded ({first}). Only weights are loaded (weights_only=True); re-save it "
            "with torch.save(model.state_dict(), PATH)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        text = str(exc).lower()
        what = "truncated or corrupt" if any(w in text for w in ("central directory", "eof", "zip", "truncat",
                                                                   "failed reading", "unexpected")) \
            else "not a readable PyTorch checkpoint"
        raise UsageError(f"checkpoint '{path}' is {what} ({exc.__class__.__name__}); copy it again or re-save "
                         "it with torch.save") from None


def _state_of(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The tensors and (for the harness's own files) the card, from whatever torch.load returned."""
    card = None
    if isinstance(obj, dict) and FORMAT_KEY in obj:
        card = obj.get("card")
        obj = obj["state_dict"]
    elif isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):  # common wrappers of other trainers
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"checkpoint '{path}' holds no state_dict (a mapping of parameter names to tensors); "
                         "save one with torch.save(model.state_dict(), PATH)")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}  # DataParallel
    return state, card


def parse_classes(text: str) -> tuple[str, ...]:
    names = []
    for part in text.split(","):
        name = CLASS_ALIASES.get(part.strip().lower())
        if name is None:
            raise UsageError(f"--checkpoint-classes: '{part.strip()}' is not a class the harness knows; use "
                             "background, lv, my, rv in the order of the checkpoint's head, e.g. "
                             "background,rv,my,lv for ACDC's label order")
        names.append(name)
    return tuple(names)


def read_checkpoint(path: Path, classes: tuple[str, ...] | None = None) -> Checkpoint:
    """``_read_checkpoint`` once per file version: a study (and its CLI) asks for the same file many times;
    the key holds the file's size and modification time, so a changed file is read (and hashed) again."""
    path = Path(path)
    try:
        stat = path.stat()
        version = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        version = None  # _read_checkpoint says what is wrong
    return _read_checkpoint(path.resolve(), classes, version)


@functools.lru_cache(maxsize=8)
def _read_checkpoint(path: Path, classes: tuple[str, ...] | None, version: tuple[int, int] | None) -> Checkpoint:
    """Read a checkpoint and map its head to (background, LV, MY).

    The head mapping rule: a head whose classes are named (the harness's card, or ``classes`` for a plain
    state_dict, e.g. background, RV, MY, LV) keeps the output channels of background, LV and MY, in that
    order, and drops the others (RV becomes background, as in training). A plain state_dict with three
    outputs is taken as (background, LV, MY); with another number it is refused unless ``classes`` names them.
    """
    path = Path(path)
    state, card = _state_of(_read(path), path)
    head = state.get(f"{HEAD}.weight")
    if head is None:
        raise UsageError(f"checkpoint '{path}' has no '{HEAD}.weight': it is not an smp U-Net "
                         f"(first keys: {', '.join(list(state)[:3])})")
    outputs = int(head.shape[0])
    if card is not None and "classes" in card.get("architecture", {}):
        named = tuple(CLASS_ALIASES.get(str(c).lower(), str(c)) for c in card["architecture"]["classes"])
    elif classes is not None:
        named = classes
    elif outputs == len(CLASSES):
        named = CLASSES
    else:
        raise UsageError(
            f"checkpoint '{path}' has a head with {outputs} classes and does not say what they are; name them "
            f"in head order with --checkpoint-classes (e.g. background,rv,my,lv for ACDC's order), and the "
            "harness keeps background, LV and MY")
    if len(named) != outputs:
        raise UsageError(f"checkpoint '{path}': its head has {outputs} classes but {len(named)} were named "
                         f"({', '.join(named)}); name one per output channel")
    missing = [c for c in CLASSES if c not in named]
    if missing:
        raise UsageError(f"checkpoint '{path}': its head has no {', '.join(missing)} class ({', '.join(named)}); "
                         "the harness needs background, LV and MY")
    if named != CLASSES:
        rows = torch.tensor([named.index(c) for c in CLASSES])
        state = dict(state)
        state[f"{HEAD}.weight"] = state[f"{HEAD}.weight"][rows].clone()
        if f"{HEAD}.bias" in state:
            state[f"{HEAD}.bias"] = state[f"{HEAD}.bias"][rows].clone()
    return Checkpoint(path, state, card, named, tensor_fingerprint(state))


def _mismatches(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    own = model.state_dict()
    out = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
           for k in own if k in state and state[k].shape != own[k].shape]
    out += [f"{k}: missing from the checkpoint" for k in own if k not in state]
    out += [f"{k}: not in the model" for k in state if k not in own]
    return out


def _guess_architecture(state: dict[str, torch.Tensor]) -> str:
    """The common encoder/decoder pair whose U-Net the tensors fit, for the error message."""
    for encoder in ("resnet18", "resnet34", "resnet50"):
        for decoder in (DECODER_CHANNELS, SMP_DECODER_CHANNELS):
            if not _mismatches(build_model(encoder, decoder_channels=decoder), state):
                return f"it fits --encoder {encoder} --decoder-channels {','.join(map(str, decoder))}"
    return "it fits none of resnet18/34/50 with the harness's or smp's default decoder"


def model_from_checkpoint(checkpoint: Checkpoint, encoder: str, decoder_channels: tuple[int, ...]) -> torch.nn.Module:
    """A U-Net of the given architecture holding the checkpoint's weights, or one clear line saying why not."""
    model = build_model(encoder, decoder_channels=decoder_channels)
    problems = _mismatches(model, checkpoint.state_dict)
    if problems:
        shown = "; ".join(problems[:3])
        raise UsageError(
            f"checkpoint '{checkpoint.path}' does not fit a U-Net with encoder {encoder} and decoder widths "
            f"{','.join(map(str, decoder_channels))}: {len(problems)} mismatched keys, first: {shown}. "
            f"{_guess_architecture(checkpoint.state_dict)}; pass the --encoder and --decoder-channels it was "
            "trained with")
    model.load_state_dict(checkpoint.state_dict)
    return model


def save_checkpoint(model: torch.nn.Module, path: Path, card: dict[str, Any]) -> None:
    """Write the weights and the card atomically (temporary files, then rename), the card also as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    card = json.loads(json.dumps({**card, "fingerprint": tensor_fingerprint(state)}, default=str))  # plain JSON types
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({FORMAT_KEY: 1, "state_dict": state, "card": card}, tmp)
    card_tmp = path.with_name(f".{path.stem}.json.{os.getpid()}.tmp")
    card_tmp.write_text(json.dumps(card, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
    card_tmp.replace(card_path(path))


def card_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("cine-harness", "torch", "segmentation-models-pytorch"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def architecture(encoder: str, decoder_channels: tuple[int, ...], size: int) -> dict[str, Any]:
    return {"arch": "smp.Unet", "encoder": encoder, "decoder_channels": list(decoder_channels), "in_channels": 1,
            "classes": list(CLASSES), "size": size, "input": INPUT_PREPARATION}
