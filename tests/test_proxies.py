"""Zero-shot proxies (NTK condition number, ZiCo) and ranked voting (AutoProg-Zero, Eq. 16, 17, 19)."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoprog.proxies import (
    NTKFallbackWarning,
    gram_condition_number,
    ntk_condition_number,
    ntk_gram,
    rademacher,
    zico,
    zico_from_gradients,
    zico_layers,
)
from autoprog.proxies.ntk import _partition, learnable_parameters
from autoprog.search import DEFAULT_WEIGHTS, VoteResult, competition_ranks, ranked_vote

# --- tiny models ---------------------------------------------------------------------------------


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.fc2 = nn.Linear(7, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


class TinyAttention(nn.Module):
    """LayerNorm + 2-head self-attention (fused SDPA) + a class embedding; output (N, T, 2)."""

    def __init__(self, dim: int = 8, heads: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(classes, dim)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 2)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        n, t, d = x.shape
        h = x + self.embed(y)[:, None]  # (N, T, D)
        q, k, v = self.qkv(self.norm(h)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (N, H, T, D/H)
        h = h + self.proj(a.transpose(1, 2).reshape(n, t, d))
        return self.head(h)


class InPlaceMLP(TinyMLP):
    """Writes a batched tensor into a fresh unbatched buffer in place: ``vmap`` cannot do that."""

    def forward(self, x: Tensor) -> Tensor:
        buf = torch.zeros(x.shape[0], 7, dtype=x.dtype)
        buf[:, :] = torch.tanh(self.fc1(x))
        return self.fc2(buf)


def mlp_forward(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def attn_forward(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return model(x, y)


def mlp_case() -> tuple[nn.Module, tuple[Tensor, ...], list[str]]:
    model = TinyMLP().double().eval()
    return model, (torch.randn(6, 5, dtype=torch.float64),), ["fc1.bias", "fc2.weight"]


def attn_case() -> tuple[nn.Module, tuple[Tensor, ...], list[str]]:
    model = TinyAttention().double().eval()
    inputs = (torch.randn(5, 4, 8, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 0]))
    return model, inputs, ["norm.weight", "qkv.weight", "head.bias", "embed.weight"]


def dense_gram(
    model: nn.Module, inputs: tuple[Tensor, ...], forward, names: list[str], seed: int = 0
) -> Tensor:
    """The reference: an explicit per-sample ``autograd.grad`` loop, ``J`` of shape (N, P), ``K = J J^T``."""
    model = copy.deepcopy(model)
    params = dict(model.named_parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    learn = [params[n].requires_grad_(True) for n in names]
    n = inputs[0].shape[0]
    out_shape = forward(model, *(x[:1] for x in inputs)).shape[1:]
    r = (torch.randint(0, 2, out_shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1).double()
    rows = []
    for i in range(n):
        s = (forward(model, *(x[i : i + 1] for x in inputs))[0] * r).sum()
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(s, learn)]).double())
    jac = torch.stack(rows)  # (N, P)
    return jac @ jac.T


def snapshot(model: nn.Module) -> dict[str, tuple[Tensor, bool]]:
    return {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}


def assert_unchanged(model: nn.Module, before: dict[str, tuple[Tensor, bool]]) -> None:
    for n, p in model.named_parameters():
        value, flag = before[n]
        assert torch.equal(p, value), n
        assert p.requires_grad == flag, n
        assert p.grad is None, n


# --- NTK -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [mlp_case, attn_case], ids=["mlp", "attention"])
@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_ntk_gram_matches_dense_computation(case, method):
    model, inputs, names = case()
    forward = mlp_forward if len(inputs) == 1 else attn_forward
    before = snapshot(model)
    gram = ntk_gram(model, inputs, forward, param_names=names, method=method)
    ref = dense_gram(model, inputs, forward, names)
    assert gram.dtype == torch.float64 and gram.shape == ref.shape
    torch.testing.assert_close(gram, ref, rtol=1e-9, atol=1e-12)
    eig = torch.linalg.eigvalsh(ref)
    kappa = ntk_condition_number(model, inputs, forward, param_names=names, method=method)
    assert kappa == pytest.approx(float(eig[-1] / eig[0]), rel=1e-6)
    assert_unchanged(model, before)


def test_frozen_parameters_do_not_contribute():
    model, inputs, names = attn_case()
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    by_flags = ntk_gram(model, inputs, attn_forward)  # param_names=None: those with requires_grad
    by_names = ntk_gram(model, inputs, attn_forward, param_names=names)
    torch.testing.assert_close(by_flags, by_names, rtol=0, atol=0)
    everything = ntk_gram(model, inputs, attn_forward, param_names=[n for n, _ in model.named_parameters()])
    assert not torch.allclose(everything, by_names)
    # a parameter that is frozen in the model but named as learnable does count, and flags are restored
    with_proj = ntk_gram(model, inputs, attn_forward, param_names=[*names, "proj.weight"], method="loop")
    torch.testing.assert_close(
        with_proj, dense_gram(model, inputs, attn_forward, [*names, "proj.weight"]), rtol=1e-9, atol=1e-12
    )
    assert not model.proj.weight.requires_grad


@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_ntk_grouping_gives_the_same_gram(method):
    model, inputs, names = attn_case()
    n = inputs[0].shape[0]
    learnable = learnable_parameters(model, names)
    small = n * 40  # a few hundred entries: several groups, the 192-entry qkv.weight alone
    assert len(_partition(learnable, n, small)) >= 3
    assert len(_partition(learnable, n, 2**26)) == 1
    one = ntk_gram(model, inputs, attn_forward, param_names=names, method=method)
    many = ntk_gram(model, inputs, attn_forward, param_names=names, method=method, max_chunk_elems=small)
    torch.testing.assert_close(one, many, rtol=1e-12, atol=1e-14)


def test_ntk_vmap_and_loop_agree_in_float32():
    model = TinyAttention().eval()
    inputs = (torch.randn(4, 4, 8), torch.tensor([0, 1, 2, 0]))
    a = ntk_gram(model, inputs, attn_forward, method="vmap")
    b = ntk_gram(model, inputs, attn_forward, method="loop")
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_ntk_auto_falls_back_to_the_loop_when_vmap_fails():
    model = InPlaceMLP().double().eval()
    x = torch.randn(6, 5, dtype=torch.float64)
    names = ["fc1.weight", "fc2.bias"]
    with pytest.raises(RuntimeError):
        ntk_gram(model, (x,), mlp_forward, param_names=names, method="vmap")
    before = snapshot(model)
    with pytest.warns(NTKFallbackWarning, match="vmap"):
        gram = ntk_gram(model, (x,), mlp_forward, param_names=names)
    torch.testing.assert_close(gram, dense_gram(model, (x,), mlp_forward, names), rtol=1e-9, atol=1e-12)
    assert_unchanged(model, before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ntk_gram(model, (x,), mlp_forward, param_names=names, method="loop")  # no attempt, no warning


def test_ntk_probe_vector_is_seeded():
    model, inputs, names = attn_case()
    a = ntk_gram(model, inputs, attn_forward, param_names=names, seed=3)
    torch.testing.assert_close(
        a, ntk_gram(model, inputs, attn_forward, param_names=names, seed=3), rtol=0, atol=0
    )
    torch.testing.assert_close(
        a, dense_gram(model, inputs, attn_forward, names, seed=3), rtol=1e-9, atol=1e-12
    )
    # K depends on r only up to its sign; seeds 3 and 4 draw different (not opposite) vectors here
    r3, r4 = (rademacher((4, 2), s, dtype=torch.float64, device=torch.device("cpu")) for s in (3, 4))
    assert not torch.equal(r3, r4) and not torch.equal(r3, -r4)
    assert not torch.allclose(a, ntk_gram(model, inputs, attn_forward, param_names=names, seed=4))


def test_condition_number_edge_cases():
    assert gram_condition_number(torch.diag(torch.tensor([1.0, 4.0]))) == pytest.approx(4.0)
    assert gram_condition_number(torch.tensor([[1.0, 1.0], [1.0, 1.0]]), eps=1e-6) == pytest.approx(1e6)
    assert gram_condition_number(torch.zeros(3, 3)) == math.inf
    # more samples than learnable entries: rank-deficient, clamped at 1/eps
    model, _, _ = mlp_case()
    x = torch.randn(5, 5, dtype=torch.float64)
    assert ntk_condition_number(
        model, (x,), mlp_forward, param_names=["fc2.bias"], eps=1e-8
    ) == pytest.approx(1e8)


def test_ntk_rejects_bad_arguments():
    model, inputs, _ = mlp_case()
    with pytest.raises(ValueError, match="not parameters"):
        ntk_gram(model, inputs, mlp_forward, param_names=["nope"])
    with pytest.raises(ValueError, match="no learnable"):
        ntk_gram(model, inputs, mlp_forward, param_names=[])
    with pytest.raises(ValueError, match="batch dimension"):
        ntk_gram(TinyAttention(), (torch.randn(3, 4, 8), torch.tensor([0, 1])), attn_forward)
    with pytest.raises(ValueError, match="method"):
        ntk_gram(model, inputs, mlp_forward, method="fast")  # type: ignore[arg-type]


# --- ZiCo ----------------------------------------------------------------------------------------


class MyLinear(nn.Linear):
    """Stands for diffusers' / timm's Linear subclasses."""


class TinyConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.frozen = nn.Linear(18, 6)
        self.out = MyLinear(6, 3)
        self.norm = nn.LayerNorm(6)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv(x)).flatten(1)  # (N, 18)
        return self.out(self.norm(torch.tanh(self.frozen(h))))


def zico_batches(n_batches: int) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(4, 1, 5, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (4,), generator=g))
        for _ in range(n_batches)
    ]


def ce_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def numpy_zico(model: nn.Module, batches, layers: list[str]) -> float:
    """Eq. 17 in numpy from per-batch ``autograd.grad`` of the loss."""
    model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    per_layer: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    for batch in batches:
        weights = [modules[name].weight for name in layers]
        grads = torch.autograd.grad(ce_loss(model, batch), weights)
        for name, g in zip(layers, grads, strict=True):
            per_layer[name].append(g.detach().numpy().reshape(-1))
    total = 0.0
    for stack in per_layer.values():
        g = np.stack(stack)
        m, s = np.abs(g).mean(0), g.std(0)
        keep = s != 0
        s_l = (m[keep] / s[keep]).sum()
        if s_l != 0:
            total += np.log(s_l)
    return float(total)


@pytest.mark.parametrize("n_batches", [2, 3])
def test_zico_matches_numpy(n_batches):
    model = TinyConvNet().double()
    model.frozen.requires_grad_(False)
    batches = zico_batches(n_batches)
    before = snapshot(model)
    score = zico(model, batches, ce_loss)
    assert_unchanged(model, before)
    assert score == pytest.approx(numpy_zico(model, batches, ["conv", "out"]), rel=1e-10)
    assert list(zico_layers(model, learnable_parameters(model))) == [
        "conv",
        "out",
    ]  # frozen one, LayerNorm out
    # naming the learnable parameters instead of flagging them: same selection, flags untouched
    model.frozen.requires_grad_(True)
    names = [n for n, _ in model.named_parameters() if not n.startswith("frozen.")]
    assert zico(model, batches, ce_loss, param_names=names) == pytest.approx(score, rel=1e-12)
    everything = zico(model, batches, ce_loss)
    assert everything == pytest.approx(numpy_zico(model, batches, ["conv", "frozen", "out"]), rel=1e-10)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_zico_skips_zero_std_entries():
    model = TinyMLP().double()
    g = torch.Generator().manual_seed(2)
    batches = []
    for _ in range(3):
        x = torch.randn(4, 5, generator=g, dtype=torch.float64)
        x[:, 2] = 0.0  # fc1.weight[:, 2] gets a zero gradient in every batch: std 0, skipped
        batches.append((x, torch.randint(0, 3, (4,), generator=g)))
    score = zico(model, batches, ce_loss)
    assert math.isfinite(score)
    assert score == pytest.approx(numpy_zico(model, batches, ["fc1", "fc2"]), rel=1e-10)


def test_zico_from_gradients_by_hand():
    grads = {
        # entry 0: m = 2, s = 1 -> 2; entry 1: equal in both batches (s = 0), skipped -> S = 2
        "a": [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.0])],
        # the same non-zero value in 3 batches: float rounding must not make s tiny but non-zero
        "b": [torch.tensor([0.1, 0.0]), torch.tensor([0.1, 0.0]), torch.tensor([0.1, 0.0])],
        # entry 0: [1, -1, 1] -> m = 1, s = sqrt(8/9) -> 3 / (2 sqrt 2)
        "c": [torch.tensor([1.0]), torch.tensor([-1.0]), torch.tensor([1.0])],
    }
    assert zico_from_gradients(grads) == pytest.approx(math.log(2.0) + math.log(3 / (2 * math.sqrt(2))))
    assert zico_from_gradients({}) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        zico_from_gradients({"a": [torch.ones(2)]})


def test_zico_needs_two_batches_and_a_learnable_layer():
    model = TinyConvNet().double()
    with pytest.raises(ValueError, match="at least 2 batches"):
        zico(model, zico_batches(1), ce_loss)
    with pytest.raises(ValueError, match="Linear/Conv"):
        zico(model, zico_batches(2), ce_loss, param_names=["norm.weight"])
    assert all(p.grad is None for p in model.parameters())


# --- ranked voting -------------------------------------------------------------------------------


def test_competition_ranks():
    assert competition_ranks([1, 2, 2, 4]) == [1, 2, 2, 4]
    assert competition_ranks([3.0, 1.0, 1.0, 2.0]) == [4, 1, 1, 3]
    assert competition_ranks([3.0, 1.0, 1.0, 2.0], higher_is_better=True) == [1, 3, 3, 2]
    assert competition_ranks([1.0, 1.0 + 5e-7, 2.0]) == [1, 1, 3]  # within tol: a tie
    assert competition_ranks([1.0, 1.0 + 5e-7, 2.0], tol=0.0) == [1, 2, 3]
    assert competition_ranks([math.inf, 1.0, math.inf]) == [2, 1, 2]
    assert competition_ranks([math.nan, 1.0, 0.5]) == [3, 2, 1]
    assert competition_ranks([math.nan, 1.0], higher_is_better=True) == [2, 1]
    assert competition_ranks([]) == []


# Stage-0 style ballots: {64, 128} px x unfreezing level {1, 2}; ntk is log kappa.
STAGE0 = [
    {"time": 1.0, "ntk": 5.0, "zico": 100.0},  # 64 px, level 1: fastest, worst quality
    {"time": 1.5, "ntk": 4.0, "zico": 150.0},  # 64 px, level 2
    {"time": 2.0, "ntk": 4.5, "zico": 110.0},  # 128 px, level 1
    {"time": 3.0, "ntk": 3.0, "zico": 160.0},  # 128 px, level 2: slowest, best quality
]


def test_ranked_vote_default_weights():
    assert DEFAULT_WEIGHTS == {"time": 1.0, "ntk": 0.5, "zico": 0.5}
    result = ranked_vote(STAGE0)
    assert isinstance(result, VoteResult)
    assert result.ranks == {"time": [1, 2, 3, 4], "ntk": [4, 2, 3, 1], "zico": [4, 2, 3, 1]}
    assert result.totals == [5.0, 4.0, 6.0, 5.0]
    assert result.winner == 1
    d = result.to_dict()
    assert d["winner"] == 1 and d["ranks"]["zico"] == [4, 2, 3, 1] and d["weights"] == dict(DEFAULT_WEIGHTS)
    # kappa instead of log kappa: the same ranks
    as_kappa = [{**c, "ntk": math.exp(c["ntk"])} for c in STAGE0]
    assert ranked_vote(as_kappa).ranks == result.ranks


def test_ranked_vote_custom_weights_and_tie_to_the_faster():
    equal = ranked_vote(STAGE0, weights={"time": 1.0, "ntk": 1.0, "zico": 1.0})  # Eq. 19 read literally
    assert equal.totals == [9.0, 6.0, 9.0, 6.0]
    assert equal.winner == 1  # tie between 1 and 3: the faster
    assert ranked_vote(STAGE0, weights={"ntk": 1.0, "zico": 1.0}).winner == 3  # quality only
    assert ranked_vote(STAGE0, weights={"time": 1.0}).winner == 0
    # two candidates, the slower listed first, equal totals (2 + 0.5 + 0.5 = 1 + 1 + 1): the faster wins
    pair = [{"time": 2.0, "ntk": 1.0, "zico": 10.0}, {"time": 1.0, "ntk": 2.0, "zico": 5.0}]
    tie = ranked_vote(pair)
    assert tie.totals == [3.0, 3.0] and tie.winner == 1
    assert ranked_vote(pair, time_key=None).winner == 0  # no tie-breaker: the earlier
    # a new ballot with its direction
    extra = [{**c, "snip": s} for c, s in zip(pair, [0.0, 9.0], strict=True)]
    voted = ranked_vote(
        extra,
        weights={**DEFAULT_WEIGHTS, "snip": 0.5},
        higher_is_better={"time": False, "ntk": False, "zico": True, "snip": True},
    )
    assert voted.ranks["snip"] == [2, 1] and voted.totals == [4.0, 3.5] and voted.winner == 1


def test_ranked_vote_rejects_bad_ballots():
    with pytest.raises(ValueError, match="at least one candidate"):
        ranked_vote([])
    with pytest.raises(ValueError, match="no value"):
        ranked_vote([{"time": 1.0, "ntk": 1.0}])
    with pytest.raises(ValueError, match="direction"):
        ranked_vote([{"time": 1.0, "snip": 1.0}], weights={"time": 1.0, "snip": 1.0})
