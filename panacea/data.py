"""Preference pairs: load them (JSONL, saved `datasets` folders, the hub), validate, chat-template and truncate.

A pair record is `{id, prompt, chosen, rejected, dim, source, split}` (data/SOURCES.md). `load_pairs` reads
one source and returns validated text pairs; `tokenize_pairs` renders them with the tokenizer's chat template
and truncates them as TRL does; `load_dimension` does both for every source of one dimension. On-policy RL reads
prompts only: `PromptSource`, `load_prompt_source` (the distinct prompts of a prompt file or of a pair file's
split) and `tokenize_prompts` (the prompt ids `tokenize_pairs` makes).

The data is offensive by design (harmful requests, unsafe answers): every error and log line names the file,
the line (or row) and the record id, never the text.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PAIR_KEYS = ("id", "prompt", "chosen", "rejected", "dim", "source", "split")
SPLITS = ("train", "test")
# Carved from a file's 'train' records by prompt (never by pair), for tuning without touching 'test': a train
# prompt is in 'validation' when sha256(VALIDATION_SALT + its normalised text) % VALIDATION_FOLDS == 0 (about an
# eighth of the train prompts), and 'fit' holds the rest of 'train'. Fixed by the salt, so every run carves the
# same; independent of the test rule (data/SOURCES.md), whose hash has no salt.
DERIVED_SPLITS = ("fit", "validation")
VALIDATION_SALT, VALIDATION_FOLDS = "panacea-validation-v1:", 8
MAPPABLE_KEYS = ("id", "prompt", "chosen", "rejected", "dim", "split")
TEXT_KEYS = ("prompt", "chosen", "rejected")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")


class _SourceNames:
    """What pair and prompt sources share: our keys' column names, and how messages name the source."""

    path: str
    split: str
    dim: str | None
    columns: dict[str, str]

    def column(self, key: str) -> str:
        """The source's column that holds our `key`."""
        return self.columns.get(key, key)

    def describe(self) -> str:
        """The source and its filter, for messages: `data/helpful.jsonl.gz (dim 'helpful', split 'train')`."""
        dim = f"dim {self.dim!r}, " if self.dim else ""
        return f"{self.path} ({dim}split {self.split!r})"


@dataclass
class PairSource(_SourceNames):
    """One source of preference pairs: a local JSONL file, a saved `datasets` folder, or a hub dataset."""

    path: str = field(
        metadata={
            "help": "A local .jsonl or .jsonl.gz file, a folder written by datasets' `save_to_disk`, or a Hugging "
            "Face hub dataset id. Relative paths are relative to the current directory."
        }
    )
    split: str = field(
        default="train",
        metadata={
            "help": "JSONL file or single saved Dataset: keep records whose 'split' column equals this ('train' or "
            "'test'; a source without that column is used whole), or a part of 'train' carved by prompt: "
            "'validation' (about an eighth of the train prompts, for tuning) and 'fit' (the rest), disjoint (a "
            "source without that column, used whole for 'train' and 'test', is carved whole for these two). "
            "DatasetDict folder or hub: the split to load."
        },
    )
    dim: str | None = field(
        default=None,
        metadata={
            "help": "Keep records whose 'dim' equals this; None means the dimension being loaded. A source without "
            "a 'dim' column belongs wholly to the dimension being loaded."
        },
    )
    columns: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "Our key -> the source's column name, e.g. {'prompt': 'question', 'chosen': 'response_a'}. "
            f"Only {list(MAPPABLE_KEYS)} may be mapped."
        },
    )
    max_pairs: int | None = field(
        default=None,
        metadata={"help": "Keep at most this many pairs: a seeded shuffle, then the first N. None keeps all."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the shuffle behind max_pairs."})

    def __post_init__(self) -> None:
        if isinstance(self.path, os.PathLike):
            self.path = os.fspath(self.path)
        if isinstance(self.columns, Mapping):
            self.columns = dict(self.columns)
        _require(isinstance(self.path, str) and bool(self.path.strip()), "path", self.path, "a non-empty string")
        _require(_is_label(self.split), "split", self.split, "a non-empty split name")
        if self.path.endswith(JSONL_SUFFIXES):
            _require(
                self.split in SPLITS + DERIVED_SPLITS,
                "split",
                self.split,
                f"one of {SPLITS + DERIVED_SPLITS} for a JSONL file",
            )
        _require(self.dim is None or _is_label(self.dim), "dim", self.dim, "None or a dimension name")
        _require(
            isinstance(self.columns, dict)
            and all(key in MAPPABLE_KEYS and _is_label(column) for key, column in self.columns.items()),
            "columns",
            self.columns,
            f"a mapping from keys among {list(MAPPABLE_KEYS)} to column names",
        )
        used = Counter(self.column(key) for key in MAPPABLE_KEYS)
        _require(
            all(count == 1 for count in used.values()),
            "columns",
            self.columns,
            "a mapping under which each source column feeds one key only "
            f"(column(s) {sorted(name for name, count in used.items() if count > 1)} are used twice)",
        )
        _require(
            self.max_pairs is None or (_is_int(self.max_pairs) and self.max_pairs >= 1),
            "max_pairs",
            self.max_pairs,
            "None or an integer >= 1",
        )
        _require(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an integer ≥ 0 (−s draws as s does)")


@dataclass
class PairRecord:
    """One validated preference pair (text), in source order."""

    id: str
    prompt: str
    chosen: str
    rejected: str
    dim: str  # the record's 'dim'; the dimension being loaded when the source has no 'dim' column
    where: str  # "data/helpful.jsonl.gz:17" (file:line) or "<dataset path>[row 17]"


PROMPT_MAPPABLE_KEYS = ("id", "prompt", "dim", "split")


@dataclass
class PromptSource(_SourceNames):
    """One source of prompts for on-policy RL: a prompt file, or the prompts of a pair file (PairSource's style)."""

    path: str = field(
        metadata={
            "help": "A local .jsonl or .jsonl.gz file of records with a 'prompt' (a pair file such as "
            "data/helpful.jsonl.gz, or a prompt set of data/prompts/), a folder written by datasets' `save_to_disk`, "
            "or a Hugging Face hub dataset id. Relative paths are relative to the current directory."
        }
    )
    split: str = field(
        default="train",
        metadata={
            "help": "As PairSource.split: records whose 'split' equals this ('train', 'test', or the carved 'fit' and "
            "'validation'); a source without a 'split' column is used whole, and carved for 'fit' and 'validation' "
            "(the prompt sets of data/prompts/ are all held-out test prompts: never train on them if you evaluate "
            "on them)."
        },
    )
    dim: str | None = field(
        default=None, metadata={"help": "Keep records whose 'dim' equals this; None keeps every record."}
    )
    columns: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": f"Our key -> the source's column name; only {list(PROMPT_MAPPABLE_KEYS)} may be mapped."},
    )
    max_prompts: int | None = field(
        default=None,
        metadata={"help": "Keep at most this many distinct prompts: a seeded shuffle, then the first N. None: all."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the shuffle behind max_prompts."})

    def __post_init__(self) -> None:
        if isinstance(self.path, os.PathLike):
            self.path = os.fspath(self.path)
        if isinstance(self.columns, Mapping):
            self.columns = dict(self.columns)
        _require(
            isinstance(self.path, str) and bool(self.path.strip()), "path", self.path, "a non-empty string", "Prompt"
        )
        _require(_is_label(self.split), "split", self.split, "a non-empty split name", "Prompt")
        if self.path.endswith(JSONL_SUFFIXES):
            _require(
                self.split in SPLITS + DERIVED_SPLITS,
                "split",
                self.split,
                f"one of {SPLITS + DERIVED_SPLITS} for a JSONL file",
                "Prompt",
            )
        _require(self.dim is None or _is_label(self.dim), "dim", self.dim, "None or a dimension name", "Prompt")
        _require(
            isinstance(self.columns, dict)
            and all(key in PROMPT_MAPPABLE_KEYS and _is_label(column) for key, column in self.columns.items()),
            "columns",
            self.columns,
            f"a mapping from keys among {list(PROMPT_MAPPABLE_KEYS)} to column names",
            "Prompt",
        )
        _require(
            self.max_prompts is None or (_is_int(self.max_prompts) and self.max_prompts >= 1),
            "max_prompts",
            self.max_prompts,
            "None or an integer >= 1",
            "Prompt",
        )
        _require(
            _is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an integer ≥ 0 (−s draws as s does)", "Prompt"
        )


@dataclass
class PromptRecord:
    """One distinct prompt (text), with the id of its first record and where that record is."""

    id: str
    prompt: str
    where: str


def load_prompt_source(source: PromptSource) -> list[PromptRecord]:
    """The distinct prompts of `source` (of `source.dim` and `source.split`), each under its first record's id.

    Reads what `load_pairs` reads (JSONL, saved `datasets` folders, the hub) and carves 'fit' / 'validation' by
    prompt as it does (`pair_split`); other keys ('chosen', 'label', ...) are not read. A record whose prompt is
    not a non-empty string raises one ValueError naming file, line (or row) and id, never the text.
    """
    rows, split_selected = _read_rows(PairSource(source.path, split=source.split))
    distinct: dict[str, PromptRecord] = {}
    found: Counter[str] = Counter()
    for where, row in rows:
        record_id = row.get(source.column("id"))
        label = f"{where} id={_shown_id(record_id)}"
        prompt = row.get(source.column("prompt"))
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(
                f"{label}: {source.column('prompt')!r} must be a non-empty string (the row has {sorted(row)}); map "
                "another column with PromptSource.columns, e.g. {'prompt': '<column>'}."
            )
        split = None if split_selected else row.get(source.column("split"))
        if split is not None and split not in SPLITS:
            shown = _show(split) if isinstance(split, str) else repr(split)
            raise ValueError(f"{label}: split {shown} is not one of {SPLITS}.")
        split = pair_split(split, prompt, source.split, chosen_by_name=split_selected)
        found[split or source.split] += 1
        if source.dim is not None and row.get(source.column("dim")) != source.dim:
            continue
        if split is None or split == source.split:
            distinct.setdefault(prompt, PromptRecord(record_id if _is_label(record_id) else where, prompt, where))
    if not distinct:
        contents = ", ".join(f"{split} {count}" for split, count in sorted(found.items()))
        raise ValueError(
            f"{source.describe()}: no prompts (the source has {contents or 'no rows'}). Check PromptSource.path, dim "
            "and split."
        )
    return _subsample(list(distinct.values()), source.max_prompts, source.seed)


def tokenize_prompts(prompts: Sequence[str], tokenizer: Any, max_prompt_length: int) -> list[list[int]]:
    """Each prompt's ids as `tokenize_pairs` renders them (the chat template with its generation prompt, or the
    tokenizer's specials without a template), keeping the last `max_prompt_length` tokens (keep_end)."""
    if not (_is_int(max_prompt_length) and max_prompt_length > 0):
        raise ValueError(f"max_prompt_length must be a positive integer, got {max_prompt_length!r}.")
    return [ids[-max_prompt_length:] for ids in _prompt_ids(prompts, tokenizer)]


def load_pairs(source: PairSource, dimension: str, known_dimensions: Sequence[str]) -> list[PairRecord]:
    """Read, validate and filter one source: the pairs of `source.dim or dimension` and `source.split`.

    Every row is validated, also rows another dimension or split will use; a bad row raises one `ValueError`
    naming file, line (or row) and id. Rows of another known dim or split are skipped; nothing else is dropped.
    """
    known = _check_dimensions(dimension, known_dimensions)
    wanted_dim = source.dim or dimension
    if wanted_dim not in known:
        raise ValueError(f"PairSource.dim for {source.path} is {wanted_dim!r}, not one of the dimensions {known}.")
    rows, split_selected = _read_rows(source)
    keys = [key for key in MAPPABLE_KEYS if not (split_selected and key == "split")]
    shape: set[str] | None = None  # which of our keys the source has, fixed by its first row
    first_where: dict[str, str] = {}
    found: Counter[tuple[str, str]] = Counter()
    pairs: list[PairRecord] = []
    for where, row in rows:
        record = {key: row[source.column(key)] for key in keys if source.column(key) in row}
        shape = set(record) if shape is None else shape
        pair, split = _validate(where, record, shape, list(row), source, dimension, known)
        if pair.id in first_where:
            raise ValueError(
                f"{where} id={_shown_id(pair.id)}: duplicate id, first used at {first_where[pair.id]}; ids must be "
                "unique within a source (they key caches and logs)."
            )
        first_where[pair.id] = where
        split = pair_split(split, pair.prompt, source.split, chosen_by_name=split_selected)
        found[pair.dim, split or source.split] += 1
        if pair.dim == wanted_dim and (split is None or split == source.split):
            pairs.append(pair)
    if not pairs:
        contents = ", ".join(f"{dim}/{split} {count}" for (dim, split), count in sorted(found.items()))
        raise ValueError(
            f"{source.path}: no pairs with dim {wanted_dim!r} and split {source.split!r} (the source has "
            f"{contents or 'no rows'}). Check PairSource.path, dim and split."
        )
    return _subsample(pairs, source.max_pairs, source.seed)


def _validate(
    where: str,
    record: dict[str, Any],
    shape: set[str],
    columns: list[str],
    source: PairSource,
    dimension: str,
    known: list[str],
) -> tuple[PairRecord, str | None]:
    """One record as a PairRecord and its split (None without a split column); one ValueError if it is bad.

    `record` holds our keys found in the row, `shape` those of the source's first row, `columns` the row's
    column names (for the hint). Messages name the place and the id and never show text.
    """
    pair_id = record.get("id") if _is_label(record.get("id")) else None
    label = f"{where} id={_shown_id(pair_id)}"
    for key in sorted(shape ^ set(record)):
        column = source.column(key)
        if key in record:
            raise ValueError(f"{label}: has column {column!r}, which the first row lacks; all rows need the same keys.")
        raise ValueError(f"{label}: missing key {column!r}, which the first row has; all rows need the same keys.")
    for key in TEXT_KEYS:
        if key not in record:
            raise ValueError(
                f"{label}: missing key {source.column(key)!r} (the row has {sorted(columns)}); map other column "
                f"names with PairSource.columns, e.g. {{'{key}': '<column>'}}."
            )
    for key, value in record.items():
        if not isinstance(value, str) or not value.strip():
            got = (
                "an empty or whitespace-only string"
                if isinstance(value, str)
                else f"a value of type {type(value).__name__}"
            )
            raise ValueError(f"{label}: {source.column(key)!r} must be a non-empty string, got {got}.")
    if record["chosen"] == record["rejected"]:
        raise ValueError(f"{label}: chosen and rejected are identical, so the pair carries no preference; remove it.")
    dim = record.get("dim", dimension)
    if dim not in known:
        raise ValueError(
            f"{label}: dim {_show(dim)} is not one of the dimensions {known}; fix the record or add the "
            "dimension to the run."
        )
    split = record.get("split")
    if split is not None and split not in SPLITS:
        raise ValueError(f"{label}: split {_show(split)} is not one of {SPLITS}.")
    pair_id = pair_id or where  # a source without an id column: its position is the id
    return PairRecord(pair_id, record["prompt"], record["chosen"], record["rejected"], dim, where), split


def pair_split(split: str | None, prompt: str, wanted: str, *, chosen_by_name: bool = False) -> str | None:
    """A record's split as a source asking for `wanted` sees it: where a carved split ('fit', 'validation') is
    wanted, a 'train' record — or any record of a source without a split column, which is all training data — is the
    one its prompt falls in; otherwise the record's own split (None without a split column: the source is used
    whole). `chosen_by_name`: the source's split already chose its rows by name (a hub dataset's or a DatasetDict
    folder's split 'validation'): they are kept whole, never carved again."""
    if wanted in DERIVED_SPLITS and (split == "train" or (split is None and not chosen_by_name)):
        return "validation" if in_validation_fold(prompt) else "fit"
    return split


def in_validation_fold(prompt: str) -> bool:
    """Whether a train prompt belongs to the carved 'validation' split (see DERIVED_SPLITS): by prompt, so that all
    pairs (and generations) of one prompt fall on one side."""
    normalised = " ".join(prompt.lower().split())
    return int(hashlib.sha256((VALIDATION_SALT + normalised).encode("utf-8")).hexdigest(), 16) % VALIDATION_FOLDS == 0


def _subsample(pairs: list[PairRecord], max_pairs: int | None, seed: int) -> list[PairRecord]:
    """At most `max_pairs`: the first N of a seeded shuffle, returned in source order."""
    if max_pairs is None or len(pairs) <= max_pairs:
        return pairs
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    return [pairs[index] for index in sorted(order[:max_pairs])]


def _read_rows(source: PairSource) -> tuple[Iterator[tuple[str, Mapping[str, Any]]], bool]:
    """(where, row) for every row of the source, and whether `source.split` already chose the rows by name."""
    path = Path(source.path).expanduser()
    if source.path.endswith(JSONL_SUFFIXES):
        if not path.is_file():
            raise FileNotFoundError(
                f"Preference data file {source.path} not found (relative paths are relative to the current "
                f"directory, {Path.cwd()})."
            )
        return _read_jsonl(path, source.path), False
    if path.is_dir():
        return _read_saved_dataset(path, source)
    if path.exists():
        raise ValueError(
            f"{source.path} is a file but not .jsonl or .jsonl.gz; convert it to JSON Lines, one pair object per line."
        )
    if path.is_absolute() or source.path.startswith((".", "~")) or source.path.count("/") > 1 or "\\" in source.path:
        raise FileNotFoundError(
            f"Preference data {source.path} not found (relative paths are relative to the current directory, "
            f"{Path.cwd()}); a hub dataset id has the form 'name' or 'owner/name'."
        )
    return _read_hub_dataset(source), True


def _read_jsonl(path: Path, shown: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(`file:line`, object) per non-blank line, parsed here so every error can name its line."""
    try:
        with gzip.open(path, "rb") if shown.endswith(".gz") else open(path, "rb") as lines:
            for number, raw in enumerate(lines, start=1):
                where = f"{shown}:{number}"
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise ValueError(f"{where} id=?: not UTF-8 text; save the file as UTF-8.") from None
                except json.JSONDecodeError as error:  # msg and column only: the message never quotes the line
                    raise ValueError(f"{where} id=?: not valid JSON ({error.msg} at column {error.colno}).") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{where} id=?: expected a JSON object (one pair), got {type(row).__name__}.")
                yield where, row
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(
            f"{shown}: cannot be read as {'gzip' if shown.endswith('.gz') else 'a'} file ({error})."
        ) from None


def _read_saved_dataset(path: Path, source: PairSource) -> tuple[Iterator[tuple[str, Mapping[str, Any]]], bool]:
    """Rows of a folder written by `save_to_disk`: a DatasetDict's `source.split`, or a whole Dataset."""
    import datasets  # deferred: a second of import time that JSONL-only runs do not need

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as error:
        raise ValueError(
            f"{source.path} is a folder but not one written by datasets' save_to_disk ({error}); pass a "
            ".jsonl/.jsonl.gz file or a saved Dataset/DatasetDict folder."
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if source.split not in loaded:
            raise ValueError(f"{source.path} has splits {sorted(loaded)}, not {source.split!r}; set PairSource.split.")
        return _dataset_rows(loaded[source.split], source.path), True
    return _dataset_rows(loaded, source.path), False


def _read_hub_dataset(source: PairSource) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Rows of `source.split` of a Hugging Face hub dataset (downloaded and cached by `datasets`)."""
    import datasets

    try:
        loaded = datasets.load_dataset(source.path, split=source.split)
    except Exception as error:  # offline, unknown id, unknown split, ...: one message with the fix
        raise RuntimeError(
            f"Could not load split {source.split!r} of the hub dataset {source.path!r} ({error}). If it is meant "
            f"as a local path, it does not exist relative to the current directory {Path.cwd()}."
        ) from error
    return _dataset_rows(loaded, source.path)


def _dataset_rows(dataset: Any, shown: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(`path[row i]`, row) for every row of a `datasets.Dataset`, read column-wise in one go."""
    table = dataset.to_dict()
    names = list(table)
    for index, values in enumerate(zip(*table.values(), strict=True)):
        yield f"{shown}[row {index}]", dict(zip(names, values, strict=True))


@dataclass
class TokenizedPair:
    """One pair as token ids, truncated; the model sees prompt_ids + chosen_ids and prompt_ids + rejected_ids."""

    id: str
    prompt_ids: list[int]  # the chat-templated prompt incl. the generation prompt ('<|im_start|>assistant\n')
    chosen_ids: list[int]  # the response incl. the template's end-of-turn ('<|im_end|>\n'), or eos without template
    rejected_ids: list[int]


@dataclass
class TruncationStats:
    """How many pairs truncation touched: a cut prompt, a cut response, a length difference gone."""

    pairs: int
    truncated_prompts: int  # pairs whose prompt lost tokens
    truncated_responses: int  # pairs with at least one response cut
    lost_length_difference: int  # chosen/rejected differed in length before truncation, not after (concise's signal)
    # chosen and rejected the same tokens after truncation: kept, a pair with no DPO gradient and an exact tie
    identical_after_truncation: int = 0

    def __str__(self) -> str:
        def share(count: int) -> str:
            return f"{count} ({100 * count / max(self.pairs, 1):.1f}%)"

        identical = self.identical_after_truncation
        return (
            f"{self.pairs} pairs; truncated prompts {share(self.truncated_prompts)}, truncated responses "
            f"{share(self.truncated_responses)}, chosen/rejected length difference lost "
            f"{share(self.lost_length_difference)}"
            + (f", chosen = rejected after truncation {share(identical)} (no signal)" if identical else "")
        )


def tokenize_pairs(
    records: Sequence[PairRecord], tokenizer: Any, max_length: int, max_prompt_length: int
) -> tuple[list[TokenizedPair], TruncationStats]:
    """Chat-template, tokenize (in batches) and truncate pairs as TRL's DPO does.

    The prompt keeps its last `max_prompt_length` tokens (keep_end); then each response keeps its first
    `max_length - len(prompt)` tokens (keep_start), so prompt + response fits in `max_length`. A pair whose two
    responses become the same tokens is kept (no DPO gradient, an exact tie when scored) and counted in the stats.
    """
    if not (_is_int(max_length) and _is_int(max_prompt_length) and 0 < max_prompt_length < max_length):
        raise ValueError(
            "max_length and max_prompt_length must be positive integers with max_prompt_length < max_length, got "
            f"max_length={max_length!r}, max_prompt_length={max_prompt_length!r}."
        )
    prompts, chosen, rejected = _token_ids(records, tokenizer)
    pairs, cut_prompts, cut_responses, lost, identical = [], 0, 0, 0, 0
    for record, prompt, good, bad in zip(records, prompts, chosen, rejected, strict=True):
        kept_prompt = prompt[-max_prompt_length:]  # keep_end: the question and the generation prompt survive
        budget = max_length - len(kept_prompt)
        kept_good, kept_bad = good[:budget], bad[:budget]  # keep_start
        cut_prompts += len(kept_prompt) < len(prompt)
        cut_responses += len(kept_good) < len(good) or len(kept_bad) < len(bad)
        lost += len(good) != len(bad) and len(kept_good) == len(kept_bad)
        identical += kept_good == kept_bad
        pairs.append(TokenizedPair(record.id, kept_prompt, kept_good, kept_bad))
    return pairs, TruncationStats(len(pairs), cut_prompts, cut_responses, lost, identical)


def _token_ids(records: Sequence[PairRecord], tokenizer: Any) -> tuple[list[list[int]], ...]:
    """Untruncated (prompt, chosen, rejected) ids per record, each a list of length len(records)."""
    if not records:
        return [], [], []
    if tokenizer.chat_template is None:  # plain text: the tokenizer's specials on the prompt, eos ends a response
        if tokenizer.eos_token_id is None:
            raise ValueError("The tokenizer has neither a chat template nor an eos token to end a response with.")
        prompt_ids = _prompt_ids([record.prompt for record in records], tokenizer)
        chosen, rejected = ([getattr(record, key) for record in records] for key in ("chosen", "rejected"))
        eos = [tokenizer.eos_token_id]
        return (
            prompt_ids,
            [ids + eos for ids in _encode(tokenizer, chosen)],
            [ids + eos for ids in _encode(tokenizer, rejected)],
        )
    prompt_texts, chosen, rejected = _render_chat(records, tokenizer)
    return _encode(tokenizer, prompt_texts), _encode(tokenizer, chosen), _encode(tokenizer, rejected)


def _render_chat(records: Sequence[PairRecord], tokenizer: Any) -> tuple[list[str], list[str], list[str]]:
    """(prompt rendering with the generation prompt, chosen suffix, rejected suffix) as text, per record.

    A response's text is the rendering of [user, assistant] minus the rendering of [user] with the generation
    prompt, so it carries the template's end-of-turn tokens.
    """
    users = [[{"role": "user", "content": record.prompt}] for record in records]
    prompt_texts = _chat_prompts([record.prompt for record in records], tokenizer)
    responses = []
    for key in ("chosen", "rejected"):
        conversations = [
            user + [{"role": "assistant", "content": getattr(r, key)}] for user, r in zip(users, records, strict=True)
        ]
        full_texts = tokenizer.apply_chat_template(conversations, tokenize=False)
        for record, prompt_text, full_text in zip(records, prompt_texts, full_texts, strict=True):
            if not full_text.startswith(prompt_text):
                raise ValueError(
                    f"{record.where} id={_shown_id(record.id)}: the tokenizer's chat template does not render "
                    "[user, assistant] as the rendering of [user] with add_generation_prompt=True followed by the "
                    "response, so the prompt cannot be split off. Use a tokenizer whose template does (most chat "
                    "models), or set tokenizer.chat_template = None to train on plain text ending in eos."
                )
        responses.append([full[len(prompt) :] for prompt, full in zip(prompt_texts, full_texts, strict=True)])
    return prompt_texts, responses[0], responses[1]


def _chat_prompts(prompts: Sequence[str], tokenizer: Any) -> list[str]:
    """Each prompt as a user turn in the chat template, followed by the generation prompt (text)."""
    users = [[{"role": "user", "content": prompt}] for prompt in prompts]
    return tokenizer.apply_chat_template(users, add_generation_prompt=True, tokenize=False)


def _prompt_ids(prompts: Sequence[str], tokenizer: Any) -> list[list[int]]:
    """Untruncated prompt ids: the chat rendering without added specials, or the plain text with them."""
    if not prompts:
        return []
    if tokenizer.chat_template is None:
        return _encode(tokenizer, list(prompts), add_special_tokens=True)
    return _encode(tokenizer, _chat_prompts(prompts, tokenizer))


def _encode(tokenizer: Any, texts: list[str], add_special_tokens: bool = False) -> list[list[int]]:
    """Token ids of many texts in one batched call (fast tokenizers run it in Rust)."""
    return tokenizer(texts, add_special_tokens=add_special_tokens, verbose=False)["input_ids"]


def load_dimension(
    sources: Sequence[PairSource],
    dimension: str,
    known_dimensions: Sequence[str],
    tokenizer: Any,
    max_length: int,
    max_prompt_length: int,
) -> tuple[list[TokenizedPair], TruncationStats]:
    """All pairs of one dimension: `dimension_records` (every source, in order), then `tokenize_pairs`."""
    records, counts = dimension_records(sources, dimension, known_dimensions)
    tokenized, stats = tokenize_pairs(records, tokenizer, max_length, max_prompt_length)
    logger.info("dimension %s: %s; from %s", dimension, stats, "; ".join(counts))
    return tokenized, stats


def dimension_records(
    sources: Sequence[PairSource], dimension: str, known_dimensions: Sequence[str]
) -> tuple[list[PairRecord], list[str]]:
    """The pairs (text) of one dimension: `load_pairs` on every source, in order, concatenated (ids unique across
    them), and a "source: count" line per source."""
    if isinstance(sources, PairSource) or not sources:
        raise ValueError(f"Dimension {dimension!r} needs a non-empty list of PairSource, got {sources!r}.")
    records: list[PairRecord] = []
    counts = []
    first_where: dict[str, str] = {}
    for source in sources:
        pairs = load_pairs(source, dimension, known_dimensions)
        for pair in pairs:
            if pair.id in first_where:
                raise ValueError(
                    f"{pair.where} id={_shown_id(pair.id)}: duplicate id in dimension {dimension!r}, first at "
                    f"{first_where[pair.id]}; a dimension's sources must not share ids (is a source listed twice?)."
                )
            first_where[pair.id] = pair.where
        records.extend(pairs)
        counts.append(f"{source.describe()}: {len(pairs)}")
    return records, counts


def _check_dimensions(dimension: str, known_dimensions: Sequence[str]) -> list[str]:
    known = [known_dimensions] if isinstance(known_dimensions, str) else list(known_dimensions)
    if not known or not all(_is_label(name) for name in known) or len(set(known)) != len(known):
        raise ValueError(f"known_dimensions must be distinct non-empty names, got {known!r}.")
    if dimension not in known:
        raise ValueError(f"Dimension {dimension!r} is not one of the known dimensions {known}.")
    return known


_NAME = re.compile(r"[A-Za-z0-9_.:/+-]{1,40}")  # what a message may print of a data value: an identifier, never text


def _show(value: str) -> str:
    """A label for a message: an identifier-like value (≤ 40 letters, digits and `_.:/+-`) verbatim, anything else
    (maybe a record's text, e.g. a wrongly mapped column) by its length only."""
    if _NAME.fullmatch(value):
        return repr(value)
    return f"<a {len(value)}-character string>"


def _shown_id(value: Any) -> str:
    """A record's id for a message: as is when identifier-like (`_show`), else '?' or its length (never its text)."""
    if not _is_label(value):
        return "?"
    return value if _NAME.fullmatch(value) else _show(value)


def _require(ok: bool, name: str, value: Any, expected: str, owner: str = "Pair") -> None:
    if not ok:
        shown = _show(value) if isinstance(value, str) else repr(value)
        raise ValueError(f"{owner}Source.{name} must be {expected}, got {shown}.")


def _is_label(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
