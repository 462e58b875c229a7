"""train.init_from naming an export file or a Hugging Face VJEPA2 folder: a new run starts from those weights
(encoder, target encoder and, where it fits, predictor), with a fresh optimizer and step 0; a mismatching source
stops the run before step 1 with a one-line error naming the key. The weights are compared tensor by tensor with
the source, as the training code built them (a spy on build_training, nothing replaced)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_cfg

from vjepa.exports import export, read_export
from vjepa.interop.hf import read_folder
from vjepa.train import loop


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("warm") / "source"
    loop.train(tiny_cfg(run, "optim.total_steps=3"))
    return run


def _built_models(cfg):
    """Train `cfg`; return (the models' state dicts as built, before step 1; the run's summary)."""
    seen = {}
    build = loop.build_training

    def spy(*args, **kwargs):
        models, optimizer, aux = build(*args, **kwargs)
        seen.update({k: {n: t.detach().clone() for n, t in models[k].state_dict().items()} for k in models})
        return models, optimizer, aux

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "build_training", spy)
        result = loop.train(cfg)
    return seen, result


def _same(got: dict, want: dict, prefix: str = "") -> None:
    got = {k.removeprefix(prefix): v for k, v in got.items() if k.startswith(prefix)}
    assert set(got) == set(want)
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor.float(), rtol=0, atol=0, msg=name)


def test_init_from_an_export_with_predictor(source_run, tmp_path, capsys):
    out = tmp_path / "with_pred.pt"
    export(source_run, out, with_predictor=True)
    ex = read_export(out)
    seen, result = _built_models(tiny_cfg(tmp_path / "new", "optim.total_steps=2", f"train.init_from={out}"))
    _same(seen["encoder"], ex.encoder, "backbone.")
    _same(seen["target_encoder"], ex.encoder, "backbone.")
    _same(seen["predictor"], ex.predictor)
    text = capsys.readouterr().out
    assert f"warm start from {out}" in text and "encoder and predictor weights" in text
    assert [r["step"] for r in result["history"]] == [1, 2]  # step 0 onward, not the source's step 3


def test_init_from_an_encoder_only_export_starts_a_fresh_predictor(source_run, tmp_path, capsys):
    out = tmp_path / "encoder.safetensors"
    export(source_run, out)
    cfg = tiny_cfg(tmp_path / "new", "optim.total_steps=2", f"train.init_from={out}")
    seen, _ = _built_models(cfg)
    _same(seen["encoder"], read_export(out).encoder, "backbone.")
    plain, _ = _built_models(tiny_cfg(tmp_path / "plain", "optim.total_steps=2"))
    _same(seen["predictor"], plain["predictor"])  # the seeded fresh initialisation, as without init_from
    assert "the predictor starts fresh (the source has none)" in capsys.readouterr().out


def test_init_from_a_hugging_face_folder(tmp_path, capsys):
    pytest.importorskip("transformers")
    rope = "model.pos_embed=rope"  # the layout transformers' VJEPA2 has
    loop.train(tiny_cfg(tmp_path / "source", rope, "optim.total_steps=2"))
    folder = tmp_path / "hf"
    export(tmp_path / "source", None, hf_dir=folder)
    encoder, predictor = read_folder(folder)
    seen, _ = _built_models(tiny_cfg(tmp_path / "new", rope, "optim.total_steps=2", f"train.init_from={folder}"))
    _same(seen["encoder"], encoder.state_dict(), "backbone.")
    _same(seen["predictor"], predictor.state_dict())
    (folder / "model.safetensors").write_bytes(b"\x00" * 16)  # a damaged weights file: one line, exit 2
    assert loop.main(tiny_cfg(tmp_path / "bad", rope, f"train.init_from={folder}")) == 2
    assert "is not a readable safetensors file" in capsys.readouterr().err


def test_init_from_a_different_architecture_is_a_one_line_error(source_run, tmp_path, capsys):
    out = tmp_path / "encoder.pt"
    export(source_run, out)
    run = tmp_path / "wide"
    assert loop.main(tiny_cfg(run, "model.embed_dim=96", f"train.init_from={out}")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: train.init_from={out} ") and "does not match the model" in err
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())


def test_init_from_something_else_names_what_it_is(tmp_path, capsys):
    probe = tmp_path / "probe.pt"
    torch.save({"format": "vjepa.probe"}, probe)
    assert loop.main(tiny_cfg(tmp_path / "r", f"train.init_from={probe}")) == 2
    assert "train.init_from" in (err := capsys.readouterr().err) and "probe checkpoint" in err
    assert loop.main(tiny_cfg(tmp_path / "r2", f"train.init_from={tmp_path / 'missing.pt'}")) == 2
    assert "missing.pt" in capsys.readouterr().err
    broken = tmp_path / "hf_broken"  # a VJEPA2 folder whose config.json lacks the architecture
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "vjepa2"}')
    (broken / "model.safetensors").write_bytes(b"")
    assert loop.main(tiny_cfg(tmp_path / "r3", f"train.init_from={broken}")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: train.init_from={broken}:") and "missing entry" in err and err.count("\n") == 1
