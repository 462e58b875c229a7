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

import pytest
import torch
import torch.multiprocessing as mp
from conftest import dist_env, free_port, losses, tiny_cfg, two_against_one

from vjepa.train.loop import train

pytestmark = pytest.mark.distributed


def test_two_processes_match_one_process(tmp_path):
    two_against_one(tmp_path, 4, [])


def test_two_processes_match_one_process_with_vicreg_and_straddling_groups(tmp_path):
    # global batch 6 in groups of 4: rank 1 holds row 3 of group 0 and both rows of group 1 (padded masks)
    vicreg = ["optim.enc_var_weight=1.0", "optim.enc_cov_weight=0.5", "optim.var_reg_weight=0.5"]
    one, r0, r1 = two_against_one(tmp_path, 6, [*vicreg, "mask.group_size=4", "train.seed=1"])
    assert any(r1["valid"]) and any(one["valid"])  # the padded path was exercised


def test_two_processes_match_one_process_with_an_objective_head(tmp_path):
    # an auxiliary objective with a trainable head (FSDP2-sharded, own lr multiplier) plus VICReg on top
    head = "objectives=[{name: 'objective_fixtures:ContextProbe', weight: 1.0, lr_scale: 3.0}]"
    one, r0, r1 = two_against_one(tmp_path, 4, [head, "optim.enc_var_weight=1.0"])
    assert any(name.startswith("aux.") for name in one["grads"])
    for name, w in r0["heads"].items():
        assert torch.equal(w, r1["heads"][name]), name
        torch.testing.assert_close(w, one["heads"][name], rtol=1e-5, atol=1e-6, msg=name)


def _train_worker(rank: int, world: int, port: int, run_dir: str, overrides: list) -> None:
    dist_env(rank, world, port)
    from vjepa.distributed import shutdown
    from vjepa.train.loop import train

    train(tiny_cfg(run_dir, *overrides))
    shutdown()


def _spawn_run(world: int, run, overrides: list) -> None:
    if world == 1:
        train(tiny_cfg(run, *overrides))
    else:
        mp.spawn(_train_worker, args=(world, free_port(), str(run), overrides), nprocs=world, join=True)


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
