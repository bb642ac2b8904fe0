"""The text memo (movakit/models/layers/text_memo.py): the steps of a job compute the text keys and values once,
a hit is bit-identical to computing afresh, and an in-place change of the context or of a weight, gradients, or
a freed context never reuse an entry."""

from __future__ import annotations

import gc

import torch
from tiny_model_configs import build, tiny_video_dit

from movakit.models.video_dit import VideoDiT, VideoDiTConfig


class _Count:
    """Counts the calls of one module (a forward hook)."""

    def __init__(self, module: torch.nn.Module):
        self.n = 0
        module.register_forward_hook(self)

    def __call__(self, *_args) -> None:
        self.n += 1


def _setup():
    model = build(VideoDiT, VideoDiTConfig, tiny_video_dit(), 0).eval()
    gen = torch.Generator().manual_seed(1)
    x = [torch.randn(1, 36, 3, 4, 6, generator=gen) for _ in range(2)]
    ctx = torch.randn(1, 9, 32, generator=gen)
    return model, x, ctx, _Count(model.blocks[0].cross_attn.k)


def test_steps_on_one_context_compute_the_keys_once_and_exactly():
    model, x, ctx, k_calls = _setup()
    with torch.no_grad():
        model(x[0], torch.tensor([1000.0]), ctx)
        second = model(x[1], torch.tensor([500.0]), ctx)
        assert k_calls.n == 1
        fresh = model(x[1], torch.tensor([500.0]), ctx.clone())  # another tensor: computed afresh
    assert k_calls.n == 2
    assert torch.equal(second, fresh)


def test_in_place_changes_of_context_or_weights_are_seen():
    model, x, ctx, k_calls = _setup()
    t = torch.tensor([700.0])
    with torch.no_grad():
        model(x[0], t, ctx)
        ctx.mul_(2.0)
        changed = model(x[0], t, ctx)
        assert k_calls.n == 2 and torch.equal(changed, model(x[0], t, ctx.clone()))
        state = {k: v + 0.01 if k == "blocks.1.cross_attn.v.bias" else v for k, v in model.state_dict().items()}
        model.load_state_dict(state)  # copies into the parameters in place
        reloaded = model(x[0], t, ctx)
        assert k_calls.n == 4 and torch.equal(reloaded, model(x[0], t, ctx.clone()))
        assert not torch.equal(reloaded, changed)


def test_no_entry_with_gradients_on_or_after_the_context_is_freed():
    model, x, ctx, k_calls = _setup()
    model(x[0], torch.tensor([700.0]), ctx)
    assert len(model._text_memo) == 0
    with torch.no_grad():
        model(x[0], torch.tensor([700.0]), ctx)
    assert len(model._text_memo) == 1
    del ctx
    gc.collect()
    assert len(model._text_memo) == 0


def test_an_adapter_hook_attached_or_removed_makes_the_memo_stale():
    """An unmerged LoRA adapter is a forward hook on the cross-attention k/v linears: the same context tensor must not
    return the keys and values computed without it (or with another one)."""
    from movakit.loading.demo import build_component, tiny_config

    torch.manual_seed(0)
    tower = build_component("video_dit", tiny_config("video_dit")).eval()
    context = torch.randn(1, 7, tower.config.text_dim)
    with torch.no_grad():
        base = tower.text_kv(context)
        handle = tower.blocks[0].cross_attn.v.register_forward_hook(lambda _m, _a, out: out + 1.0)
        hooked = tower.text_kv(context)
        handle.remove()
        again = tower.text_kv(context)
    assert torch.equal(hooked[0][1], base[0][1] + 1.0)  # v recomputed with the hook, not the memo's base entry
    assert torch.equal(again[0][1], base[0][1])  # and again without it
