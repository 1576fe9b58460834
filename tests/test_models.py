"""Model tests: the contract SASRec, BERT4Rec and GRU4Rec share, checked on tiny configs.

Every test builds a model from `AutoConfig.for_model(model_type, ...)` alone (hidden 16, vocab 50,
histories of at most 12 items) and checks behaviour, not implementation: shapes, save/load round
trips, causality, padding and batch invariance, that the model can learn, the losses, the
behaviour-type embeddings and config validation. The whole file runs in a few seconds on a CPU.
"""

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassError
from safetensors import safe_open
from transformers import AutoConfig, AutoModel

import hfseqrec

FAMILIES = list(hfseqrec.MODEL_FAMILIES)
CAUSAL = {"sasrec", "gru4rec"}
TRANSFORMERS = ["sasrec", "bert4rec"]
VOCAB, HIDDEN, MAX_LEN = 50, 16, 12
PAD, MASK, SPECIALS = 0, 1, 3
LOSSES = ["ce", "sampled_softmax", "bce", "gbce"]


def tiny_config(model_type, **overrides):
    kwargs = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, max_position_embeddings=MAX_LEN,
                  hidden_dropout_prob=0.0, num_negatives=8)
    if model_type != "gru4rec":
        kwargs.update(num_attention_heads=2, intermediate_size=32, attention_probs_dropout_prob=0.0)
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_model(model_type, seed=0, **overrides):
    torch.manual_seed(seed)
    return hfseqrec.MODEL_FAMILIES[model_type][1](tiny_config(model_type, **overrides)).eval()


def query(model_type, items):
    """A history as the model reads it at inference: BERT4Rec scores an appended [MASK]."""
    return list(items) + [MASK] if model_type == "bert4rec" else list(items)


def pad(rows, length=None, side="left"):
    """Lists of ids -> (input_ids, attention_mask), both (B, L) long, padded on `side`."""
    length = length or max(len(row) for row in rows)
    ids = torch.full((len(rows), length), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask


def random_items(generator, *shape):
    return torch.randint(SPECIALS, VOCAB, shape, generator=generator)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_auto_classes_build_the_registered_head_model(model_type):
    config_class, model_class = hfseqrec.MODEL_FAMILIES[model_type]
    config = tiny_config(model_type)
    assert type(config) is config_class
    assert (config.vocab_size, config.hidden_size, config.max_position_embeddings) == (VOCAB, HIDDEN, MAX_LEN)
    assert type(AutoModel.from_config(config)) is model_class


@pytest.mark.parametrize("model_type", FAMILIES)
def test_output_shapes_and_special_scores(model_type):
    model = tiny_model(model_type)
    ids, mask = pad([query(model_type, [5, 6, 7]), query(model_type, [8, 9, 10, 11, 12, 13])])
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
    batch, length = ids.shape
    assert out.loss is None
    assert out.logits.shape == (batch, VOCAB)
    assert out.last_hidden_state.shape == (batch, length, HIDDEN)
    # specials can never be recommended; every item gets a finite score
    assert (out.logits[:, :SPECIALS] == torch.finfo(out.logits.dtype).min).all()
    assert torch.isfinite(out.logits[:, SPECIALS:]).all()
    # the scores are the tied item embeddings against the state at the last real position
    last = out.last_hidden_state[:, -1]
    expected = last @ model.get_input_embeddings().weight[SPECIALS:].T
    torch.testing.assert_close(out.logits[:, SPECIALS:], expected)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_save_and_load_round_trip(model_type, tmp_path):
    model = tiny_model(model_type, num_event_types=3)
    model.save_pretrained(tmp_path)

    files = sorted(p.name for p in tmp_path.iterdir())
    code = [name for name in files if name.endswith(".py")]
    assert code, files
    assert set(files) - set(code) == {"config.json", "model.safetensors"}, files
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    # the scorer is tied to the item embeddings: saved once, under the embedding's name
    assert "model.item_embeddings.weight" in keys
    assert "head.weight" not in keys

    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    assert loaded.config.num_event_types == 3
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
    ids, mask = pad([query(model_type, [4, 9, 16]), query(model_type, [20, 21, 22, 23, 24])])
    events = torch.ones_like(ids) + (torch.arange(ids.size(1)) % 2)
    with torch.no_grad():
        before = model(ids, attention_mask=mask, event_type_ids=events).logits
        after = loaded(ids, attention_mask=mask, event_type_ids=events).logits
    torch.testing.assert_close(after, before, atol=0, rtol=0)


@pytest.mark.parametrize("model_type", FAMILIES)
@pytest.mark.parametrize("side", ["none", "left"])
def test_future_items_reach_earlier_positions_only_in_bert4rec(model_type, side):
    model = tiny_model(model_type)
    generator = torch.Generator().manual_seed(0)
    items = random_items(generator, 2, 8)
    changed = items.clone()
    changed[:, 5:] = random_items(generator, 2, 3)
    padding = 0 if side == "none" else 3
    ids, mask = pad(items.tolist() + changed.tolist(), length=8 + padding, side="left")
    with torch.no_grad():
        hidden = model(ids, attention_mask=mask).last_hidden_state[:, padding:]  # real positions only
    original, edited = hidden[:2], hidden[2:]
    assert not torch.allclose(original[:, 5:], edited[:, 5:], atol=1e-4)  # the edit is visible
    if model_type in CAUSAL:
        torch.testing.assert_close(edited[:, :5], original[:, :5], atol=1e-6, rtol=0)
    else:  # bidirectional: every position sees the whole history
        assert not torch.allclose(edited[:, :5], original[:, :5], atol=1e-4)


@pytest.mark.parametrize("model_type", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_scores(model_type, side):
    model = tiny_model(model_type)
    history = query(model_type, [7, 3, 30, 12, 41])
    alone = pad([history])
    padded = pad([history], length=MAX_LEN, side=side)
    with torch.no_grad():
        expected = model(*alone)
        got = model(*padded)
    torch.testing.assert_close(got.logits[:, SPECIALS:], expected.logits[:, SPECIALS:], atol=1e-5, rtol=0)
    real = padded[1].bool()
    torch.testing.assert_close(got.last_hidden_state[real], expected.last_hidden_state[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_sasrec_positions_from_the_start_are_padding_invariant_too(side):
    from hfseqrec.models.sasrec.modeling_sasrec import position_ids

    ids, mask = pad([[7, 3, 30]], length=5, side=side)
    real = mask.bool()
    assert position_ids(mask, "start")[real].tolist() == [0, 1, 2]
    assert position_ids(mask, "end")[real].tolist() == [2, 1, 0]
    start, end = tiny_model("sasrec", position_origin="start"), tiny_model("sasrec")
    with torch.no_grad():
        expected = start(*pad([[7, 3, 30]])).logits
        torch.testing.assert_close(start(ids, mask).logits, expected, atol=1e-5, rtol=0)
        assert not torch.allclose(end(ids, mask).logits, expected)  # the origin changes the model


@pytest.mark.parametrize("model_type", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_a_row_scores_the_same_alone_and_in_a_batch(model_type, side):
    model = tiny_model(model_type)
    generator = torch.Generator().manual_seed(1)
    rows = [query(model_type, random_items(generator, n).tolist()) for n in (3, 10, 6, 1)]
    with torch.no_grad():
        batched = model(*pad(rows, side=side)).logits
        alone = torch.cat([model(*pad([row])).logits for row in rows])
    torch.testing.assert_close(batched[:, SPECIALS:], alone[:, SPECIALS:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_attention_mask_may_be_long_bool_or_float(model_type):
    model = tiny_model(model_type)
    ids, mask = pad([query(model_type, [5, 6, 7]), query(model_type, [8, 9, 10, 11, 12])])
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        for other in (mask.bool(), mask.float(), None):  # None: derived from the [PAD] ids
            torch.testing.assert_close(model(ids, attention_mask=other).logits, expected, atol=0, rtol=0)


def test_lstm_cell_is_padding_invariant_and_round_trips(tmp_path):
    model = tiny_model("gru4rec", cell="lstm")
    rows = [[7, 3, 30], [12, 41, 8, 19, 25, 33]]
    with torch.no_grad():
        alone = torch.cat([model(*pad([row])).logits for row in rows])
        for side in ("left", "right"):
            batched = model(*pad(rows, length=MAX_LEN, side=side)).logits
            torch.testing.assert_close(batched[:, SPECIALS:], alone[:, SPECIALS:], atol=1e-5, rtol=0)
        model.save_pretrained(tmp_path)
        loaded = AutoModel.from_pretrained(tmp_path).eval()
        assert loaded.config.cell == "lstm"
        torch.testing.assert_close(loaded(*pad(rows)).logits, model(*pad(rows)).logits, atol=0, rtol=0)


def training_batch(model_type, generator, batch=4, length=8):
    """The collator's job, done by hand: shift-by-one targets (causal) or cloze masking (BERT4Rec)."""
    items = random_items(generator, batch, length + 1)
    if model_type in CAUSAL:
        return items[:, :-1], items[:, 1:].clone()
    ids = items[:, 1:].clone()
    masked = torch.zeros_like(ids, dtype=torch.bool)
    masked[:, ::3] = True
    masked[:, -1] = True
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    return ids.masked_fill(masked, MASK), labels


@pytest.mark.parametrize("model_type", FAMILIES)
def test_tiny_model_overfits_one_batch(model_type):
    model = tiny_model(model_type, hidden_size=32).train()
    ids, labels = training_batch(model_type, torch.Generator().manual_seed(2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(300):
        loss = model(ids, labels=labels).loss
        losses.append(loss.item())
        if losses[-1] < 0.05 * losses[0]:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1], len(losses))


@pytest.mark.parametrize("model_type", FAMILIES)
@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_runs_forward_and_backward(model_type, loss):
    model = tiny_model(model_type, loss=loss, num_event_types=2).train()
    ids, labels = training_batch(model_type, torch.Generator().manual_seed(3))
    labels[0, :4] = -100  # positions without a target
    # shared negatives from the collator; one of them is also a target, which must not be penalised
    negative_ids = torch.cat([labels[labels != -100][:1], torch.arange(40, 47)])
    out = model(ids, labels=labels, negative_ids=negative_ids, event_type_ids=torch.ones_like(ids))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert "model.item_embeddings.weight" in grads
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), name
    if loss != "ce":
        with pytest.raises(ValueError, match="negative_ids"):
            model(ids, labels=labels)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_ce_loss_uses_only_labelled_positions_and_never_targets_specials(model_type):
    model = tiny_model(model_type)
    ids, labels = training_batch(model_type, torch.Generator().manual_seed(4))
    labels[1, :] = -100
    out = model(ids, labels=labels)
    target = labels != -100
    scores = out.last_hidden_state[target] @ model.get_input_embeddings().weight[SPECIALS:].T
    torch.testing.assert_close(out.loss, F.cross_entropy(scores, labels[target] - SPECIALS))


@pytest.mark.parametrize("model_type", FAMILIES)
def test_event_types_change_the_scores(model_type):
    model = tiny_model(model_type, num_event_types=3)
    ids, mask = pad([query(model_type, [5, 9, 13, 17])])
    clicks = torch.ones_like(ids)
    purchases = clicks.clone()
    purchases[0, 1] = 2
    with torch.no_grad():
        plain = model(ids, attention_mask=mask).logits
        with_clicks = model(ids, attention_mask=mask, event_type_ids=clicks).logits
        with_purchase = model(ids, attention_mask=mask, event_type_ids=purchases).logits
        with_none = model(ids, attention_mask=mask, event_type_ids=torch.zeros_like(ids)).logits
    assert not torch.allclose(with_clicks, with_purchase, atol=1e-6)
    assert not torch.allclose(plain, with_clicks, atol=1e-6)
    torch.testing.assert_close(with_none, plain)  # event type 0 is "no type"


BAD_VALUES = [(family, field, value) for family in FAMILIES for field, value in [
    ("loss", "hinge"), ("hidden_dropout_prob", -0.1), ("vocab_size", SPECIALS)]]
BAD_VALUES += [(family, "num_attention_heads", 3) for family in TRANSFORMERS]  # 16 % 3 != 0
BAD_VALUES += [(family, "attention_probs_dropout_prob", -0.5) for family in TRANSFORMERS]
BAD_VALUES += [("gru4rec", "cell", "rnn"), ("sasrec", "position_origin", "middle")]


@pytest.mark.parametrize(("model_type", "field", "value"), BAD_VALUES)
def test_bad_config_values_fail_at_construction_naming_the_field(model_type, field, value):
    with pytest.raises((ValueError, StrictDataclassError), match=field) as info:
        tiny_config(model_type, **{field: value})
    error = info.value
    assert isinstance(error, ValueError) or isinstance(error.__cause__, ValueError)


@pytest.mark.parametrize("model_type", TRANSFORMERS)
def test_history_longer_than_max_positions_is_an_error(model_type):
    model = tiny_model(model_type)
    ids = torch.arange(SPECIALS, SPECIALS + MAX_LEN + 1)[None]
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(ids)
    assert model(ids[:, -MAX_LEN:]).logits.shape == (1, VOCAB)
