import torch

from atbsn.archs import N2NUNet
from atbsn.models.neighbor2neighbor import NEIGHBOR_PAIRS, draw_neighbor_pairs, subsample



def test_parameter_counts_for_channel_variants():
    count = lambda c: sum(p.numel() for p in N2NUNet(c, c).parameters())  # noqa: E731
    assert (count(3), count(1), count(4)) == (1259475, 1256689, 1260868)


def test_official_init_scale():
    torch.manual_seed(0)
    net = N2NUNet()
    w = net.enc_conv1.weight
    expected_std = 0.1 * (2.0 / (48 * 9)) ** 0.5
    assert abs(w.std().item() / expected_std - 1) < 0.05
    assert all((m.bias == 0).all() for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))


def test_subsampler_uses_only_the_eight_adjacent_pairs_uniformly():
    pairs = draw_neighbor_pairs(8, 64, 64, torch.arange(8))
    flat = pairs.view(-1, 2)
    codes = flat[:, 0] * 4 + flat[:, 1]
    allowed = set((NEIGHBOR_PAIRS[:, 0] * 4 + NEIGHBOR_PAIRS[:, 1]).tolist())
    assert set(codes.unique().tolist()) == allowed  # never (0,3) or (1,2) or identical positions
    freq = torch.bincount(codes, minlength=16)[sorted(allowed)].double() / len(codes)
    assert (freq - 1 / 8).abs().max() < 0.01
    again = draw_neighbor_pairs(8, 64, 64, torch.arange(8))
    assert torch.equal(pairs, again)  # a pure function of the per-image seeds


def test_subsample_picks_pixels_by_cell_position():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    pos = torch.tensor([[[0, 3], [1, 2]], [[2, 2], [3, 0]]])
    out = subsample(x, pos)
    for n in range(2):
        for i in range(2):
            for j in range(2):
                p = int(pos[n, i, j])
                assert torch.equal(out[n, :, i, j], x[n, :, 2 * i + p // 2, 2 * j + p % 2])
