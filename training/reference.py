"""Reference log-probs: the frozen base model's summed response log-probs, computed once and cached on disk.

π_ref does not depend on λ or on training, so DPO needs log π_ref(y|x) once per pair, not once per
step (ours; exact). The cache key is a hash of everything the numbers depend on: the base model
(fingerprint and a sample of its weights), the exact token ids of every pair (so the data file, the
chat template and the truncation settings are all in it), the dtype and the autocast setting. A
stale entry has another key and is never found; a damaged one is recomputed.

Read-only folders of precomputed entries (e.g. benchmarks/reference-logps, committed for the shipped data
on the embedded model) can be named in $PANACEA_REFERENCE_LOGPS (os.pathsep-separated); they are read when
the cache misses, under the same key, and never written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from panacea.adapters import PanaceaModel
from panacea.adapters.serialization import base_model_fingerprint
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from panacea._io import atomic_file
from panacea.base_model import cache_dir, env_paths
from panacea.data import TokenizedPair

from .logprobs import collate_pairs, response_log_probs

logger = logging.getLogger(__name__)

SEED_DIRS_ENV = "PANACEA_REFERENCE_LOGPS"  # read-only folders of precomputed entries, searched after the cache
ADAPTER_KEYS = ("lora_A", "lora_B", "singular_values", "preference_scale")
_DIGEST_SAMPLES = 4096  # values read from each base weight for the cache key


def reference_cache_key(model: PanaceaModel, pairs: Sequence[TokenizedPair], settings: dict) -> str:
    """sha256 of the base model (fingerprint + strided weight sample), every pair's token ids and `settings`.

    Adapter weights are left out (Panacea's and peft's, whose names hold 'lora_'): a PanaceaModel, a
    rewarded-soups LoRA and a SoupModel on the same base model share their reference log-probs.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(base_model_fingerprint(model.base_model), sort_keys=True).encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    update_with_base_weights(digest, model)
    update_with_pairs(digest, pairs)
    return digest.hexdigest()


def base_model_digest(model) -> str:
    """sha256 of the base model under `model`'s adapters (fingerprint + strided weight sample): it tells a changed
    base behind the same name apart (the eval point cache's key holds it; the reference key hashes the same)."""
    digest = hashlib.sha256(json.dumps(base_model_fingerprint(model.base_model), sort_keys=True).encode())
    update_with_base_weights(digest, model)
    return digest.hexdigest()


def update_with_base_weights(digest, model) -> None:
    """Feed `digest` a sample of the base model's weights, without Panacea's and peft's adapter weights."""
    weights = model.base_model.named_parameters()
    update_with_weights(
        digest, ((n, p) for n, p in weights if "lora_" not in n and n.rsplit(".", 1)[-1] not in ADAPTER_KEYS)
    )


def update_with_weights(digest, named_parameters: Iterable[tuple[str, Tensor]]) -> None:
    """Feed `digest` each weight's name, shape and a strided sample of its values (the model part of a cache key)."""
    for name, parameter in named_parameters:
        flat = parameter.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // _DIGEST_SAMPLES)].float().cpu().numpy()
        digest.update(name.encode() + str(tuple(parameter.shape)).encode() + sample.tobytes())


def update_with_pairs(digest, pairs: Sequence[TokenizedPair]) -> None:
    """Feed `digest` every pair's token ids (the data part of a cache key: file, template and truncation)."""
    for pair in pairs:  # separators keep ([1, 2], [3]) and ([1], [2, 3]) apart
        ids = [*pair.prompt_ids, -1, *pair.chosen_ids, -2, *pair.rejected_ids, -3]
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())


def reference_log_probs(
    model: PanaceaModel,
    pairs: Sequence[TokenizedPair],
    *,
    pad_token_id: int,
    batch_size: int,
    settings: dict,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    folder: str | os.PathLike | None = None,
) -> Tensor:
    """log π_ref(y_w|x), log π_ref(y_l|x) for every pair, shape (pairs, 2), from the cache or computed now.

    `settings` (dtype, autocast, …) join the cache key; `folder` defaults to <panacea cache>/reference-logps.
    The folders of $PANACEA_REFERENCE_LOGPS are read after it; a computed entry is written to `folder` only.
    """
    key = reference_cache_key(model, pairs, settings)
    path = Path(folder or cache_dir() / "reference-logps") / f"{key}.safetensors"
    for candidate in (path, *(seed / path.name for seed in seed_dirs())):
        cached = _read(candidate, key, len(pairs))
        if cached is not None:
            logger.info("reference log-probs for %d pairs: read from %s", len(pairs), candidate)
            return cached
    logger.info("reference log-probs for %d pairs: computing once (cache %s)", len(pairs), path.name[:12])
    logps = compute_log_probs(
        model, pairs, pad_token_id=pad_token_id, batch_size=batch_size, autocast=autocast, reference=True
    )
    _write(path, key, logps)
    return logps


def seed_dirs() -> list[Path]:
    """The read-only folders of precomputed reference log-probs named in $PANACEA_REFERENCE_LOGPS."""
    return env_paths(SEED_DIRS_ENV)


@torch.no_grad()
def compute_log_probs(
    model: PanaceaModel,
    pairs: Sequence[TokenizedPair],
    *,
    pad_token_id: int,
    batch_size: int,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    reference: bool = False,
    preference: Tensor | None = None,
) -> Tensor:
    """Summed response log-probs (pairs, 2) of chosen and rejected, in eval mode, batched by length.

    `reference=True` disables the adapter (the base model); otherwise `preference` (m,) is used.
    """
    was_training = model.training
    model.eval()
    order = sorted(range(len(pairs)), key=lambda index: _length(pairs[index]))  # similar lengths pad less
    result = torch.empty(len(pairs), 2)
    context = model.disable_adapter() if reference else contextlib.nullcontext()
    try:
        with context:
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                batch = collate_pairs([pairs[i] for i in indices], pad_token_id).to(model.device)
                kwargs = {} if reference or preference is None else {"preference": preference}
                with autocast():
                    logps = response_log_probs(model, batch, **kwargs).float().cpu()  # (2·batch,)
                result[indices] = logps.view(2, len(indices)).T
    finally:
        model.train(was_training)
    return result


def _length(pair: TokenizedPair) -> int:
    return len(pair.prompt_ids) + max(len(pair.chosen_ids), len(pair.rejected_ids))


def _read(path: Path, key: str, num_pairs: int) -> Tensor | None:
    if not path.is_file():
        return None
    try:
        logps = load_file(path)["logps"]
    except (SafetensorError, OSError, KeyError) as error:
        logger.warning("reference cache %s is unreadable (%s); recomputing it.", path, error)
        return None
    if logps.shape != (num_pairs, 2) or not torch.isfinite(logps).all():
        logger.warning("reference cache %s does not fit these %d pairs; recomputing it.", path, num_pairs)
        return None
    return logps


def _write(path: Path, key: str, logps: Tensor) -> None:
    """Write atomically (temporary file + rename): readers see the old file, the new one, or none."""
    with atomic_file(path) as temporary:
        save_file({"logps": logps.contiguous()}, temporary, metadata={"key": key})
