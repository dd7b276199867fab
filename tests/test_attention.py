"""The paper's equations on tensors small enough to compute by hand."""

import math

import pytest
import torch

from pipeline.models.attention import (
    NonLocalAttention,
    attention_figures,
    attention_thresholds,
    background_mask,
    channel_mean_attention,
    contrastive_attention_loss,
    drop_mask,
    dropped_foreground_mask,
    foreground_consistency_loss,
    foreground_mask,
    masked_average,
    reduce_taps,
    select_map,
    spatial_variation,
    unit_embedding,
)

# A 3x3 attention map: max 8, mean 4.
A = torch.arange(9.0).view(1, 1, 3, 3)


def grid(rows):
    return torch.tensor(rows, dtype=torch.float32).view(1, 1, len(rows), len(rows[0]))


def test_thresholds_are_gamma_times_max_and_mean():
    theta_fg, theta_bg = attention_thresholds(A, gamma_fg=0.72, gamma_bg=1.2)
    assert theta_fg.shape == theta_bg.shape == (1, 1, 1, 1)
    assert theta_fg.item() == pytest.approx(0.72 * 8)  # 5.76
    assert theta_bg.item() == pytest.approx(1.2 * 4)  # 4.8


def test_eq1_dropped_foreground_mask_keeps_the_object_without_its_peak_and_background():
    theta_fg, theta_bg = attention_thresholds(A, 0.72, 1.2)
    # 4.8 < A < 5.76: only the pixel of value 5
    assert torch.equal(dropped_foreground_mask(A, theta_fg, theta_bg), grid([[0, 0, 0], [0, 0, 1], [0, 0, 0]]))


def test_eq2_foreground_and_background_masks():
    _, theta_bg = attention_thresholds(A, 0.72, 1.2)
    assert torch.equal(foreground_mask(A, theta_bg), grid([[0, 0, 0], [0, 0, 1], [1, 1, 1]]))  # A > 4.8
    assert torch.equal(background_mask(A, theta_bg), grid([[1, 1, 1], [1, 1, 0], [0, 0, 0]]))  # A < 4.8


def test_masks_are_strict_at_the_threshold():
    a = grid([[1, 2], [2, 3]])  # mean 2: gamma_bg 1 puts theta_bg exactly on two pixels
    theta_fg, theta_bg = attention_thresholds(a, gamma_fg=1.0, gamma_bg=1.0)
    assert torch.equal(foreground_mask(a, theta_bg), grid([[0, 0], [0, 1]]))
    assert torch.equal(background_mask(a, theta_bg), grid([[1, 0], [0, 0]]))
    assert torch.equal(dropped_foreground_mask(a, theta_fg, theta_bg), grid([[0, 0], [0, 0]]))  # 3 is not < 3


def test_adl_drop_mask_removes_the_peak_only():
    assert torch.equal(drop_mask(A, torch.tensor(0.9 * 8)), grid([[1, 1, 1], [1, 1, 1], [1, 1, 0]]))


def test_select_map_draws_once_per_call():
    importance, dropping = torch.full((2, 1, 2, 2), 0.5), torch.zeros(2, 1, 2, 2)
    assert torch.equal(select_map(importance, dropping, drop_rate=1.0), dropping)
    assert torch.equal(select_map(importance, dropping, drop_rate=0.0), importance)
    torch.manual_seed(0)
    draws = [select_map(importance, dropping, 0.3).sum().item() for _ in range(2000)]
    assert set(draws) == {0.0, 4.0}  # the whole batch gets one map
    assert draws.count(0.0) / len(draws) == pytest.approx(0.3, abs=0.04)


def test_channel_mean_attention():
    feature = torch.stack([torch.ones(2, 2), 3 * torch.ones(2, 2)])[None]
    assert torch.equal(channel_mean_attention(feature), torch.full((1, 1, 2, 2), 2.0))


def test_eq5_non_local_attention_by_hand():
    # C = 2, C~ = 1: f = g = channel 0, z = identity, so f_i.g_j = x0_i x0_j and mean_C z = (x0 + x1) / 2.
    block = NonLocalAttention(2)
    with torch.no_grad():
        for conv in (block.f, block.g):
            conv.weight.copy_(torch.tensor([[1.0, 0.0]]).view(1, 2, 1, 1))
            conv.bias.zero_()
        block.z.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        block.z.bias.zero_()
    x0 = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    x1 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    a = block(torch.stack([x0, x1])[None])
    # z-bar = [1, 1, 1.5, 2]. Row 0 of the similarity: softmax([1, 0, 0, 0]); rows 1-3: uniform.
    e = math.e
    expected = torch.tensor([[(e * 1 + 1 + 1.5 + 2) / (e + 3), 5.5 / 4], [5.5 / 4, 5.5 / 4]])
    assert a.shape == (1, 1, 2, 2)
    assert torch.allclose(a[0, 0], expected)


def test_eq5_equals_the_formula_as_written_in_value_and_gradient():
    torch.manual_seed(0)
    block = NonLocalAttention(6).double()
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)

    def as_written(x):
        b, c, h, w = x.shape
        f, g, z = (conv(x).flatten(2) for conv in (block.f, block.g, block.z))
        weighted = z @ torch.softmax(f.transpose(1, 2) @ g, dim=-1).transpose(1, 2)  # (B, C, N): sum_j S_ij z_j
        return weighted.mean(dim=1).view(b, 1, h, w)

    fast, slow = block(x), as_written(x)
    assert torch.allclose(fast, slow)
    grads_fast = torch.autograd.grad(fast.square().sum(), [x, *block.parameters()])
    grads_slow = torch.autograd.grad(slow.square().sum(), [x, *block.parameters()])
    for fast_grad, slow_grad in zip(grads_fast, grads_slow, strict=False):
        assert torch.allclose(fast_grad, slow_grad)


def test_masked_average_pools_only_the_masked_pixels():
    feature = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]])[None]  # (1, 2, 2, 2)
    pooled, nonempty = masked_average(feature, grid([[1, 0], [0, 1]]))
    assert torch.equal(pooled, torch.tensor([[2.5, 25.0]]))
    assert nonempty.tolist() == [True]
    pooled, nonempty = masked_average(feature, grid([[0, 0], [0, 0]]))
    assert torch.equal(pooled, torch.zeros(1, 2))
    assert nonempty.tolist() == [False]


def test_eq3_contrastive_attention_loss_by_hand():
    z_dfg = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    z_fg = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # d = 5, 1
    z_bg = torch.tensor([[0.0, 1.0], [3.0, 4.0]])  # d = 1, 5
    # image 1: 5 - 1 + 1 = 5; image 2: max(0, 1 - 5 + 1) = 0
    assert contrastive_attention_loss(z_dfg, z_fg, z_bg, margin=1.0).item() == pytest.approx(2.5)


def test_eq3_leaves_out_images_with_an_empty_mask():
    z_dfg = torch.zeros(3, 2)
    z_fg = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 0.0]])  # d = 5, 1, 0
    z_bg = torch.tensor([[0.0, 1.0], [3.0, 4.0], [0.0, 0.0]])  # d = 1, 5, 0
    present = torch.tensor([True, True, False])  # image 3 had an empty mask: its hinge (0 - 0 + 1) is not counted
    assert contrastive_attention_loss(z_dfg, z_fg, z_bg, 1.0, present).item() == pytest.approx((5 + 0) / 2)
    none = contrastive_attention_loss(z_dfg.requires_grad_(True), z_fg, z_bg, 1.0, torch.zeros(3, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and torch.equal(z_dfg.grad, torch.zeros(3, 2))


def test_eq3_gradient_is_finite_when_embeddings_coincide():
    z = torch.zeros(1, 3, requires_grad=True)
    loss = contrastive_attention_loss(z, z * 1, z * 1, margin=1.0)
    loss.backward()
    assert loss.item() == 1.0 and torch.isfinite(z.grad).all()


def test_eq4_is_the_squared_l2_norm_per_pixel_and_stops_at_the_reference():
    early = grid([[1, 2], [3, 4]]).requires_grad_(True)
    late = grid([[0, 0], [0, 0]]).requires_grad_(True)
    loss = foreground_consistency_loss([early, late])
    assert loss.item() == pytest.approx((1 + 4 + 9 + 16) / 4)  # ||A_i - A_j||_2^2 of the 2x2 matrix, per pixel
    loss.backward()
    assert torch.allclose(early.grad, 2 * early.detach() / 4)
    assert late.grad is None  # no gradient into the reference layer


def test_eq4_averages_images_resizes_the_reference_and_sums_or_averages_over_layers():
    early_big = torch.cat([grid([[1, 2], [3, 4]]), grid([[2, 2], [2, 2]])])  # two images
    early_same = torch.cat([grid([[2]]), grid([[5]])])
    late = torch.cat([grid([[2]]), grid([[2]])])  # upsampled bilinearly to 2x2: all 2
    # layer 1: images (1 + 0 + 1 + 4) / 4 and 0, mean 0.75; layer 2: images 0 and 9, mean 4.5
    assert foreground_consistency_loss([early_big, early_same, late]).item() == pytest.approx(0.75 + 4.5)
    assert foreground_consistency_loss([early_big, early_same, late], taps="mean").item() == pytest.approx((0.75 + 4.5) / 2)


def test_eq4_as_written_sums_over_the_pixels():
    early, late = grid([[1, 2], [3, 4]]), grid([[0, 0], [0, 0]])
    assert foreground_consistency_loss([early, late], pixels="sum").item() == pytest.approx(1 + 4 + 9 + 16)


def test_eq4_on_the_reference_foreground_counts_only_where_the_late_map_sees_the_object():
    late = grid([[0, 0], [0, 4]])  # mean 1: M_fg (A > 1.2) is the bottom-right pixel only
    early = grid([[9, 9], [9, 1]]).requires_grad_(True)
    loss = foreground_consistency_loss([early, late], pixels="foreground", gamma_bg=1.2)
    assert loss.item() == pytest.approx((1 - 4) ** 2)  # the background's 9s are left free
    loss.backward()
    assert torch.equal(early.grad, grid([[0, 0], [0, 2 * (1 - 4)]]))
    flat = grid([[1, 1], [1, 1]])  # no pixel above 1.2 x its mean: an empty M_fg adds 0
    assert foreground_consistency_loss([early, flat], pixels="foreground", gamma_bg=1.2).item() == 0.0


def test_eq4_on_max_normalised_maps_compares_shapes_not_scales():
    early = grid([[2, 4], [1, 4]]).requires_grad_(True)
    late = grid([[1, 2], [1, 2]])  # divided by its max 2: [[0.5, 1], [0.5, 1]]
    loss = foreground_consistency_loss([early, late], scale="max")  # early / 4 = [[0.5, 1], [0.25, 1]]
    assert loss.item() == pytest.approx(0.25**2 / 4)
    loss.backward()  # the maximum is a constant: the gradient is that of (A / 4 - target)^2 / 4
    assert torch.allclose(early.grad, grid([[0, 0], [2 * -0.25 / 4 / 4, 0]]))
    same_shape = foreground_consistency_loss([10 * late, late], scale="max")
    assert same_shape.item() == 0.0 and foreground_consistency_loss([10 * late, late]).item() > 1  # raw: the scale counts
    dead = torch.zeros(1, 1, 2, 2, requires_grad=True)  # a map that is 0 everywhere: a guarded denominator
    foreground_consistency_loss([dead, late], scale="max").backward()
    assert torch.isfinite(dead.grad).all()


def test_taps_are_summed_or_averaged():
    values = [torch.tensor(1.0), torch.tensor(2.0), torch.tensor(6.0)]
    assert reduce_taps(values, "sum").item() == 9.0 and reduce_taps(values, "mean").item() == 3.0


# ------------------------------------------------------------------------ the free choices

def test_a_nonnegative_block_never_gives_negative_attention():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 5, 5)  # features of both signs: zbar is negative at some positions
    free, nonnegative = NonLocalAttention(6), NonLocalAttention(6, nonnegative=True)
    nonnegative.load_state_dict(free.state_dict())
    with torch.no_grad():
        a_free, a = free(x), nonnegative(x)
    assert (a_free < 0).any()  # as written, A takes the sign of its values
    assert (a >= 0).all()  # a softmax-weighted average of ReLU(zbar)
    assert (a >= a_free).all() and not torch.equal(a, a_free)


def test_the_channel_mean_start_is_the_channel_mean_smoothed_over_similar_positions_by_hand():
    """C = 8, C~ = 4, a 2x2 map whose position p holds c_p on channel p only (c = 1, 2, 3, 4): the channel
    mean is c_p / 8. f = k [I_4 | 0] gives f_p = k c_p e_p, so f_i . f_j = k^2 c_i^2 when i = j and 0
    otherwise: row i of the softmax is e^{a_i} at i and 1 elsewhere, a_i = s k^2 c_i^2, s = 1/sqrt(4)."""
    c = torch.tensor([1.0, 2.0, 3.0, 4.0])
    x = torch.zeros(1, 8, 2, 2)
    for p in range(4):
        x[0, p, p // 2, p % 2] = c[p]
    block = NonLocalAttention(8, nonnegative=True, similarity="sqrt_key")
    k = 0.5
    with torch.no_grad():
        block.f.weight.copy_(k * torch.eye(4, 8).view(4, 8, 1, 1))
        block.f.bias.zero_()
    block.start_as_channel_mean()
    assert torch.equal(block.z.weight.view(8, 8), torch.eye(8)) and torch.equal(block.g.weight, block.f.weight)
    mean = c / 8
    a = 0.5 * k**2 * c**2
    expected = torch.stack([(math.exp(a[i]) * mean[i] + mean.sum() - mean[i]) / (math.exp(a[i]) + 3) for i in range(4)])
    assert torch.allclose(block(x).flatten(), expected)
    with torch.no_grad():  # a sharp similarity (large k): A is the channel mean itself
        block.f.weight.mul_(20)
        block.g.weight.copy_(block.f.weight)
    assert torch.allclose(block(x).flatten(), mean)
    assert torch.allclose(channel_mean_attention(x).flatten(), mean)


def test_the_scaled_similarity_divides_the_logits_by_the_root_of_the_key_width():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 3, 3)
    plain, scaled = NonLocalAttention(6), NonLocalAttention(6, similarity="sqrt_key")
    scaled.load_state_dict(plain.state_dict())
    with torch.no_grad():  # C~ = 3: scaling f by 1/sqrt(3) scales the logits f.g as the scaled block does
        plain.f.weight.div_(math.sqrt(3))
        plain.f.bias.div_(math.sqrt(3))
    assert torch.allclose(plain(x), scaled(x), atol=1e-6)


def test_the_cosine_similarity_smooths_the_channel_mean_over_like_positions_whatever_the_scale_of_f():
    """The map of the channel-mean start test: f_p = k c_p e_p, so cos(f_i, f_j) is 1 when i = j and 0
    otherwise, whatever k and c: row i of the softmax is e^{1/tau} at i and 1 elsewhere."""
    c = torch.tensor([1.0, 2.0, 3.0, 4.0])
    x = torch.zeros(1, 8, 2, 2)
    for p in range(4):
        x[0, p, p // 2, p % 2] = c[p]
    tau = 0.5
    block = NonLocalAttention(8, nonnegative=True, similarity="cosine", temperature=tau)
    mean = c / 8
    expected = (math.exp(1 / tau) * mean + mean.sum() - mean) / (math.exp(1 / tau) + 3)
    for k in (0.01, 1.0, 30.0):
        with torch.no_grad():
            block.f.weight.copy_(k * torch.eye(4, 8).view(4, 8, 1, 1))
            block.f.bias.zero_()
        block.start_as_channel_mean()
        assert torch.allclose(block(x).flatten(), expected)
    # positions that differ only in length (x_p = c_p on every channel, f_p = c_p (1, 1, 1, 1)): cos = 1 for
    # every pair, so A is the plain average; the dot product 4 c_i c_j gives every row most of its
    # weight at the longest key (c = 4), and A is flat near that key's zbar
    x = c.view(1, 1, 2, 2).expand(1, 8, 2, 2).contiguous()
    dot, cosine = NonLocalAttention(8, nonnegative=True), NonLocalAttention(8, nonnegative=True, similarity="cosine")
    for block in (dot, cosine):
        with torch.no_grad():
            block.f.weight.copy_(torch.eye(4, 8).view(4, 8, 1, 1))
            block.f.bias.zero_()
        block.start_as_channel_mean()
    a_dot, a_cos = dot(x).flatten(), cosine(x).flatten()
    expected_dot = torch.stack([(torch.softmax(4 * ci * c, 0) * c).sum() for ci in c])
    assert torch.allclose(a_dot, expected_dot) and (expected_dot > 3.9).all()
    assert torch.allclose(a_cos, torch.full((4,), c.mean().item()))  # all alike: the plain average
def test_unit_embeddings_make_eq3_independent_of_the_embedding_scale():
    torch.manual_seed(0)
    z = [torch.randn(5, 16) for _ in range(3)]
    losses = {scale: contrastive_attention_loss(*(unit_embedding(e * scale) for e in z), margin=1.0).item()
              for scale in (0.01, 1.0, 300.0)}
    assert losses[0.01] == pytest.approx(losses[1.0]) == pytest.approx(losses[300.0])
    raw = {scale: contrastive_attention_loss(*(e * scale for e in z), margin=1.0).item() for scale in (1.0, 300.0)}
    assert raw[300.0] > 10 * raw[1.0]  # unnormalised, the hinge grows with the scale
    assert torch.allclose(unit_embedding(torch.tensor([[3.0, 4.0]])), torch.tensor([[0.6, 0.8]]))
    zero = torch.zeros(1, 2, requires_grad=True)  # a zero embedding: the guarded denominator keeps it finite
    unit_embedding(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


# ------------------------------------------------------------------------------ diagnostics

def test_attention_figures_of_a_hand_drawn_map():
    a = torch.cat([grid([[-1, 0], [2, 4]]),  # mean 1.25
                   grid([[1, 1], [1, 1]])])  # flat
    theta_fg, theta_bg = attention_thresholds(a, gamma_fg=0.9, gamma_bg=1.0)  # 3.6 and 1.25; 0.9 and 1
    dropping = dropped_foreground_mask(a, theta_fg, theta_bg)  # image 1: only the 2; image 2: empty
    figures = attention_figures(a, dropping, theta_fg)
    assert figures["negative"].item() == pytest.approx(1 / 8)
    assert figures["fg_above_max"].item() == 0.0  # every theta_fg is below its max
    assert figures["drop_empty"].item() == pytest.approx(1 / 2)
    assert figures["drop_area"].item() == pytest.approx((1 / 4 + 0) / 2)
    std = math.sqrt(((-1 - 1.25) ** 2 + 1.25**2 + 0.75**2 + 2.75**2) / 4)
    assert figures["variation"].item() == pytest.approx((std / (7 / 4) + 0) / 2)
    negative = -torch.ones(1, 1, 2, 2)  # max -1: theta_fg = 0.9 x -1 = -0.9 lies above every pixel
    assert attention_figures(negative, dropped_foreground_mask(negative, *attention_thresholds(negative, 0.9, 1.0)),
                             attention_thresholds(negative, 0.9, 1.0)[0])["fg_above_max"].item() == 1.0
    assert spatial_variation(torch.zeros(1, 1, 2, 2)).item() == 0.0  # no 0/0
