"""The fast paths (SDPA's fused causal kernel, loss only at labelled positions, the blocked catalog
cross-entropy, bf16 autocast) give what a plain, slow reference computation gives on tiny data, up
to float noise."""

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from hfseqrec import SASRecConfig, SASRecForNextItemPrediction


def reference_sasrec(model, input_ids):
    """SASRec written out plainly: explicit causal + padding mask, softmax by hand, every position
    scored against the whole catalog, loss by a Python loop over the real targets."""
    m, config = model.model, model.config
    real = input_ids != config.pad_token_id
    positions = torch.stack([torch.tensor([int(real[b, t + 1:].sum()) for t in range(input_ids.size(1))])
                             for b in range(input_ids.size(0))])
    h = (m.item_embeddings(input_ids) * math.sqrt(config.hidden_size) + m.position_embeddings(positions)) * real[..., None]
    length = input_ids.size(1)
    allowed = torch.ones(length, length, dtype=torch.bool).tril() & real[:, None, :]
    allowed |= torch.eye(length, dtype=torch.bool)
    for layer in m.layers:
        x = layer.attention_norm(h)
        q, k, v = layer.attention.qkv(x).chunk(3, dim=-1)
        heads, d = config.num_attention_heads, config.hidden_size // config.num_attention_heads
        q, k, v = (t.view(*t.shape[:2], heads, d).transpose(1, 2) for t in (q, k, v))
        weights = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        weights = weights.masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
        attended = (weights @ v).transpose(1, 2).reshape(*h.shape)
        h = h + layer.attention.o_proj(attended)
        h = h + layer.mlp(layer.mlp_norm(h))
    return m.final_norm(h)


def tiny_model():
    torch.manual_seed(0)
    config = SASRecConfig(vocab_size=40, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                          max_position_embeddings=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return SASRecForNextItemPrediction(config).eval()


def test_fused_causal_path_matches_the_plain_reference():
    model = tiny_model()
    right = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]])  # right padding: fused is_causal path
    left = torch.tensor([[5, 6, 7, 8, 9, 10], [0, 0, 0, 11, 12, 13]])   # left padding: explicit mask path
    for ids in (right, left):
        fast = model(ids).last_hidden_state
        slow = reference_sasrec(model, ids)
        real = ids != 0
        torch.testing.assert_close(fast[real], slow[real], atol=1e-5, rtol=1e-5)


def test_loss_at_labelled_positions_matches_a_loop_over_targets():
    model = tiny_model()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]])
    labels = torch.tensor([[6, 7, 8, 9, 10, 14], [12, 13, 15, -100, -100, -100]])
    hidden = reference_sasrec(model, ids)
    weight = model.model.item_embeddings.weight
    losses = [F.cross_entropy((hidden[b, t] @ weight[3:].T)[None], torch.tensor([labels[b, t] - 3]))
              for b in range(2) for t in range(6) if labels[b, t] != -100]
    torch.testing.assert_close(model(ids, labels=labels).loss, torch.stack(losses).mean(), atol=1e-5, rtol=1e-5)


def test_bf16_autocast_stays_close_to_fp32():
    model = tiny_model()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]])
    labels = torch.tensor([[6, 7, 8, 9, 10, 14], [12, 13, 15, -100, -100, -100]])
    full = model(ids, labels=labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model(ids, labels=labels)
    torch.testing.assert_close(half.loss.float(), full.loss, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(half.logits[:, 3:].float(), full.logits[:, 3:], atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("family", ["sasrec", "bert4rec", "gru4rec"])
def test_blocked_catalog_cross_entropy_matches_the_plain_loss_and_gradients(family):
    # Each family's file carries its own copy (checkpoints are self-contained): check every copy,
    # with more rows than one block and a gradient scale that is not 1.
    fused = importlib.import_module(f"hfseqrec.models.{family}.modeling_{family}").CatalogCrossEntropy
    torch.manual_seed(0)
    hidden = torch.randn(fused.BLOCK * 2 + 7, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (len(hidden),))
    exact_grads = torch.autograd.grad(3 * F.cross_entropy(hidden @ weight.T, targets), (hidden, weight))
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            fast = fused.apply(hidden, weight, targets)
            plain = F.cross_entropy((hidden @ weight.T).float(), targets)
        fast_grads = torch.autograd.grad(3 * fast, (hidden, weight))
        plain_grads = torch.autograd.grad(3 * plain, (hidden, weight))
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
        for a, b, exact in zip(fast_grads, plain_grads, exact_grads, strict=True):
            assert a.dtype == b.dtype == torch.float32
            if autocast:  # the softmax is rounded to bf16: no farther from fp32 than the plain bf16 path
                assert (a - exact).norm() <= 1.25 * (b - exact).norm()
            else:
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    loss = fused.apply(hidden, weight, targets)  # fp32: the saved probabilities must survive a backward
    first = torch.autograd.grad(loss, hidden, retain_graph=True)[0]
    torch.testing.assert_close(torch.autograd.grad(loss, hidden)[0], first, atol=0, rtol=0)


@pytest.mark.parametrize("family", ["sasrec", "bert4rec", "gru4rec"])
def test_catalog_cross_entropy_is_exact_where_the_target_probability_underflows(family):
    # The loss is -log(p_target); below 1e-30 it is taken from the scores instead (up to inf in fp32).
    fused = importlib.import_module(f"hfseqrec.models.{family}.modeling_{family}").CatalogCrossEntropy
    torch.manual_seed(0)
    hidden, weight = torch.randn(40, 16) * 30, torch.randn(50, 16)
    targets = torch.randint(0, 50, (40,))
    per_target = F.cross_entropy(hidden @ weight.T, targets, reduction="none")
    assert (per_target > 100).sum() > 10  # p_target < e^-100: 0 in fp32
    torch.testing.assert_close(fused.apply(hidden, weight, targets), per_target.mean(), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("family", ["sasrec", "bert4rec", "gru4rec"])
def test_cheap_dropout_drops_at_rate_p_and_keeps_the_mean(family):
    dropout = importlib.import_module(f"hfseqrec.models.{family}.modeling_{family}").Dropout(0.2)
    x = (torch.rand(1000, 1001) + 0.5).requires_grad_()  # an odd count: the last random word is cut
    torch.manual_seed(1)
    out = dropout(x)
    kept = out != 0
    # 1,001,000 draws: the standard deviation of the drop rate is 0.0004
    assert abs(1 - kept.float().mean().item() - 0.2) < 0.002
    torch.testing.assert_close(out[kept], x[kept] / (1 - round(0.2 * 65536) / 65536))
    torch.testing.assert_close(out.mean(), x.mean(), atol=2e-3, rtol=2e-3)
    out.sum().backward()
    torch.testing.assert_close(x.grad, out.detach() / x.detach())  # gradient = mask * scale
    torch.manual_seed(1)
    assert torch.equal(dropout(x), out)  # seeded like torch's own
    assert not torch.equal(dropout(x), out)  # and a fresh mask on each call
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dropout(x.bfloat16()).dtype == torch.bfloat16
    assert dropout.eval()(x) is x
