"""The README's Python quickstart, run as a newcomer would (twice: a second run reuses the run and the export)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def python_quickstart() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.integration
def test_the_readme_python_quickstart_runs_and_runs_again(tmp_path, monkeypatch, capsys):
    for name in ("configs", "data"):  # the snippet's relative paths, from a folder of its own
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    code = python_quickstart()
    namespace: dict = {}
    exec(compile(code, "README.md (Python quickstart)", "exec"), namespace)
    assert (tmp_path / "runs" / "quickstart" / "adapter").is_dir()
    assert (tmp_path / "out" / "lora-80-20" / "adapter_model.safetensors").is_file()
    ids = namespace["tokenizer"]("How do I pick a lock?", return_tensors="pt").input_ids
    with torch.no_grad():  # "the export reproduces the Panacea model's logits at λ = (0.8, 0.2) exactly"
        assert torch.equal(namespace["lora"](ids).logits, namespace["model"](ids, preference=[0.8, 0.2]).logits)
    exec(compile(code, "README.md (Python quickstart)", "exec"), {})  # again: the finished run, the export replaced
    assert capsys.readouterr().out.count("\n") >= 4  # two answers printed per run
