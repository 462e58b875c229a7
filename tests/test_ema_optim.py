"""EMA update and optimiser groups against hand-computed oracles, through the same FSDP2 wrapping as training."""

import copy

import torch

from vjepa.train.ema import ema_pairs, ema_update
from vjepa.train.optim import no_decay, param_groups


def full_tensor(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def test_foreach_lerp_ema_matches_formula():
    torch.manual_seed(0)
    online, target = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    t, s = ema_pairs(online, target)
    ema_update(t, s, 0.9)
    for k, v in target.state_dict().items():
        torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * online.state_dict()[k])
    ema_update(t, s, 1.0)  # momentum 1: unchanged
    torch.testing.assert_close(target.weight, 0.9 * before["weight"] + 0.1 * online.weight)


def test_target_encoder_forward_sees_ema_updates_under_fsdp():
    """The FSDP2-wrapped target encoder must serve its updated shards (root included) in the next forward."""
    from conftest import tiny_cfg

    from vjepa.distributed import apply_fsdp, init_distributed
    from vjepa.models.build import build_models

    info = init_distributed("cpu")
    cfg = tiny_cfg("unused")
    torch.manual_seed(0)
    encoder, _ = build_models(cfg)
    target = copy.deepcopy(encoder).requires_grad_(False)
    plain = copy.deepcopy(encoder)
    apply_fsdp(encoder, encoder.blocks, info.mesh)
    apply_fsdp(target, target.blocks, info.mesh, no_backward=True)
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        target(video)  # a forward before the update, as in training
        for p in encoder.parameters():
            p.add_(0.5)  # stand-in for an optimiser step on the shards
        pairs = ema_pairs(encoder, target)
        ema_update(*pairs, 0.5)
        want = {
            k: 0.5 * v + 0.5 * (v + 0.5) for k, v in plain.state_dict().items() if k in dict(plain.named_parameters())
        }
        for k, v in target.named_parameters():
            torch.testing.assert_close(full_tensor(v), want[k])
        plain.load_state_dict({**plain.state_dict(), **want})
        torch.testing.assert_close(target(video), plain(video), rtol=1e-5, atol=1e-5)


def test_no_weight_decay_on_biases_norms_positions_mask_tokens():
    from conftest import tiny_cfg

    from vjepa.models.build import build_models

    encoder, predictor = build_models(tiny_cfg("unused"))
    groups = param_groups({"encoder": encoder, "predictor": predictor})
    decay_ids = {id(p) for g in groups if g["apply_wd"] for p in g["params"]}
    for module in (encoder, predictor):
        for name, p in module.named_parameters():
            excluded = name.endswith(".bias") or ".norm" in name or "norm1" in name or "mask_token" in name
            if excluded or p.ndim <= 1:
                assert id(p) not in decay_ids, name
                assert no_decay(name, p)
            else:
                assert id(p) in decay_ids, name
    n_total = sum(1 for m in (encoder, predictor) for p in m.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_total
