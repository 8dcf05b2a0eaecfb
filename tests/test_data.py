import gzip
import json
import logging
from pathlib import Path

import datasets
import pytest

from panacea.data import (
    PAIR_KEYS,
    PairRecord,
    PairSource,
    PromptSource,
    TruncationStats,
    in_validation_fold,
    load_dimension,
    load_pairs,
    load_prompt_source,
    tokenize_pairs,
)
from tests.conftest import tiny_tokenizer

DATA = Path(__file__).resolve().parents[1] / "data"
KNOWN = ["helpful", "harmless", "concise"]
SECRET = "SECRETTEXT"  # stands in for offensive text: it must never reach an error message or a log line
# A word-level chat template over the tiny vocabulary: user turn 'w4 … w5', assistant header 'w6', end 'w7'.
TINY_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}w4 {{ m['content'] }} w5 {% else %}w6 {{ m['content'] }} "
    "w7 {% endif %}{% endfor %}{% if add_generation_prompt %}w6 {% endif %}"
)


def pair(number: int, dim: str = "helpful", split: str = "train", **overrides) -> dict:
    """A well-formed record whose texts are words of the tiny vocabulary."""
    record = {
        "id": f"p{number}",
        "prompt": f"w10 w11 w{12 + number % 40}",
        "chosen": "w20 w21",
        "rejected": "w30 w31 w32",
        "dim": dim,
        "source": "unit",
        "split": split,
    }
    return {**record, **overrides}


def write_jsonl(path: Path, rows: list, raw_lines: dict[int, str] | None = None) -> Path:
    """JSON lines (gzip for .gz); `raw_lines` puts literal text at given 1-based line numbers."""
    lines = [json.dumps(row) for row in rows]
    for number, text in (raw_lines or {}).items():
        lines.insert(number - 1, text)
    content = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
    return path


def ids(records) -> list[str]:
    return [record.id for record in records]


# Loading and filters


@pytest.mark.parametrize("name", ["pairs.jsonl", "pairs.jsonl.gz"])
def test_jsonl_loads_with_dim_and_split_filters(tmp_path, monkeypatch, name):
    rows = [pair(0), pair(1, split="test"), pair(2, dim="harmless"), pair(3), pair(4, dim="harmless", split="test")]
    write_jsonl(tmp_path / name, rows, raw_lines={3: ""})  # a blank line 3 is skipped, later lines keep numbers
    monkeypatch.chdir(tmp_path)  # relative paths are relative to the current directory
    records = load_pairs(PairSource(name), "helpful", KNOWN)
    assert ids(records) == ["p0", "p3"]
    assert [record.where for record in records] == [f"{name}:1", f"{name}:5"]
    assert records[0] == PairRecord("p0", rows[0]["prompt"], "w20 w21", "w30 w31 w32", "helpful", f"{name}:1")
    assert ids(load_pairs(PairSource(name, split="test"), "harmless", KNOWN)) == ["p4"]
    assert ids(load_pairs(PairSource(name, dim="harmless"), "concise", KNOWN)) == ["p2"]  # dim overrides


def test_source_without_dim_split_or_id_columns_is_used_whole(tmp_path):
    rows = [
        {"prompt": "w10", "chosen": "w11", "rejected": "w12"},
        {"prompt": "w13", "chosen": "w14", "rejected": "w15"},
    ]
    path = write_jsonl(tmp_path / "plain.jsonl", rows)
    records = load_pairs(PairSource(str(path), split="test"), "concise", KNOWN)
    assert [(record.id, record.dim) for record in records] == [(f"{path}:1", "concise"), (f"{path}:2", "concise")]


def test_saved_dataset_and_dataset_dict_folders(tmp_path):
    rows = [pair(0), pair(1, split="test"), pair(2, dim="harmless"), pair(3)]
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "single")
    records = load_pairs(PairSource(str(tmp_path / "single")), "helpful", KNOWN)
    assert ids(records) == ["p0", "p3"] and records[1].where == f"{tmp_path / 'single'}[row 3]"

    no_split = [{key: value for key, value in row.items() if key != "split"} for row in rows]
    splits = {"train": datasets.Dataset.from_list(no_split[:2]), "test": datasets.Dataset.from_list(no_split[2:])}
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "dict")
    assert ids(load_pairs(PairSource(str(tmp_path / "dict"), split="test"), "helpful", KNOWN)) == ["p3"]
    with pytest.raises(ValueError, match=r"has splits \['test', 'train'\], not 'validation'"):
        load_pairs(PairSource(str(tmp_path / "dict"), split="validation"), "helpful", KNOWN)
    # a DatasetDict's own 'validation' split (as hub datasets have): chosen by name, kept whole, never carved again
    many = [{key: value for key, value in pair(number).items() if key != "split"} for number in range(40)]
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(many)}).save_to_disk(tmp_path / "named")
    named = PairSource(str(tmp_path / "named"), split="validation")
    assert len(load_pairs(named, "helpful", KNOWN)) == 40
    assert len(load_prompt_source(PromptSource(str(tmp_path / "named"), split="validation"))) == 40


def test_column_mapping(tmp_path):
    rows = [
        {"qid": f"q{i}", "question": "w10", "good": "w11", "bad": f"w{12 + i}", "axis": "harmless"} for i in range(3)
    ]
    mapping = {"id": "qid", "prompt": "question", "chosen": "good", "rejected": "bad", "dim": "axis"}
    path = write_jsonl(tmp_path / "mapped.jsonl", rows)
    assert ids(load_pairs(PairSource(str(path), columns=mapping), "harmless", KNOWN)) == ["q0", "q1", "q2"]
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "mapped")
    records = load_pairs(PairSource(str(tmp_path / "mapped"), columns=mapping), "harmless", KNOWN)
    assert [(record.id, record.rejected) for record in records] == [("q0", "w12"), ("q1", "w13"), ("q2", "w14")]
    with pytest.raises(
        ValueError, match=r"missing key 'prompt' \(the row has \[.*'question'.*\]\).*PairSource.columns"
    ):
        load_pairs(PairSource(str(path)), "harmless", KNOWN)


def test_max_pairs_is_a_seeded_subset_in_file_order(tmp_path):
    path = str(write_jsonl(tmp_path / "many.jsonl", [pair(number) for number in range(50)]))
    first = ids(load_pairs(PairSource(path, max_pairs=10, seed=3), "helpful", KNOWN))
    assert first == ids(load_pairs(PairSource(path, max_pairs=10, seed=3), "helpful", KNOWN))
    assert first != ids(load_pairs(PairSource(path, max_pairs=10, seed=4), "helpful", KNOWN))
    assert first == sorted(first, key=lambda pair_id: int(pair_id[1:])) and len(first) == 10
    assert set(first) <= set(ids(load_pairs(PairSource(path, max_pairs=20, seed=3), "helpful", KNOWN)))
    assert len(load_pairs(PairSource(path, max_pairs=500), "helpful", KNOWN)) == 50


# Errors: each names file, line (or row) and id, never the text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "p1", "prompt": "' + SECRET, r"not valid JSON"),
        ('["' + SECRET + '"]', r"expected a JSON object \(one pair\), got list"),
        (pair(1, chosen=None), r"'chosen' must be a non-empty string, got a value of type NoneType"),
        (pair(1, prompt=7), r"'prompt' must be a non-empty string, got a value of type int"),
        (pair(1, rejected=""), r"'rejected' must be a non-empty string, got an empty or whitespace-only string"),
        (pair(1, prompt=" \n\t "), r"'prompt' must be a non-empty string, got an empty or whitespace-only string"),
        (pair(1, chosen=SECRET, rejected=SECRET), r"chosen and rejected are identical"),
        (pair(1, dim="helpfull"), r"dim 'helpfull' is not one of the dimensions \['helpful', 'harmless', 'concise'\]"),
        (pair(1, dim=SECRET * 10), r"dim <a 100-character string> is not one of the dimensions"),
        (pair(1, dim=f"a {SECRET} b"), r"dim <a 14-character string> is not one of the dimensions"),  # short text too
        (pair(1, split=f"{SECRET} x"), r"split <a 12-character string> is not one of"),
        (pair(1, split="validation"), r"split 'validation' is not one of \('train', 'test'\)"),
        (pair(0), r"duplicate id, first used at .*bad.jsonl.gz:1"),
        ({key: value for key, value in pair(1).items() if key != "chosen"}, r"missing key 'chosen'"),
        ({key: value for key, value in pair(1).items() if key != "dim"}, r"missing key 'dim', which the first row has"),
    ],
)
def test_malformed_record_is_one_error_naming_file_line_and_id(tmp_path, line, message):
    raw = line if isinstance(line, str) else json.dumps({**line, "source": SECRET})
    path = write_jsonl(tmp_path / "bad.jsonl.gz", [pair(0, prompt=SECRET)], raw_lines={2: raw})
    with pytest.raises(ValueError, match=message) as caught:
        load_pairs(PairSource(str(path)), "helpful", KNOWN)
    text = str(caught.value)
    expected_id = "p0" if "duplicate" in message else ("?" if isinstance(line, str) else "p1")
    assert f"{path}:2 id={expected_id}:" in text
    assert SECRET not in text


def test_an_id_that_is_text_is_not_printed(tmp_path):
    """Ids were printed verbatim at any length: a wrongly mapped column put a record's text in the message (review)."""
    path = write_jsonl(tmp_path / "bad.jsonl", [{**pair(0), "id": f"{SECRET} is text", "chosen": None}])
    with pytest.raises(ValueError, match=r"bad.jsonl:1 id=<a 18-character string>: 'chosen' must be") as caught:
        load_pairs(PairSource(str(path)), "helpful", KNOWN)
    assert SECRET not in str(caught.value)


def test_a_source_whose_first_row_lacks_a_column_refuses_later_rows_with_it(tmp_path):
    first = {key: value for key, value in pair(0).items() if key != "split"}
    path = write_jsonl(tmp_path / "ragged.jsonl", [first, pair(1)])
    with pytest.raises(ValueError, match=r"ragged.jsonl:2 id=p1: has column 'split', which the first row lacks"):
        load_pairs(PairSource(str(path)), "helpful", KNOWN)


def test_bad_row_of_a_saved_dataset_names_the_row(tmp_path):
    datasets.Dataset.from_list([pair(0), pair(1, chosen="w30 w31 w32")]).save_to_disk(tmp_path / "folder")
    with pytest.raises(ValueError, match=r"folder\[row 1\] id=p1: chosen and rejected are identical"):
        load_pairs(PairSource(str(tmp_path / "folder")), "helpful", KNOWN)


def test_zero_pairs_names_the_source_and_the_filter(tmp_path):
    path = write_jsonl(tmp_path / "only_test.jsonl", [pair(0, split="test"), pair(1, dim="harmless", split="test")])
    with pytest.raises(ValueError, match=r"no pairs with dim 'helpful' and split 'train' \(the source has "):
        load_pairs(PairSource(str(path)), "helpful", KNOWN)


def test_missing_files_and_unreachable_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"data/nope.jsonl.gz not found \(relative paths are relative to"):
        load_pairs(PairSource("data/nope.jsonl.gz"), "helpful", KNOWN)
    with pytest.raises(FileNotFoundError, match=r"./some/local/folder not found"):
        load_pairs(PairSource("./some/local/folder"), "helpful", KNOWN)
    (tmp_path / "pairs.csv").write_text("prompt,chosen,rejected\n")
    with pytest.raises(ValueError, match=r"pairs.csv is a file but not .jsonl or .jsonl.gz"):
        load_pairs(PairSource("pairs.csv"), "helpful", KNOWN)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty is a folder but not one written by datasets' save_to_disk"):
        load_pairs(PairSource("empty"), "helpful", KNOWN)
    with pytest.raises(RuntimeError, match=r"hub dataset 'nobody/no-such-pairs'"):  # tests run with HF_HUB_OFFLINE=1
        load_pairs(PairSource("nobody/no-such-pairs"), "helpful", KNOWN)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"path": ""}, r"PairSource.path must be a non-empty string"),
        ({"split": "dev"}, r"PairSource.split must be one of \('train', 'test', 'fit', 'validation'\) for a JSONL"),
        ({"dim": ""}, r"PairSource.dim must be None or a dimension name"),
        ({"columns": {"source": "origin"}}, r"PairSource.columns must be a mapping from keys among"),
        ({"columns": {"prompt": "chosen"}}, r"column\(s\) \['chosen'\] are used twice"),
        ({"max_pairs": 0}, r"PairSource.max_pairs must be None or an integer >= 1, got 0"),
        ({"seed": True}, r"PairSource.seed must be an integer ≥ 0 \(−s draws as s does\), got True"),
        ({"seed": -3}, r"PairSource.seed must be an integer ≥ 0 \(−s draws as s does\), got -3"),
    ],
)
def test_pair_source_refuses_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        PairSource(**{"path": "data/helpful.jsonl.gz", **settings})


def test_a_prompt_source_refuses_a_negative_seed():
    """random.Random(-3) draws what Random(3) does: two 'different' seeds gave one subset (found by a review)."""
    with pytest.raises(ValueError, match=r"PromptSource.seed must be an integer ≥ 0"):
        PromptSource("data/helpful.jsonl.gz", seed=-3)


def test_pair_source_accepts_paths_and_hub_split_names(tmp_path):
    assert PairSource(tmp_path / "x.jsonl").path == str(tmp_path / "x.jsonl")
    assert PairSource("owner/prefs", split="train_prefs").split == "train_prefs"  # a hub split name


def test_dimension_must_be_known(tmp_path):
    path = str(write_jsonl(tmp_path / "p.jsonl", [pair(0)]))
    with pytest.raises(ValueError, match=r"Dimension 'honest' is not one of the known dimensions"):
        load_pairs(PairSource(path), "honest", KNOWN)
    with pytest.raises(ValueError, match=r"PairSource.dim for .* is 'honest', not one of the dimensions"):
        load_pairs(PairSource(path, dim="honest"), "helpful", KNOWN)


# Tokenizing and truncation


def record(prompt: str, chosen: str, rejected: str, pair_id: str = "r0") -> PairRecord:
    return PairRecord(pair_id, prompt, chosen, rejected, "concise", f"test:{pair_id}")


def test_without_chat_template_responses_end_in_eos():
    tokenizer = tiny_tokenizer()
    pairs, stats = tokenize_pairs([record("w10 w11", "w20", "w30 w31")], tokenizer, 16, 8)
    assert (pairs[0].prompt_ids, pairs[0].chosen_ids, pairs[0].rejected_ids) == ([10, 11], [20, 2], [30, 31, 2])
    assert stats == TruncationStats(pairs=1, truncated_prompts=0, truncated_responses=0, lost_length_difference=0)


def test_truncation_keeps_prompt_end_and_response_start_and_counts():
    tokenizer = tiny_tokenizer()
    records = [
        record("w10 w11 w12 w13 w14 w15", "w20 w21", "w30", "long-prompt"),  # prompt cut to its last 4
        record("w10", "w20 w21 w22 w23 w24 w25 w26", "w30 w31 w32 w33 w34 w35 w36 w37 w38", "lost"),  # 8 vs 10 -> 7, 7
        record("w10", "w20 w21 w22 w23 w24 w25 w26 w27 w28", "w30", "kept-difference"),  # 10 vs 2 -> 7 vs 2
        record("w10", "w20", "w30 w31", "untouched"),
    ]
    pairs, stats = tokenize_pairs(records, tokenizer, max_length=8, max_prompt_length=4)
    assert pairs[0].prompt_ids == [12, 13, 14, 15] and pairs[0].chosen_ids == [20, 21, 2]
    assert pairs[1].chosen_ids == [20, 21, 22, 23, 24, 25, 26] and pairs[1].rejected_ids == [30, 31, 32, 33, 34, 35, 36]
    assert len(pairs[2].chosen_ids) == 7 and pairs[2].rejected_ids == [30, 2]
    assert all(len(pair.prompt_ids) + len(pair.chosen_ids) <= 8 for pair in pairs)
    assert stats == TruncationStats(pairs=4, truncated_prompts=1, truncated_responses=2, lost_length_difference=1)
    assert str(stats) == (
        "4 pairs; truncated prompts 1 (25.0%), truncated responses 2 (50.0%), "
        "chosen/rejected length difference lost 1 (25.0%)"
    )


def test_a_pair_whose_responses_truncate_to_the_same_tokens_is_kept_and_counted():
    """It was kept silently: no DPO gradient, an exact tie when scored, and no count anywhere (found by a review)."""
    records = [
        record("w10", "w20 w21 w22 w23 w24 w25 w26 w40", "w20 w21 w22 w23 w24 w25 w26 w41", "same-start"),
        record("w10", "w20", "w30", "different"),
    ]
    pairs, stats = tokenize_pairs(records, tiny_tokenizer(), max_length=8, max_prompt_length=4)
    assert [pair.id for pair in pairs] == ["same-start", "different"] and pairs[0].chosen_ids == pairs[0].rejected_ids
    assert stats.identical_after_truncation == 1
    assert str(stats).endswith(", chosen = rejected after truncation 1 (50.0%) (no signal)")


@pytest.mark.parametrize(("max_length", "max_prompt_length"), [(8, 8), (8, 0), (0, -1), (8.0, 4), (True, 0)])
def test_truncation_lengths_are_validated(max_length, max_prompt_length):
    with pytest.raises(ValueError, match=r"max_prompt_length < max_length"):
        tokenize_pairs([record("w10", "w20", "w30")], tiny_tokenizer(), max_length, max_prompt_length)


def test_chat_template_prompt_carries_generation_prompt_and_responses_the_end_of_turn():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = TINY_TEMPLATE
    pairs, _ = tokenize_pairs([record("w10 w11", "w20", "w30 w31")], tokenizer, 16, 8)
    assert pairs[0].prompt_ids == [4, 10, 11, 5, 6]  # user turn, then the assistant header
    assert (pairs[0].chosen_ids, pairs[0].rejected_ids) == ([20, 7], [30, 31, 7])  # end-of-turn, no extra eos


def test_chat_template_that_does_not_extend_the_prompt_is_refused():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = TINY_TEMPLATE.replace("w6 {{ m['content'] }}", "w8 {{ m['content'] }}")
    with pytest.raises(ValueError, match=r"test:r0 id=r0: the tokenizer's chat template does not render") as caught:
        tokenize_pairs([record("w10 " + SECRET, "w20", "w30")], tokenizer, 16, 8)
    assert SECRET not in str(caught.value)


def test_load_dimension_concatenates_sources_and_logs_one_line(tmp_path, caplog):
    first = str(write_jsonl(tmp_path / "a.jsonl", [pair(0, prompt=SECRET), pair(1)]))
    second = str(write_jsonl(tmp_path / "b.jsonl.gz", [pair(2, dim="harmless"), pair(3, split="test")]))
    sources = [PairSource(second, dim="harmless"), PairSource(first)]
    with caplog.at_level(logging.INFO, logger="panacea.data"):
        pairs, stats = load_dimension(sources, "helpful", KNOWN, tiny_tokenizer(), 16, 8)
    assert [pair.id for pair in pairs] == ["p2", "p0", "p1"] and stats.pairs == 3
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith("dimension helpful: 3 pairs")
    assert SECRET not in caplog.text
    with pytest.raises(ValueError, match=r"a.jsonl:1 id=p0: duplicate id in dimension 'helpful', first at .*a.jsonl:1"):
        load_dimension([PairSource(first), PairSource(first)], "helpful", KNOWN, tiny_tokenizer(), 16, 8)
    with pytest.raises(ValueError, match=r"needs a non-empty list of PairSource"):
        load_dimension([], "helpful", KNOWN, tiny_tokenizer(), 16, 8)


# The shipped data


def shipped_counts() -> dict[tuple[str, str, str], int]:
    """(file, dim, split) -> pair count, from data/manifest.json."""
    files = json.loads((DATA / "manifest.json").read_text())["files"]
    return {
        (name, dim, split): count
        for name, entry in files.items()
        if entry["kind"] == "pairs"
        for dim, splits in entry["dim_splits"].items()
        for split, count in splits.items()
    }


def test_shipped_data_loads_for_every_dimension_and_split():
    counts = shipped_counts()
    assert {dim for _, dim, _ in counts} == set(KNOWN) and len(counts) == 8  # 3 files x 2 splits + xstest x 2 dims
    for (name, dim, split), count in counts.items():
        records = load_pairs(PairSource(str(DATA / name), split=split), dim, KNOWN)
        assert len(records) == count, (name, dim, split)
    assert all(split == "test" for name, _, split in counts if name == "xstest.jsonl.gz")
    assert PAIR_KEYS == tuple(json.loads((DATA / "manifest.json").read_text())["pair_keys"])


@pytest.mark.integration
def test_smollm2_template_splits_the_conversation_exactly():
    from transformers import AutoTokenizer

    from panacea.base_model import embedded_model_folder

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_folder())
    records = load_pairs(PairSource(str(DATA / "helpful.jsonl.gz"), split="test"), "helpful", KNOWN)
    records += load_pairs(PairSource(str(DATA / "xstest.jsonl.gz"), split="test"), "harmless", KNOWN)
    pairs, stats = tokenize_pairs(records, tokenizer, max_length=10**6, max_prompt_length=10**6 - 1)
    assert stats.truncated_prompts == stats.truncated_responses == 0
    for key in ("chosen", "rejected"):
        conversations = [
            [{"role": "user", "content": r.prompt}, {"role": "assistant", "content": getattr(r, key)}] for r in records
        ]
        full = tokenizer(tokenizer.apply_chat_template(conversations, tokenize=False), add_special_tokens=False)
        mismatched = [
            p.id
            for p, ids in zip(pairs, full["input_ids"], strict=True)
            if p.prompt_ids + getattr(p, f"{key}_ids") != ids
        ]
        assert mismatched == [], f"{key}: {len(mismatched)} pairs split differently, e.g. {mismatched[:5]}"
    generation_prompt = tokenizer("<|im_start|>assistant\n", add_special_tokens=False).input_ids
    end_of_turn = tokenizer("<|im_end|>\n", add_special_tokens=False).input_ids
    assert all(p.prompt_ids[-len(generation_prompt) :] == generation_prompt for p in pairs)
    assert all(p.chosen_ids[-len(end_of_turn) :] == end_of_turn == p.rejected_ids[-len(end_of_turn) :] for p in pairs)


def test_a_source_without_splits_is_carved_into_disjoint_fit_and_validation(tmp_path):
    """A file without a split column is used whole for 'train' and 'test'; asked for 'fit' and for 'validation' it
    returned the whole file both times, so a tuning set overlapped the pairs trained on. Its pairs and prompts are all
    training data to carve, by prompt, as a 'train' record's are."""
    records = [{key: value for key, value in pair(number).items() if key != "split"} for number in range(80)]
    path = tmp_path / "unsplit.jsonl"
    write_jsonl(path, records)
    whole, fit, validation = (
        load_pairs(PairSource(str(path), split=s), "helpful", KNOWN) for s in ("train", "fit", "validation")
    )
    assert len(whole) == 80 and fit and validation
    assert sorted(ids(fit) + ids(validation)) == sorted(ids(whole)) and not set(ids(fit)) & set(ids(validation))
    assert all(in_validation_fold(p.prompt) for p in validation) and not any(in_validation_fold(p.prompt) for p in fit)
    prompts = {s: load_prompt_source(PromptSource(str(path), split=s)) for s in ("fit", "validation")}
    assert {r.prompt for r in prompts["validation"]} == {p.prompt for p in validation}
    assert not {r.prompt for r in prompts["fit"]} & {r.prompt for r in prompts["validation"]}


def test_validation_is_carved_from_train_by_prompt_and_fit_is_the_rest():
    """Shipped helpful pairs: 'fit' and 'validation' split 'train' by prompt, disjoint, never touching 'test'."""
    known = ["helpful", "harmless", "concise"]
    source = "data/helpful.jsonl.gz"
    train, test = (load_pairs(PairSource(source, split=split), "helpful", known) for split in ("train", "test"))
    fit, validation = (load_pairs(PairSource(source, split=split), "helpful", known) for split in ("fit", "validation"))
    assert sorted(ids(fit) + ids(validation)) == sorted(ids(train)) and not set(ids(fit)) & set(ids(validation))
    assert not set(ids(validation)) & set(ids(test))
    prompts = {
        side: {" ".join(p.prompt.lower().split()) for p in pairs} for side, pairs in (("fit", fit), ("v", validation))
    }
    assert not prompts["fit"] & prompts["v"]  # by prompt: all pairs of one prompt fall on one side
    assert 0.08 < len(prompts["v"]) / (len(prompts["v"]) + len(prompts["fit"])) < 0.18  # about an eighth
    assert all(in_validation_fold(p.prompt) for p in validation) and not any(in_validation_fold(p.prompt) for p in fit)
