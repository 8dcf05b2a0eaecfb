"""The pairs scorer's held-out sets: one column per source, named after the file, never merged."""

from __future__ import annotations

from panacea.eval.scorers import load_pair_sets
from panacea.training import TrainConfig

from panacea._config import dataclass_from_dict
from tests.conftest import tiny_tokenizer
from tests.helpers import config_dict, make_workspace


def test_two_sources_with_one_file_name_stay_two_sets(tmp_path):
    workspace = make_workspace(tmp_path)
    data = config_dict(workspace, tmp_path / "run")
    path = data["dimensions"][0]["train"][0]["path"]
    data["dimensions"][0]["eval"] = [{"path": path, "max_pairs": 2}, {"path": path, "max_pairs": 3, "seed": 1}]
    config = dataclass_from_dict(TrainConfig, data, where="test")
    sets = load_pair_sets(config, tiny_tokenizer())
    assert [(pair_set.name, len(pair_set.pairs)) for pair_set in sets] == [("a/a", 2), ("a/a-2", 3)]
