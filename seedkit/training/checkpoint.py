"""Atomic, verifiable training checkpoints without pickle.

A checkpoint is a directory ``<root>/step-00000100`` holding

* ``*.safetensors``: weights (model, EMA) and torch RNG states, one file per name in
  :attr:`CheckpointPayload.tensors`;
* ``*.pt``: nested dicts/lists of tensors and plain numbers (the optimizer state), written with ``torch.save``
  and read back with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects;
* ``*.json``: everything else (step, data position, scheduler state, python / numpy RNG states);
* ``checksums.json``: SHA-256 of every other file, written last.

It is written into ``step-00000100.tmp`` and renamed into place once complete, so a crash mid-save leaves no
half-written checkpoint under a valid name. :func:`load_latest_checkpoint` verifies checksums and falls back to
the previous checkpoint, with a warning, when the newest is corrupt or partial.

Per-process files (RNG states differ per rank) are named ``<name>-rank<r>``; everything else is written by the
main process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

CHECKSUM_FILE = "checksums.json"
_STEP_PATTERN = re.compile(r"^step-(\d+)$")


class CorruptCheckpointError(RuntimeError):
    """A checkpoint directory is incomplete or its files do not match their checksums."""


class NonFiniteWeightsError(RuntimeError):
    """Refusing to save weights that contain NaN or Inf."""


@dataclass
class CheckpointPayload:
    """What a checkpoint holds, by file name stem.

    ``tensors``: flat ``name -> Tensor`` dicts (safetensors). ``objects``: nested containers of tensors and plain
    values (``torch.save``, loaded with ``weights_only=True``). ``json``: JSON-serialisable dicts.
    ``rank_local``: stems (of any kind) that every process writes for itself.
    """

    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)
    json: dict[str, Any] = field(default_factory=dict)
    rank_local: set[str] = field(default_factory=set)


def checkpoint_dir(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f"step-{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Completed (renamed) checkpoint directories, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in root.iterdir() if (match := _STEP_PATTERN.match(path.name))]
    return [path for _, path in sorted(found)]


def assert_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise NonFiniteWeightsError(f"{what} tensor {name!r} has NaN/Inf values; refusing to save it")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_name(stem: str, suffix: str, rank: int, rank_local: set[str]) -> str:
    return f"{stem}-rank{rank}{suffix}" if stem in rank_local else f"{stem}{suffix}"


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    payload: CheckpointPayload,
    keep: int | None = None,
    rank: int = 0,
    is_main_process: bool = True,
    barrier=None,
) -> Path:
    """Write ``payload`` atomically as checkpoint ``step`` under ``root``; keep the newest ``keep`` checkpoints.

    Weights in ``payload.tensors`` are checked for NaN/Inf first (:class:`NonFiniteWeightsError`). In a
    multi-process run every process calls this with its own ``rank`` and the same ``barrier`` (for example
    ``accelerator.wait_for_everyone``).
    """
    barrier = barrier or (lambda: None)
    for stem, tensors in payload.tensors.items():
        assert_finite(tensors, stem)
    final = checkpoint_dir(root, step)
    temporary = final.with_name(final.name + ".tmp")
    if is_main_process:
        if temporary.exists():
            shutil.rmtree(temporary)
        temporary.mkdir(parents=True)
    barrier()
    for stem, tensors in payload.tensors.items():
        if is_main_process or stem in payload.rank_local:
            contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
            save_file(contiguous, temporary / _file_name(stem, ".safetensors", rank, payload.rank_local))
    for stem, value in payload.objects.items():
        if is_main_process or stem in payload.rank_local:
            torch.save(value, temporary / _file_name(stem, ".pt", rank, payload.rank_local))
    for stem, value in payload.json.items():
        if is_main_process or stem in payload.rank_local:
            text = json.dumps(value, indent=1, sort_keys=True)
            (temporary / _file_name(stem, ".json", rank, payload.rank_local)).write_text(text, encoding="utf-8")
    barrier()
    if is_main_process:
        checksums = {path.name: _sha256(path) for path in sorted(temporary.iterdir())}
        (temporary / CHECKSUM_FILE).write_text(json.dumps(checksums, indent=1), encoding="utf-8")
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.replace(temporary, final)
        if keep is not None and keep > 0:
            for old in list_checkpoints(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`CorruptCheckpointError` unless every file listed in ``checksums.json`` is intact."""
    path = Path(path)
    checksum_path = path / CHECKSUM_FILE
    if not checksum_path.is_file():
        raise CorruptCheckpointError(f"{path} has no {CHECKSUM_FILE} (interrupted save?)")
    try:
        checksums = json.loads(checksum_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CorruptCheckpointError(f"{checksum_path} is not valid JSON: {error}") from error
    for name, expected in checksums.items():
        file = path / name
        if not file.is_file():
            raise CorruptCheckpointError(f"{path}: {name} is missing")
        if _sha256(file) != expected:
            raise CorruptCheckpointError(f"{path}: {name} does not match its checksum")


def read_checkpoint(path: str | os.PathLike, rank: int = 0) -> CheckpointPayload:
    """Verify and read a checkpoint directory; per-rank files are read for ``rank`` (keyed by their stem)."""
    path = Path(path)
    verify_checkpoint(path)
    payload = CheckpointPayload()
    rank_suffix = re.compile(r"^(?P<stem>.+)-rank(?P<rank>\d+)$")
    for file in sorted(path.iterdir()):
        if file.name == CHECKSUM_FILE:
            continue
        stem = file.stem
        if match := rank_suffix.match(stem):
            if int(match.group("rank")) != rank:
                continue
            stem = match.group("stem")
            payload.rank_local.add(stem)
        if file.suffix == ".safetensors":
            payload.tensors[stem] = load_file(file)
        elif file.suffix == ".pt":
            payload.objects[stem] = torch.load(file, map_location="cpu", weights_only=True)
        elif file.suffix == ".json":
            payload.json[stem] = json.loads(file.read_text(encoding="utf-8"))
    return payload


def load_latest_checkpoint(root: str | os.PathLike, rank: int = 0) -> tuple[Path, CheckpointPayload] | None:
    """The newest checkpoint under ``root`` that verifies and reads; corrupt ones are skipped with a warning."""
    for path in reversed(list_checkpoints(root)):
        try:
            return path, read_checkpoint(path, rank=rank)
        except Exception as error:  # noqa: BLE001 - any unreadable checkpoint means "use the previous one"
            message = f"checkpoint {path} is unusable ({error}); falling back to the previous checkpoint"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            logger.warning(message)
    return None
