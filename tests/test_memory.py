"""Memory flags on the CPU: a float8 base stays near the bf16 one; swapped blocks change no number."""

import json
import sys

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from setseq import lora, memory, parallel  # noqa: E402
from setseq.backbones import load_backbone, wan  # noqa: E402
from setseq.errors import SetseqError  # noqa: E402

# The velocity of the tiny Wan with a float8 base is within this relative L2 distance of the bf16
# base's (measured: 1.1 %, against 0.4 % between bf16 and float32; docs/benchmarks.md).
FP8_TOLERANCE = 0.02


def _inputs(bb, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, *bb.latent_shape(bb.geometry), generator=g), torch.tensor([0.5])


def test_float8_weight_is_within_e4m3_rounding():
    """|W - s Q| <= 2^-4 |W| (3 mantissa bits) + 2^-10 s (half e4m3's subnormal step), s = max|W| / 448."""
    w = torch.randn(64, 48, generator=torch.Generator().manual_seed(0)) * 0.02
    q, s = memory.quantize(w)
    assert q.dtype == torch.float8_e4m3fn and torch.isclose(s, w.abs().max() / 448)
    err = (memory.dequantize(q, s, torch.float32) - w).abs()
    assert (err <= w.abs() * 2**-4 + s * 2**-10 + 1e-12).all()
    # what the scale buys: the error does not grow as the weights shrink (a plain cast's would)
    small = memory.dequantize(*memory.quantize(w * 1e-3), torch.float32)
    assert torch.allclose(small, memory.dequantize(q, s, torch.float32) * 1e-3, rtol=1e-5, atol=0)


def test_fp8_base_forward_is_within_tolerance_of_bf16():
    text_bb = wan.tiny()
    with torch.no_grad():
        text = text_bb.encode_text(["a red square"])
    out = {}
    for fp8 in (False, True):
        parts = wan.tiny_components()
        parts["transformer"].to(torch.bfloat16)  # as loading with --dtype bfloat16 would (before float8)
        bb = wan.WanBackbone("wan-tiny", **parts, geometry=text_bb.geometry, text_len=16, fp8_base=fp8)
        x, t = _inputs(bb)
        with torch.no_grad():
            out[fp8] = bb.velocity(x, t, text)
    assert isinstance(bb.transformer.blocks[0].attn1.to_q, memory.Float8Linear)
    assert bb.transformer.blocks[0].attn1.to_q.compute_dtype == torch.bfloat16
    err = (out[True] - out[False]).norm() / out[False].norm()
    assert 0 < err < FP8_TOLERANCE


def test_float8_linear_saves_float8_for_backward():
    """The backward pass holds Q (1 byte a weight), never a dequantised full-precision copy of it,
    and gives the gradient of the dequantised layer."""
    layer = memory.Float8Linear(torch.nn.Linear(40, 24))
    w = memory.dequantize(layer.weight, layer.weight_scale, torch.float32)
    x = torch.randn(2, 3, 40, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda s: saved.append(s) or s, lambda s: s):
        y = layer(x)
    assert [s.dtype for s in saved] == [torch.float8_e4m3fn, torch.float32] and saved[1].ndim == 0
    y.pow(2).sum().backward()
    x2 = x.detach().requires_grad_(True)
    torch.nn.functional.linear(x2, w, layer.bias).pow(2).sum().backward()
    assert torch.allclose(y, torch.nn.functional.linear(x, w, layer.bias)) and torch.allclose(x.grad, x2.grad)


def test_fp8_base_trains_adapters_in_their_own_dtype():
    bb = wan.tiny(fp8_base=True)
    assert bb.fingerprint() == wan.tiny().fingerprint()  # a concept still fits the base without the flag
    layers = lora.inject(bb.transformer, bb.lora_targets, rank=2)
    for layer in layers.values():
        assert layer.base_layer.weight.dtype == torch.float8_e4m3fn  # wrapping does not cast the base
        assert layer.basis.dtype == layer.identity.dtype == torch.float32
        torch.nn.init.normal_(layer.basis)
    bb.transformer.train()
    x, t = _inputs(bb)
    bb.velocity(x, t, bb.encode_text(["a dog"])).pow(2).mean().backward()
    assert all(layer.basis.grad.abs().sum() > 0 for layer in layers.values())
    bb.transformer.eval()
    with pytest.raises(SetseqError, match="float8"):
        lora.merge(bb.transformer)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_swapped_blocks_give_the_same_loss_and_gradients(checkpointing):
    """Onload and offload are both the CPU here, but the swapped blocks still run on copies of their
    tensors and are recomputed in the backward pass; coefficient dropout checks the random stream."""
    results = []
    for swap in (0, 2):
        bb = wan.tiny(gradient_checkpointing=checkpointing, blocks_to_swap=swap)
        torch.manual_seed(0)
        layers = lora.inject(bb.transformer, bb.lora_targets, rank=2)
        for layer in layers.values():
            torch.nn.init.normal_(layer.basis)
        lora.set_dropout(bb.transformer, identity=0.5)
        bb.transformer.train()
        x, t = _inputs(bb)
        text = bb.encode_text(["a dog"])
        loss = bb.velocity(x, t, text).pow(2).mean()
        loss.backward()
        grads = torch.cat([p.grad.flatten() for layer in layers.values() for p in (layer.basis, layer.identity)])
        with torch.no_grad():  # sampling: no checkpoint, one copy per call
            sample = bb.velocity(x, t, text)
        results.append((loss.detach(), grads, sample))
        copies = [getattr(b, "setseq_swap_copies", None) for b in bb.transformer.blocks]
    assert copies == [2 + 1, 2 + 1]  # forward, the backward's recomputation, the sampling call
    # the overlapped swap's guesses: block 1 in the forward passes, block 0 in the recomputation
    assert bb.transformer.setseq_prefetcher.hits == 3
    assert results[0][1].abs().sum() > 0
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_memory_flags_refuse_what_they_cannot_do():
    with pytest.raises(SetseqError, match="between 0 and the transformer's 2 blocks, got 3"):
        wan.tiny(blocks_to_swap=3)
    with pytest.raises(SetseqError, match="toy base"):
        load_backbone("toy-tiny", fp8_base=True)
    with pytest.raises(SetseqError, match="--compile does not work with --blocks-to-swap"):
        parallel.compile_blocks(wan.tiny(blocks_to_swap=1).transformer)
    with pytest.raises(SetseqError, match="--shard does not work with --fp8-base"):
        parallel.shard(wan.tiny(fp8_base=True).transformer)


def test_cli_flags_reach_the_loader(tmp_path, capsys):
    from setseq.cli import build_parser, main
    from setseq.cli.options import device_options

    a = build_parser().parse_args(
        ["generate", "--out", "x.mp4", "--prompt", "p", "--fp8-base", "--blocks-to-swap", "3"]
    )
    assert device_options(a) == {"device": None, "dtype": None, "fp8_base": True, "blocks_to_swap": 3}
    assert (
        main(["generate", "--base", "toy-tiny", "--prompt", "a dog", "--out", str(tmp_path / "x.mp4"), "--fp8-base"])
        == 2
    )
    assert "needs no --fp8-base" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_gpu_benchmark_runs_its_cpu_path(tmp_path, monkeypatch, capsys):
    """benchmarks/gpu.py end to end on a tiny configuration: all three tables and the ratio."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "gpu.py"
    spec = importlib.util.spec_from_file_location("gpu_bench", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_bench", bench)  # its dataclass looks itself up there
    spec.loader.exec_module(bench)
    tiny = dict(wan.WAN_TINY, text_dim=32)
    setup = bench.Setup(
        torch.device("cpu"),
        torch.float32,
        tiny,
        dict(tiny, num_layers=3),
        ["32x32x5"],
        "32x32x5",
        [(True, 2, True), (False, 0, False)],
    )
    setup.text_len, setup.warmup, setup.steps, setup.rounds, setup.round_steps = 8, 0, 1, 2, 1
    monkeypatch.setattr(bench, "cpu_small_setup", lambda: setup)
    assert bench.main(["--cpu-small", "--out", str(tmp_path / "b")]) == 0
    result = json.loads((tmp_path / "b.json").read_text())
    assert [len(result[k]) for k in ("steps", "peft", "big")] == [2, 1, 2]
    assert result["peft"][0]["start_difference"] == 0 and result["peft"][0]["ratio_median"] > 0
    assert "setseq / PEFT step time at 32x32x5" in capsys.readouterr().out
    assert "| 32x32x5 | float8 | 2 | yes |" in (tmp_path / "b.md").read_text()
    assert all(r["plan_gib"] > 0 for r in result["big"])  # the plan's estimate beside each measured row


def test_the_two_experts_of_wan_2_2_swap_and_take_a_float8_base_too():
    """T2V-A14B's two transformers: swapping the last blocks (of the low-noise expert) changes no
    number, and a float8 base stays within the tolerance; one sample at each expert's time."""
    expert_layout = next(layout for layout in wan.LAYOUTS if layout.experts)
    out = {}
    for name, options in (("plain", {}), ("swap", {"blocks_to_swap": 2}), ("fp8", {"fp8_base": True})):
        bb = wan.tiny(layout=expert_layout, **options)
        torch.manual_seed(0)
        layers = lora.inject(bb.transformer, bb.lora_targets, rank=2)
        for layer in layers.values():
            torch.nn.init.normal_(layer.basis)
        x = torch.randn(2, *bb.latent_shape(bb.geometry), generator=torch.Generator().manual_seed(1))
        t = torch.tensor([0.95, 0.3])  # the high-noise expert, then the low-noise one
        v = bb.velocity(x, t, bb.encode_text(["a dog", "a cat"]))
        v.pow(2).mean().backward()
        grads = {e: sum(float(p.grad.abs().sum()) for n, l in layers.items() if n.startswith(e) for p in (l.basis,))
                 for e in ("high_noise", "low_noise")}  # fmt: skip
        out[name] = v.detach(), grads
    assert torch.equal(out["plain"][0], out["swap"][0]) and out["plain"][1] == out["swap"][1]
    assert all(g > 0 for g in out["plain"][1].values())  # both experts' adapters learn
    a, b = out["plain"][0], out["fp8"][0]
    assert float((a - b).norm() / a.norm()) < FP8_TOLERANCE


def test_encoders_leave_the_device_before_the_first_step(tmp_path, monkeypatch):
    """A run encodes every prompt (dropout's empty one, prior prompts) and window ahead, then parks the
    text encoder and the VAE. Parked on the meta device, which holds no data, any use of them in a step
    would fail; the losses are those of a run that keeps both on the device (--keep-encoders)."""
    from conftest import tiny_config
    from setseq import train
    from setseq.train import ConceptSpec, Trainer

    clip = torch.rand(9, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    spec = ConceptSpec("sq", clip, "a [v] red square on a blue background.", "it moves in [u] motion.")
    monkeypatch.setattr(train, "ENCODER_PARK", "meta")
    losses, seen = {}, []
    for keep in (True, False):
        bb = wan.tiny()
        encoders = [*bb.text_encoder.parameters(), *bb.vae.parameters()]

        def record(module, args, bb=bb):  # the encoders' devices whenever the transformer runs with gradients
            if torch.is_grad_enabled():
                table = {id(p) for p in bb.concepts.table.parameters()}  # the concept's rows stay
                parts = [*bb.text_encoder.parameters(), *bb.vae.parameters(), *bb.vae.buffers()]
                seen.append({p.device.type for p in parts if id(p) not in table})

        bb.transformer.register_forward_pre_hook(record)
        if not keep:
            monkeypatch.setattr(bb, "unpark_encoders", lambda: None)  # nothing comes back from meta
        cfg = tiny_config(steps=(3, 3), batch=1, prior=True, prompt_dropout=0.5, token_mask_prob=0.3)
        cfg.keep_encoders = keep
        trainer = Trainer(bb, [spec], cfg, tmp_path / f"keep-{keep}.safetensors", progress=False, cache_dir=None)
        trainer.run()
        losses[keep] = trainer.losses
        assert trainer.parked == ({} if keep else {"text": True, "vae": True})
        if keep:
            assert all(p.device.type == "cpu" for p in encoders) and seen == [{"cpu"}] * 6
            seen.clear()
    assert seen == [{"meta"}] * 6  # every training forward ran with both encoders parked
    assert losses[True] == losses[False] and all(len(v) == 3 for v in losses[True].values())


def _loss_and_grads(bb, seed=0):
    """One training forward and backward of a tiny Wan with random adapters and coefficient dropout (so
    a recomputation must redraw the same masks): the loss and every adapter gradient."""
    torch.manual_seed(seed)
    layers = lora.inject(bb.transformer, bb.lora_targets, rank=2)
    for layer in layers.values():
        torch.nn.init.normal_(layer.basis)
    lora.set_dropout(bb.transformer, identity=0.5)
    bb.transformer.train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *bb.latent_shape(bb.geometry), generator=g)
    t = torch.tensor([0.95, 0.3])  # for T2V-A14B: one sample for each expert
    loss = bb.velocity(x, t, bb.encode_text(["a dog", "a red square"])).pow(2).mean()
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for l in layers.values() for p in (l.basis, l.identity)])


@pytest.mark.parametrize("layout,swap", [(wan.WAN_2_1, 0), (wan.WAN_2_1, 1), (wan.WAN_2_2_A14B, 2)])
def test_offloaded_activations_give_the_same_loss_and_gradients(layout, swap, monkeypatch):
    """--offload-activations against diffusers' own checkpointing: the same loss and gradients to the bit,
    with swapped blocks too; each block's input went through the offloading checkpoint."""
    calls = []
    real = memory.offloaded_checkpoint
    monkeypatch.setattr(memory, "offloaded_checkpoint", lambda *a: (calls.append(a[1].shape), real(*a))[1])
    plain = _loss_and_grads(wan.tiny(layout=layout, gradient_checkpointing=True, blocks_to_swap=swap))
    offloaded = _loss_and_grads(
        wan.tiny(layout=layout, gradient_checkpointing=True, blocks_to_swap=swap, offload_activations=True)
    )
    assert plain[1].abs().sum() > 0
    assert torch.equal(plain[0], offloaded[0]) and torch.equal(plain[1], offloaded[1])
    assert len(calls) == len(parallel.blocks(wan.tiny(layout=layout).transformer))  # once a block (each expert once)
