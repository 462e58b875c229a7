"""Distributed code against a single-process oracle (gloo on CPU, real separate processes).

- The training step on 2 processes, each with half of the global batch, gives the same loss, gradients and
  updated weights as 1 process with the whole batch, and the EMA target weights are identical on every rank;
  also with the VICReg terms on (statistics gathered over processes) and with mask groups that straddle the
  processes (padded rows of groups with different kept counts).
- The same with an auxiliary objective that owns a head (sharded like the predictor, its own lr multiplier).
- A run on 2 processes, stopped and resumed on 1 process with the same global batch, continues with the losses
  of an uninterrupted run, and the other way round. One fp32 process trains without FSDP2 (plain modules, plain
  tensors in the checkpoint), two processes with it (DTensor shards): so these runs also check the 1-process
  plain path against the 2-process sharded one, and checkpoints moving between the two.
"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from test_train import losses, tiny_cfg

from vjepa.train.loop import train

pytestmark = pytest.mark.distributed


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: gathered from an FSDP2 DTensor, or the plain tensor of an unsharded module."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _step_worker(rank: int, world: int, port: int, out_dir: str, global_batch: int, extra: list) -> None:
    _env(rank, world, port)
    from vjepa.data.loader import build_mask_generator
    from vjepa.distributed import init_distributed, shutdown
    from vjepa.train.ema import ema_pairs
    from vjepa.train.loop import build_training
    from vjepa.train.schedules import hyper
    from vjepa.train.step import Objective, grid_of, train_step

    cfg = tiny_cfg(out_dir, f"data.batch_size={global_batch // world}", "optim.clip_grad=1.0", *extra)
    info = init_distributed("cpu")
    models, optimizer, aux = build_training(cfg, info, torch.float32)
    encoder, predictor, target = models["encoder"], models["predictor"], models["target_encoder"]
    ema_t, ema_s = ema_pairs(encoder, target)
    gen = build_mask_generator(cfg)
    b, lo = global_batch // world, rank * (global_batch // world)
    result = {"loss": [], "valid": []}
    for step in range(2):
        video = torch.randn(global_batch, 3, 8, 32, 32, generator=torch.Generator().manual_seed(step))
        masks = gen.for_rows(step, lo, lo + b, global_batch)
        result["valid"] += [m.tgt_valid is not None for m in masks]
        out = train_step(
            encoder=encoder,
            target_encoder=target,
            predictor=predictor,
            optimizer=optimizer,
            ema_targets=ema_t,
            ema_sources=ema_s,
            video=video[lo : lo + b],
            masks=masks,
            grid=grid_of(video, 2, 16),
            hp=hyper(cfg.optim, step),
            clip_grad=1.0,
            objective=Objective.from_config(cfg.optim, cfg.model.levels),
            aux=aux,
            step=step,
        )
        loss = out.loss.clone()
        torch.distributed.all_reduce(loss)
        result["loss"].append(float(loss) / world)
    result["grads"] = {n: _full(p.grad) for n, p in encoder.named_parameters()}
    result["grads"].update({"pred." + n: _full(p.grad) for n, p in predictor.named_parameters()})
    if aux:  # auxiliary objectives' heads: gradients (before the step's update) and the updated weights
        result["grads"].update({"aux." + n: _full(p.grad) for n, p in models["objectives"].named_parameters()})
        result["heads"] = {n: _full(p) for n, p in models["objectives"].named_parameters()}
    result["target"] = {n: _full(p) for n, p in target.named_parameters()}
    torch.save(result, os.path.join(out_dir, f"step_w{world}_r{rank}.pt"))
    shutdown()


def _two_against_one(tmp_path, global_batch: int, extra: list) -> None:
    for world in (1, 2):
        mp.spawn(_step_worker, args=(world, _port(), str(tmp_path), global_batch, extra), nprocs=world, join=True)
    one = torch.load(tmp_path / "step_w1_r0.pt")
    r0, r1 = torch.load(tmp_path / "step_w2_r0.pt"), torch.load(tmp_path / "step_w2_r1.pt")
    assert r0["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert set(r0["grads"]) == set(one["grads"])
    for name, g in one["grads"].items():
        torch.testing.assert_close(r0["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)
    for name, w in r0["target"].items():
        assert torch.equal(w, r1["target"][name]), name  # identical EMA weights on every rank
        torch.testing.assert_close(w, one["target"][name], rtol=1e-5, atol=1e-6, msg=name)
    return one, r0, r1


def test_two_processes_match_one_process(tmp_path):
    _two_against_one(tmp_path, 4, [])


def test_two_processes_match_one_process_with_vicreg_and_straddling_groups(tmp_path):
    # global batch 6 in groups of 4: rank 1 holds row 3 of group 0 and both rows of group 1 (padded masks)
    vicreg = ["optim.enc_var_weight=1.0", "optim.enc_cov_weight=0.5", "optim.var_reg_weight=0.5"]
    one, r0, r1 = _two_against_one(tmp_path, 6, [*vicreg, "mask.group_size=4", "train.seed=1"])
    assert any(r1["valid"]) and any(one["valid"])  # the padded path was exercised


def test_two_processes_match_one_process_with_an_objective_head(tmp_path):
    # an auxiliary objective with a trainable head (FSDP2-sharded, own lr multiplier) plus VICReg on top
    head = "objectives=[{name: 'objective_fixtures:ContextProbe', weight: 1.0, lr_scale: 3.0}]"
    one, r0, r1 = _two_against_one(tmp_path, 4, [head, "optim.enc_var_weight=1.0"])
    assert any(name.startswith("aux.") for name in one["grads"])
    for name, w in r0["heads"].items():
        assert torch.equal(w, r1["heads"][name]), name
        torch.testing.assert_close(w, one["heads"][name], rtol=1e-5, atol=1e-6, msg=name)


def _train_worker(rank: int, world: int, port: int, run_dir: str, overrides: list) -> None:
    _env(rank, world, port)
    from vjepa.distributed import shutdown
    from vjepa.train.loop import train

    train(tiny_cfg(run_dir, *overrides))
    shutdown()


def _spawn_run(world: int, run, overrides: list) -> None:
    if world == 1:
        train(tiny_cfg(run, *overrides))
    else:
        mp.spawn(_train_worker, args=(world, _port(), str(run), overrides), nprocs=world, join=True)


@pytest.mark.parametrize("first_world, then_world", [(2, 1), (1, 2)])
def test_a_run_resumes_on_another_number_of_processes(tmp_path, first_world, then_world):
    import json

    reference = losses(train(tiny_cfg(tmp_path / "ref", "optim.total_steps=4", "data.batch_size=4")))
    run = tmp_path / "run"
    first = ["optim.total_steps=4", f"data.batch_size={4 // first_world}", "train.stop_after=2"]
    _spawn_run(first_world, run, [*first, "train.checkpoint_every=2"])
    got = [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert got == pytest.approx(reference[:2], rel=1e-4)
    _spawn_run(then_world, run, ["optim.total_steps=4", f"data.batch_size={4 // then_world}"])
    got = [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert got == pytest.approx(reference, rel=1e-4)
