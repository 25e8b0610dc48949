"""benchmarks/edit_speed.py's measuring parts: time inside UNet forwards, random LoRA branches, ratios."""

from __future__ import annotations

import time

import torch

from scripts import load_script


def _load():
    return load_script("benchmarks/edit_speed.py")


class Sleeper(torch.nn.Module):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


def test_unet_clock_counts_only_time_inside_the_forwards():
    es = _load()
    inner, outside = Sleeper(0.02), 0.05
    t0 = time.perf_counter()
    with es.UNetClock([inner], torch.device("cpu")) as clock:
        for _ in range(3):
            inner(torch.zeros(1))
        time.sleep(outside)
    wall = time.perf_counter() - t0
    inner(torch.zeros(1))  # after the block: hooks removed, not counted
    assert clock.calls == 3
    # sleep() lasts at least its argument; the hooks' own cost is microseconds, so the forwards'
    # time is at least 3 x 20 ms and at most the wall time less the 50 ms slept outside them
    assert 0.06 <= clock.seconds <= wall - outside


def test_lora_branches_switch_adapters_on_one_unet():
    from diffusers import UNet2DConditionModel

    es = _load()
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8, norm_num_groups=8,
    )
    branches = es.lora_branches(unet, 4)
    assert sorted(unet.peft_config) == ["directional", "identity"] and branches.distinct_unets() == [unet]
    assert branches.adapters == {"identity": "identity", "directional": "directional"}
    assert es.lora_branches(torch.nn.Linear(2, 2), 0).unets == {}  # rank 0: base weights only


def test_length_ratios_are_longest_over_shortest_per_method():
    es = _load()
    rows = [{"method": m, "frames": n, "total_s": t, "edit_s": t / 2, "unet_s": t / 4}
            for m, n, t in (("ours", 4, 10.0), ("ours", 16, 38.0), ("tokenflow", 4, 8.0))]
    assert es.length_ratios(rows) == {"ours": {"frames": 4.0, "total_s": 3.8, "edit_s": 3.8, "unet_s": 3.8}}
