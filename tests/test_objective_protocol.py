"""The auxiliary-objective protocol end to end: config checks, weight 0 = plain, metrics in the log, heads in the
optimiser, checkpoints, resume and export, layered config files, and no cost without objectives."""

import json
from pathlib import Path

import pytest
import torch
from conftest import losses, tiny_cfg

from vjepa.config import ConfigError, load_config
from vjepa.exports import export, read_checkpoint, read_export
from vjepa.objectives import catalogue
from vjepa.train import step as step_module
from vjepa.train.checkpoint import latest_checkpoint
from vjepa.train.loop import train

PROBE = "objective_fixtures:ContextProbe"


def probe(weight=1.0, **options) -> str:
    opts = json.dumps(options)
    return f"objectives=[{{name: '{PROBE}', weight: {weight}, options: {opts}, lr_scale: 2.0, wd_scale: 0.5}}]"


def test_unknown_objective_lists_the_valid_names():
    with pytest.raises(ConfigError, match=r"objectives\.0\.name: unknown objective 'nope'; valid: \[.*'vicreg'"):
        load_config(None, ["data.source=synthetic", "objectives=[{name: nope}]"])


def test_unknown_or_mistyped_option_names_the_key():
    with pytest.raises(ConfigError, match=r"unknown key 'objectives\.0\.options\.scal'; valid keys here: \['bias'"):
        load_config(None, ["data.source=synthetic", f"objectives=[{{name: '{PROBE}', options: {{scal: 1}}}}]"])
    with pytest.raises(ConfigError, match=r"objectives\.0\.options\.bias: expected true/false"):
        load_config(None, ["data.source=synthetic", f"objectives=[{{name: '{PROBE}', options: {{bias: 3}}}}]"])
    with pytest.raises(ConfigError, match=r"objectives\.0\.weight=-1\.0 must be >= 0"):
        load_config(None, ["data.source=synthetic", f"objectives=[{{name: '{PROBE}', weight: -1}}]"])
    with pytest.raises(ConfigError, match=r"objectives\.0\.name: 'json:dumps' does not name an AuxObjective"):
        load_config(None, ["data.source=synthetic", "objectives=[{name: 'json:dumps'}]"])
    with pytest.raises(ConfigError, match=r"unknown key 'objectives\.0\.wieght'"):
        load_config(None, ["data.source=synthetic", "objectives=[{name: vicreg, wieght: 1}]"])


def test_weight_zero_gives_exactly_the_plain_run_and_builds_nothing(tmp_path):
    plain = train(tiny_cfg(tmp_path / "plain", "optim.total_steps=3"))
    off = train(tiny_cfg(tmp_path / "off", "optim.total_steps=3", probe(weight=0.0)))
    assert losses(off) == losses(plain)  # bitwise
    assert not any(k.startswith("aux.") for k in off["history"][-1])
    meta = json.loads((latest_checkpoint(tmp_path / "off") / "meta.json").read_text())
    assert not any(name.startswith("objectives.") for name in meta["shapes"])


def test_the_plain_step_builds_no_step_state(tmp_path, monkeypatch):
    class Forbidden:
        def __init__(self, **_):
            raise AssertionError("a StepState was built without objectives")

    monkeypatch.setattr(step_module, "StepState", Forbidden)
    train(tiny_cfg(tmp_path / "p", "optim.total_steps=2"))  # passes only if no state is built


def test_head_objective_logs_trains_checkpoints_resumes_and_exports(tmp_path, capsys):
    full = train(tiny_cfg(tmp_path / "full", "optim.total_steps=6", "train.checkpoint_every=3", probe()))
    plain = train(tiny_cfg(tmp_path / "plain", "optim.total_steps=6"))
    rec = full["history"][-1]
    assert rec["aux.context_probe"] > 0 and "aux.context_probe.head_norm" in rec
    assert rec["loss"] == pytest.approx(rec["jepa_loss"] + rec["aux.context_probe"], rel=1e-5)
    assert losses(full) != losses(plain)
    out = capsys.readouterr().out
    assert "(jepa " in out and " context_probe " in out  # the progress line shows the objective
    logged = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert all("aux.context_probe" in r for r in logged)

    # resume: 3 steps, stop, 3 more == 6 in one go, bitwise (the head and its optimiser state are in the checkpoint)
    part = tmp_path / "part"
    first = train(tiny_cfg(part, "optim.total_steps=6", "train.checkpoint_every=3", "train.stop_after=3", probe()))
    rest = train(tiny_cfg(part, "optim.total_steps=6", "train.checkpoint_every=3", probe()))
    assert losses(first) + losses(rest) == losses(full)
    meta = json.loads((latest_checkpoint(part) / "meta.json").read_text())
    assert meta["shapes"]["objectives.context_probe.head.weight"] == [64, 64]

    # export with the predictor carries the head; both file formats round-trip
    ex = read_checkpoint(part, with_predictor=True)
    assert set(ex.heads) == {"context_probe"} and set(ex.heads["context_probe"]) == {"head.weight", "head.bias"}
    assert ex.objectives[0]["name"] == PROBE
    for suffix in (".pt", ".safetensors"):
        export(part, tmp_path / f"e{suffix}", with_predictor=True)
        back = read_export(tmp_path / f"e{suffix}")
        for name, t in ex.heads["context_probe"].items():
            assert torch.equal(back.heads["context_probe"][name], t), (suffix, name)
        assert back.objectives[0]["name"] == PROBE
    export(part, tmp_path / "enc.pt")  # without the predictor: no heads
    assert read_export(tmp_path / "enc.pt").heads is None


def test_head_parameters_get_their_own_lr_and_wd_multipliers(tmp_path):
    from vjepa.distributed import init_distributed
    from vjepa.train.loop import build_training
    from vjepa.train.optim import set_hyper

    cfg = tiny_cfg(tmp_path / "o", probe())
    models, optimizer, aux = build_training(cfg, init_distributed("cpu"), torch.float32)
    assert [p.key for p in aux] == ["context_probe"]
    set_hyper(optimizer, 1e-3, 0.04)
    head = {id(p) for p in models["objectives"].parameters()}
    for group in optimizer.param_groups:
        mine = {id(p) for p in group["params"]} <= head
        assert group["lr"] == pytest.approx(2e-3 if mine else 1e-3)
        assert group["weight_decay"] == pytest.approx((0.02 if mine else 0.04) if group["apply_wd"] else 0.0)
    assert head <= {id(p) for g in optimizer.param_groups for p in g["params"]}


def test_vicreg_config_keys_are_the_builtin_objective(tmp_path):
    # optim.enc_var_weight / enc_cov_weight and an explicit vicreg entry with the same coefficients agree
    keys = train(
        tiny_cfg(tmp_path / "k", "optim.total_steps=3", "optim.enc_var_weight=1.0", "optim.enc_cov_weight=0.04")
    )
    entry = "objectives=[{name: vicreg, weight: 1.0, options: {var: 1.0, cov: 0.04}}]"
    listed = train(tiny_cfg(tmp_path / "l", "optim.total_steps=3", entry))
    assert losses(keys) == losses(listed)
    assert "aux.vicreg.var" in keys["history"][-1]


def test_config_files_layer_in_order(tmp_path):
    base, ablation = tmp_path / "base.yaml", tmp_path / "ablation.yaml"
    base.write_text("data: {source: synthetic}\noptim: {lr: 1.0e-3, total_steps: 50, warmup_steps: 5}\n")
    ablation.write_text(f"optim: {{lr: 2.0e-3}}\nobjectives: [{{name: '{PROBE}', weight: 0.3}}]\n")
    cfg = load_config([base, ablation], ["optim.warmup_steps=5"])
    assert (cfg.optim.lr, cfg.optim.total_steps, cfg.optim.warmup_steps) == (2e-3, 50, 5)
    assert cfg.objectives[0].name == PROBE and cfg.objectives[0].weight == 0.3
    bad = tmp_path / "bad.yaml"
    bad.write_text("objectives: [{name: vicreg, options: {varr: 1}}]\n")
    with pytest.raises(ConfigError, match=r"objectives\.0\.options\.varr"):
        load_config([base, bad])


def test_catalogue_lists_builtin_and_shipped_objectives():
    names = catalogue(("vjepa.evals.objectives",))
    assert "vicreg" in names
    for cls in names.values():
        assert cls.source and cls.summary and cls.default_weight >= 0, cls


def test_objectives_command_lists_options(capsys):
    from vjepa.cli import main

    assert main(["objectives", "--json"]) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    vicreg = next(r for r in records if r["name"] == "vicreg")
    assert vicreg["options"]["var"]["default"] == 25.0 and vicreg["default_weight"] == 1.0
    assert main(["objectives", "--modules", "no.such.module"]) == 2


def test_the_worked_example_in_the_docs_runs(tmp_path, monkeypatch):
    import re
    import sys
    import types

    text = (Path(__file__).parents[1] / "docs" / "objectives.md").read_text()
    code = re.search(r"```python\n(# mylab/objectives.py\n.*?)```", text, re.S).group(1)
    module = types.ModuleType("doc_example")
    exec(compile(code, "docs/objectives.md", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "doc_example", module)
    result = train(tiny_cfg(tmp_path / "doc", "optim.total_steps=2", "objectives=[{name: 'doc_example:Slow'}]"))
    rec = result["history"][-1]
    assert rec["aux.slow"] > 0 and "aux.slow.per_family_max" in rec
    with pytest.raises(ConfigError, match=r"objectives\.0\.options: power=-1\.0 must be > 0"):
        load_config(None, ["data.source=synthetic", "objectives=[{name: 'doc_example:Slow', options: {power: -1}}]"])


def test_a_head_never_changes_the_encoders_clipped_update(tmp_path):
    # global clipping takes encoder + predictor on one norm and the heads on their own: a probe with huge gradients
    # leaves the encoder's and predictor's steps exactly as without it (the probe reads only detached targets)
    import copy

    from vjepa.distributed import init_distributed
    from vjepa.objectives.registry import Planned
    from vjepa.train.loop import build_training
    from vjepa.train.optim import build_optimizer
    from vjepa.train.step import clip_gradients

    cfg = tiny_cfg(tmp_path / "c", probe(scale=1e6))
    models, _, aux = build_training(cfg, init_distributed("cpu"), torch.float32, fsdp=False)
    enc, pred, heads = models["encoder"], models["predictor"], models["objectives"]
    for p in list(enc.parameters()) + list(pred.parameters()):
        p.grad = torch.ones_like(p)
    for p in heads.parameters():
        p.grad = 1e6 * torch.ones_like(p)
    without = {n: p.grad.clone() for n, p in enc.named_parameters()}
    optimizer = build_optimizer(cfg.optim, {"encoder": enc, "predictor": pred, "heads": heads})
    alone = copy.deepcopy(enc)
    opt_alone = build_optimizer(cfg.optim, {"encoder": alone})
    for p in alone.parameters():
        p.grad = torch.ones_like(p)
    total = clip_gradients(enc, pred, optimizer, 1.0, "global", True, heads)
    clip_gradients(alone, torch.nn.Linear(1, 1), opt_alone, 1.0, "global", True)
    n_main = sum(p.numel() for p in list(enc.parameters()) + list(pred.parameters()))
    for name, p in enc.named_parameters():
        torch.testing.assert_close(p.grad, without[name] / n_main**0.5, msg=name)  # clipped by the main norm only
    assert max(p.grad.abs().max() for p in heads.parameters()) <= 1.0  # heads clipped on their own
    assert float(total) > 1e6
    assert isinstance(aux[0], Planned)
