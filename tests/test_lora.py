"""Properties of the spatio-temporal LoRA layer that must always hold."""

import pytest
import torch
import torch.nn as nn

from setseq import lora
from setseq.errors import SetseqError


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.GELU(), nn.Linear(16, 8))


def _trained_like(layers, seed=1, basis=True):
    """Give every adapter non-zero basis and motion, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers.values():
            if basis:
                layer.basis.copy_(torch.randn(layer.basis.shape, generator=g))
            for b in layer.motion.values():
                b.copy_(torch.randn(b.shape, generator=g))


def test_zero_initialised_adapter_reproduces_base_exactly():
    model, x = _model(), torch.randn(5, 12)
    ref = model(x)
    layers = lora.inject(model, ["*"], rank=4)
    for layer in layers.values():
        layer.add_motion("c")
    model.train()
    lora.set_dropout(model, identity=0.8, motion=0.5)
    assert torch.equal(model(x), ref)
    model.eval()
    assert torch.equal(model(x), ref)


def test_merged_equals_unmerged_and_unmerge_restores_weights():
    model, x = _model(), torch.randn(5, 12)
    layers = lora.inject(model, ["0", "2"], rank=3, scale=0.5)
    for layer in layers.values():
        layer.add_motion("c")
    _trained_like(layers)
    lora.set_scales(model, identity=0.7, motion=1.3)
    model.eval()
    before = {n: l.base_layer.weight.clone() for n, l in layers.items()}
    unmerged = model(x)
    lora.merge(model)
    merged = model(x)
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert not torch.equal(layers["0"].base_layer.weight, before["0"])
    lora.unmerge(model)
    for n, l in layers.items():
        torch.testing.assert_close(l.base_layer.weight, before[n], rtol=0, atol=1e-6)


def test_forward_is_the_papers_formula():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = lora.SetSeqLinear(base, rank=3, scale=0.25)
    layer.add_motion("a")
    layer.add_motion("b")
    _trained_like({"x": layer})
    layer.identity_scale, layer.motion_scales = 0.5, {"a": 2.0, "b": -1.0}
    layer.rank_weights.copy_(torch.tensor([1.0, 0.0, 3.0]))
    layer.eval()
    x = torch.randn(4, 6)
    A, B1 = layer.basis, layer.identity
    coef = torch.diag(torch.tensor([1.0, 0.0, 3.0])) @ (0.5 * B1) + 2.0 * layer.motion["a"] - layer.motion["b"]
    expected = base(x) + 0.25 * x @ (A @ coef).T
    torch.testing.assert_close(layer(x), expected)


def test_motion_scale_zero_gives_identity_only_model():
    model, x = _model(), torch.randn(3, 12)
    layers = lora.inject(model, ["*"], rank=2)
    _trained_like(layers)
    model.eval()
    identity_only = model(x)
    for layer in layers.values():
        layer.add_motion("c")
    _trained_like(layers, seed=2, basis=False)  # motion now non-zero
    with_motion = model(x)
    assert not torch.allclose(with_motion, identity_only)
    lora.set_scales(model, motion={"c": 0.0})
    torch.testing.assert_close(model(x), identity_only)


def test_dropout_masks_only_coefficients_and_only_in_training():
    torch.manual_seed(0)
    layer = lora.SetSeqLinear(nn.Linear(8, 8), rank=4)
    _trained_like({"x": layer})
    layer.identity_dropout = 0.8
    seen = []
    orig = lora._drop

    def spy(b, p, training):
        out = orig(b, p, training)
        seen.append((b is layer.identity, p, training, (out == 0).float().mean().item()))
        return out

    lora._drop = spy
    try:
        x = torch.randn(2, 8)
        layer.train()
        layer(x)
        layer.eval()
        y1, y2 = layer(x), layer(x)
    finally:
        lora._drop = orig
    # in training the identity coefficients were masked (about 80 % zeros) ...
    assert seen[0][0] and seen[0][2] and 0.5 < seen[0][3] < 0.98
    # ... in eval nothing was masked and the output is deterministic
    assert all(frac < 0.05 for _, _, training, frac in seen[1:] if not training)
    assert torch.equal(y1, y2)
    # the basis itself is never masked: its values are untouched by a training forward
    basis = layer.basis.clone()
    layer.train()
    layer(x)
    assert torch.equal(layer.basis, basis)


def test_dropout_keeps_mean_of_coefficients():
    torch.manual_seed(0)
    b = torch.ones(200, 200)
    dropped = lora._drop(b, 0.8, training=True)
    assert abs(dropped.mean().item() - 1.0) < 0.05
    assert abs((dropped == 0).float().mean().item() - 0.8) < 0.02


def test_inject_without_match_raises_with_names():
    with pytest.raises(SetseqError, match="no linear layer matches"):
        lora.inject(_model(), ["nothing.*"], rank=2)


def test_set_scales_rejects_unknown_concept():
    model = _model()
    layers = lora.inject(model, ["*"], rank=2)
    for layer in layers.values():
        layer.add_motion("a")
    with pytest.raises(SetseqError, match="no motion for concept"):
        lora.set_scales(model, motion={"zzz": 1.0})


def _controls(layers):
    return [(l.identity_scale, dict(l.motion_scales), l.rank_weights.clone()) for l in layers.values()]


def test_scoped_scales_apply_inside_and_restore_on_exit_even_on_an_exception():
    model, x = _model(), torch.randn(3, 12)
    layers = lora.inject(model, ["*"], rank=2)
    for layer in layers.values():
        layer.add_motion("a")
        layer.add_motion("b")
    _trained_like(layers)
    model.eval()
    lora.set_scales(model, identity=0.9, motion={"b": 0.3})  # the state a block must give back
    before, y0 = _controls(layers), model(x)
    with lora.scales(model, identity=0.0, motion={"a": 0.0, "b": 0.0}):
        inside = _controls(layers)
        off = model(x)
    assert all(s_id == 0.0 and w == {"a": 0.0, "b": 0.0} for s_id, w, _ in inside)
    torch.testing.assert_close(off, model[2].base_layer(model[1](model[0].base_layer(x))), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="boom"):
        with lora.scales(model, identity=2.0, motion=5.0, rank_weights=torch.tensor([0.0, 3.0])):
            assert not torch.allclose(model(x), y0)
            raise RuntimeError("boom")
    for (s0, w0, g0), (s1, w1, g1) in zip(before, _controls(layers)):
        assert s0 == s1 and w0 == w1 and torch.equal(g0, g1)
    assert torch.equal(model(x), y0)
    with pytest.raises(SetseqError, match="no motion for concept"):  # a refusal on entry changes nothing
        with lora.scales(model, identity=3.0, motion={"zzz": 1.0}):
            pass
    assert [s for s, _, _ in _controls(layers)] == [0.9, 0.9]


def test_scoped_scales_leave_the_rank_weights_buffer_untouched_unless_they_set_it():
    """A backward through a saved buffer fails once the buffer is written in place (its version
    moves), as torch.compile's saved graphs do after a training step's `lora.scales(motion=...)`."""
    model, x = _model(), torch.randn(3, 12)
    layers = lora.inject(model, ["*"], rank=2)
    for layer in layers.values():
        layer.add_motion("a")
    versions = [layer.rank_weights._version for layer in layers.values()]
    with lora.scales(model, identity=0.5, motion=0.3):
        model(x)
    assert [layer.rank_weights._version for layer in layers.values()] == versions
    with lora.scales(model, rank_weights=torch.tensor([2.0, 0.0])):
        pass
    assert all(torch.equal(layer.rank_weights, torch.ones(2)) for layer in layers.values())  # restored


def test_scales_cannot_change_while_merged():
    model = _model()
    layers = lora.inject(model, ["*"], rank=2)
    _trained_like(layers)
    model.eval()
    weights = [l.base_layer.weight.clone() for l in layers.values()]
    lora.merge(model)
    with pytest.raises(SetseqError, match="while the adapters are merged"):
        lora.set_scales(model, identity=0.5)
    with pytest.raises(SetseqError, match="while the adapters are merged"):
        with lora.scales(model, rank_weights=torch.tensor([1.0, 2.0])):
            pass
    assert all(l.identity_scale == 1.0 and torch.equal(l.rank_weights, torch.ones(2)) for l in layers.values())
    lora.unmerge(model)  # so unmerge still subtracts exactly what merge added
    for w, layer in zip(weights, layers.values()):
        torch.testing.assert_close(layer.base_layer.weight, w, rtol=0, atol=1e-6)
    with pytest.raises(SetseqError, match="left merged"):  # a block may not leave them merged either
        with lora.scales(model, identity=0.5):
            lora.merge(model)
    lora.unmerge(model)
    for w, layer in zip(weights, layers.values()):
        torch.testing.assert_close(layer.base_layer.weight, w, rtol=0, atol=1e-6)


def test_concept_names_are_data_not_attributes():
    """Names a user can type ("train", "keys", "to", "forward", "motion", non-ASCII) never collide with a
    module's attributes, and the layer still computes W x + s A (B_id + sum_c w_c B_mo[c]) x."""
    base = torch.nn.Linear(6, 5)
    layer = lora.SetSeqLinear(base, rank=3)
    names = ["train", "keys", "to", "forward", "motion", "_parameters", "tänzer"]
    for i, name in enumerate(names):
        layer.add_motion(name)
        with torch.no_grad():
            layer.motion[name].fill_(0.1 * (i + 1))
    with pytest.raises(SetseqError, match="already exist"):
        layer.add_motion("train")
    assert list(layer.motion) == names and len(layer.motion) == len(names) and "keys" in layer.motion
    assert callable(layer.train) and callable(layer.motion.keys)  # attributes untouched
    layer.train().eval()
    with torch.no_grad():
        layer.basis.normal_()
    x = torch.randn(4, 6)
    expected = base(x) + layer.scale * x @ (layer.basis @ (layer.identity + sum(b for b in layer.motion.values()))).T
    assert torch.allclose(layer(x), expected, atol=1e-5)
    assert len([n for n, _ in layer.named_parameters() if n.startswith("motion.")]) == len(names)


def test_adapters_on_a_bf16_base_keep_float32_weights_and_a_small_adamw_step():
    """Trainable tensors and AdamW's moments are float32 on a bf16 base, so one step at lr 1e-4
    moves the identity coefficients; the same step on bf16 copies of them mostly rounds away."""
    model = _model().to(torch.bfloat16)
    layers = lora.inject(model, ["0", "2"], rank=4)
    params = [p for layer in layers.values() for p in (layer.basis, layer.identity)]
    assert all(p.dtype == torch.float32 for p in params)
    _trained_like(layers, basis=True)
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    assert model(x).dtype == torch.bfloat16  # the computation stays in the base's dtype

    def one_step(tensors):
        opt = torch.optim.AdamW(tensors, lr=1e-4, weight_decay=0.01)
        for p in tensors:
            p.grad = torch.ones_like(p)  # the same gradient for both, of the dtype of each
        before = [p.detach().clone() for p in tensors]
        opt.step()
        assert all(s.dtype == p.dtype for p in tensors for s in opt.state[p].values() if s.ndim)
        return sum(int((p != b).sum()) for p, b in zip(tensors, before)), sum(p.numel() for p in tensors)

    model(x).float().pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params)
    identity = [layer.identity for layer in layers.values()]
    changed, total = one_step(identity)
    assert changed == total
    as_bf16 = [nn.Parameter(p.detach().to(torch.bfloat16)) for p in identity]
    changed, total = one_step(as_bf16)
    assert changed < total / 2  # what the fp32 adapters avoid
