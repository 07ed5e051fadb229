"""The HTML report's pieces: the loss plot and the frame strips."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from setseq.errors import SetseqError
from setseq.report import frame_strip, loss_svg


def test_loss_plot_draws_every_raw_point_and_a_smoothed_line():
    torch.manual_seed(0)
    curves = {"set": (0.5 + 0.2 * torch.rand(100)).tolist(), "sequence": (0.3 + 0.2 * torch.rand(60)).tolist()}
    svg = loss_svg(curves)
    assert svg.count("<circle") == 160  # every step's loss, as a faint dot
    lines = re.findall(r'<polyline[^>]*points="([^"]*)"', svg)
    assert len(lines) == 2  # one smoothed line per stage
    ys = [[float(p.split(",")[1]) for p in line.split()] for line in lines]
    raw_ys = [float(y) for y in re.findall(r'<circle cx="[^"]*" cy="([^"]*)"', svg)][:100]
    # the moving average of uniform noise wanders far less than the points it averages
    spread = lambda v: max(v[20:]) - min(v[20:])
    assert spread(ys[0]) < 0.5 * spread(raw_ys)
    assert "moving average of 8" in svg  # a twentieth of 160 steps
    assert loss_svg({}) == "<p>no losses recorded</p>"


def test_frame_strip_puts_every_frame_of_every_clip_in_its_place(tmp_path):
    a = torch.full((3, 3, 4, 5), -1.0)  # 3 black frames of 4 x 5
    b = torch.full((2, 3, 4, 5), 1.0)  # 2 white frames
    b[1, 0] = 1.0
    b[1, 1:] = -1.0  # the second one red
    path = frame_strip(tmp_path / "s.png", [a, b], scale=2, gap=1)
    img = np.asarray(Image.open(path).convert("RGB"))  # (rows, cols, 3)
    assert img.shape == (2 * (2 * (4 + 1) - 1), 2 * (3 * (5 + 1) - 1), 3)
    at = lambda row, frame: img[row * (4 + 1) * 2 + 1, frame * (5 + 1) * 2 + 1].tolist()  # inside each frame
    assert at(0, 0) == at(0, 2) == [0, 0, 0]  # clip a: black
    assert at(1, 0) == [255, 255, 255] and at(1, 1) == [255, 0, 0]  # clip b: white, then red
    assert at(1, 2) == [255, 255, 255]  # clip b has no third frame: the sheet stays white there
    assert img[4 * 2, 0].tolist() == [255, 255, 255]  # the gap between the rows
    with pytest.raises(SetseqError):
        frame_strip(tmp_path / "bad.png", [a, torch.zeros(1, 3, 8, 8)])
    with pytest.raises(SetseqError):
        frame_strip(tmp_path / "none.png", [])
    assert not (tmp_path / "bad.png").exists() and not (tmp_path / "none.png").exists()
