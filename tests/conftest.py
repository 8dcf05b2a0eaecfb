"""Shared fixtures: tiny random models built from a config, and the embedded model for integration tests."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from panacea.training.reference import SEED_DIRS_ENV
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from panacea import PanaceaConfig, PanaceaModel, get_panacea_model
from panacea.base_model import CACHE_DIR_ENV, CACHE_SEEDS_ENV, SEEDED_KINDS, cache_dir

os.environ.pop(SEED_DIRS_ENV, None)  # no committed reference folder, unless a test names one
os.environ.pop(CACHE_SEEDS_ENV, None)  # nor committed reward models, base answers and their rewards

VOCAB_SIZE = 64
CONTENT_CACHES = ("reference-logps", *SEEDED_KINDS)  # entries keyed by content


def tiny_llama(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides) -> LlamaForCausalLM:
    """A 2-layer Llama with hidden size 32, random weights from `seed`, in eval mode."""
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config = LlamaConfig(**{**settings, **overrides})
    return LlamaForCausalLM(config).to(dtype).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    """A 2-layer GPT-2, whose linear layers are transformers Conv1D (weights stored as (in, out))."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config).eval()


@torch.no_grad()
def randomize_adapter(model: PanaceaModel, seed: int = 1, scale: float = 0.3) -> None:
    """Give A, B, σ, s random non-trivial values so the adapter changes the output."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * scale)


def panacea_llama(
    seed: int = 0, dtype: torch.dtype = torch.float32, randomize: bool = True, base_overrides=None, **config
) -> PanaceaModel:
    """A tiny Llama with a k=3, m=2 Panacea adapter (random non-trivial weights unless `randomize=False`)."""
    config = {"svd_rank": 3, "num_preferences": 2, **config}
    model = get_panacea_model(tiny_llama(seed, dtype, **(base_overrides or {})), PanaceaConfig(**config))
    if randomize:
        randomize_adapter(model)
    return model


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over VOCAB_SIZE tokens: specials, then 'w4' … 'w63'."""
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: index for index, token in enumerate(specials)}
    vocab.update({f"w{index}": index for index in range(len(specials), VOCAB_SIZE)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def link_converted_models(user: Path, private: Path) -> None:
    """Link into `private` what the user's panacea cache holds besides its content caches (the converted embedded
    model): a link to a content cache would let a test write into the user's folder."""
    for entry in sorted(user.iterdir()) if user.is_dir() else ():
        if entry.name not in CONTENT_CACHES:
            (private / entry.name).symlink_to(entry.resolve())


@pytest.fixture(scope="session", autouse=True)
def _private_panacea_cache(tmp_path_factory):
    """A panacea cache of the test session's own: reference log-probs, reward models, base answers and their rewards
    of tiny models never land in the user's.

    (benchmarks/fronts.sh and the validation study keep what appears in the user's cache.) What the user's cache holds
    besides those — the converted embedded model — is linked, so integration tests load it at once.
    """
    private = tmp_path_factory.mktemp("panacea-cache")
    link_converted_models(cache_dir(), private)
    previous = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(private)
    yield private
    if previous is None:
        os.environ.pop(CACHE_DIR_ENV, None)
    else:
        os.environ[CACHE_DIR_ENV] = previous


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A saved tiny Llama + tokenizer, loadable with `load_base_model(path)`."""
    path = tmp_path / "tiny-llama"
    tiny_llama().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path
