"""The toy DiT: shapes, 3D RoPE, QK-norm, zero-initialised start."""

import torch

from setseq.toy.dit import DiTConfig, TextEncoder, Tokenizer, ToyDiT, apply_rope, rope_angles, rope_split

VOCAB = ["a", "red", "square", "moves", "left", ".", "on", "blue", "background"]


def _cfg():
    return DiTConfig(dim=32, depth=2, heads=2, text_dim=16, text_depth=1, text_heads=2, vocab=VOCAB)


def _text(cfg, prompts=("a red square moves left .",)):
    tok = Tokenizer(cfg.vocab, cfg.concept_slots)
    ids = [tok.encode(p, cfg.max_text_len) for p in prompts]
    n = max(map(len, ids))
    t = torch.zeros(len(ids), n, dtype=torch.long)
    m = torch.zeros(len(ids), n, dtype=torch.bool)
    for i, row in enumerate(ids):
        t[i, : len(row)], m[i, : len(row)] = torch.tensor(row), True
    enc = TextEncoder(cfg, len(tok.words))
    return enc(t, m), m


def test_velocity_has_the_input_shape_for_clips_and_single_frames():
    torch.manual_seed(0)
    cfg = _cfg()
    model = ToyDiT(cfg)
    emb, mask = _text(cfg, ["a red square", "blue background ."])
    for shape in [(2, 4, 3, 16, 16), (2, 1, 3, 16, 16), (2, 3, 3, 8, 12)]:
        v = model(torch.randn(shape), torch.rand(2), emb, mask)
        assert v.shape == shape


def test_zero_initialised_model_predicts_zero_velocity():
    torch.manual_seed(0)
    cfg = _cfg()
    model = ToyDiT(cfg)
    emb, mask = _text(cfg)
    v = model(torch.randn(1, 2, 3, 8, 8), torch.rand(1), emb, mask)
    assert torch.equal(v, torch.zeros_like(v))


def test_x0_prediction_is_returned_as_the_velocity_that_implies_it():
    """Under x0-prediction the output layer's clip is turned into v = (x_t - x0) / t, so that
    x_t - t v gives that clip back; a zero-initialised model thus predicts x0 = 0, v = x_t / t."""
    from dataclasses import replace

    from setseq import flow

    torch.manual_seed(0)
    cfg = replace(_cfg(), prediction="x0")
    model = ToyDiT(cfg)
    emb, mask = _text(cfg, ["a red square", "blue background ."])
    x_t, t = torch.randn(2, 2, 3, 8, 8), torch.tensor([0.3, 1.0])
    torch.testing.assert_close(model(x_t, t, emb, mask), x_t / t.view(-1, 1, 1, 1, 1))
    for p in model.parameters():  # leave the zero init: a non-trivial x0
        p.data.normal_(0, 0.05)
    x0 = model.predict(x_t, t, emb, mask)
    torch.testing.assert_close(flow.predict_x0(x_t, model(x_t, t, emb, mask), t), x0)


def test_rope_split_is_two_one_one():
    assert rope_split(32) == (16, 8, 8)


def test_rope_preserves_norm_and_depends_on_relative_position_only():
    torch.manual_seed(0)
    hd = 16
    ang = rope_angles(3, 4, 5, hd, theta=100.0)  # (T, hd/2), T = 60
    assert ang.shape == (60, hd // 2)
    q, k = torch.randn(hd), torch.randn(hd)
    rot = lambda x, i: apply_rope(x.expand(1, 1, 60, hd).contiguous(), ang)[0, 0, i]
    torch.testing.assert_close(rot(q, 17).norm(), q.norm())
    idx = lambda f, y, x: f * 20 + y * 5 + x
    # same offset (1, 1, 2) at two places gives the same score
    s1 = rot(q, idx(0, 0, 0)) @ rot(k, idx(1, 1, 2))
    s2 = rot(q, idx(1, 2, 1)) @ rot(k, idx(2, 3, 3))
    torch.testing.assert_close(s1, s2, rtol=1e-4, atol=1e-5)
    # a different offset gives a different score
    s3 = rot(q, idx(0, 0, 0)) @ rot(k, idx(2, 0, 0))
    assert not torch.allclose(s1, s3)


def test_time_axis_uses_half_the_channels():
    ang = rope_angles(4, 1, 1, 16, theta=100.0)  # only time varies
    moving = (ang != ang[0]).any(0)
    assert moving[:4].all() and not moving[4:].any()


def test_concept_slots_are_zero_and_tokens_map_to_them():
    cfg = _cfg()
    tok = Tokenizer(cfg.vocab, cfg.concept_slots)
    tok.add("[v]")
    ids = tok.encode("a [v] square zzz", 40)
    v = len(tok.words)
    assert ids[0] == tok.index["[bos]"] and ids[2] == v and ids[-1] == tok.index["[unk]"]
    assert tok.unknown("a [v] square zzz") == ["zzz"]
    enc = TextEncoder(cfg, v)
    assert torch.equal(enc.concepts, torch.zeros_like(enc.concepts))


def test_self_conditioning_input_changes_output_once_trained():
    torch.manual_seed(0)
    cfg = _cfg()
    model = ToyDiT(cfg)
    for p in model.parameters():  # leave the zero init so both inputs matter
        torch.nn.init.normal_(p, std=0.05)
    emb, mask = _text(cfg)
    x = torch.randn(1, 2, 3, 8, 8)
    t = torch.rand(1)
    assert not torch.allclose(model(x, t, emb, mask), model(x, t, emb, mask, self_cond=torch.randn_like(x)))


def test_absolute_positions_break_the_symmetry_rope_leaves():
    """On a clip of one constant colour every token is the same, so a RoPE-only DiT (relative
    positions) gives every token the same output: it cannot place anything. The fixed sin-cos
    embedding (cfg.abs_pos) tells tokens apart by place and by frame."""
    from setseq.backbones.toy import randomise_zero_init

    x = torch.full((1, 3, 3, 16, 16), 0.3)  # (B, F, C, H, W), constant
    emb, mask = _text(_cfg())
    outs = {}
    for abs_pos in (False, True):
        torch.manual_seed(0)
        cfg = _cfg()
        cfg.abs_pos, cfg.patch = abs_pos, 4
        model = ToyDiT(cfg)
        randomise_zero_init(model)
        with torch.no_grad():
            v = model(x, torch.tensor([0.7]), emb, mask)  # (1, F, C, H, W)
        tokens = v.unfold(3, 4, 4).unfold(4, 4, 4)  # (1, F, C, h, w, p, p): one entry per token
        outs[abs_pos] = tokens.permute(0, 1, 3, 4, 2, 5, 6).flatten(0, 3)  # (F h w, C, p, p)
    assert torch.allclose(outs[False], outs[False][:1].expand_as(outs[False]), atol=1e-5)
    spread = (outs[True] - outs[True].mean(0)).abs().amax()
    assert spread > 1e-3  # tokens at different places and frames now differ
