"""Collators: the training objective lives here, not in the models or the loop.

A batch of user rows (from a prepared split) -> padded tensors for `model(**batch)`:
- `CausalCollator` (SASRec, GRU4Rec): shift by one, input s[:-1] predicts s[1:] at every position;
- `ClozeCollator` (BERT4Rec): a seeded share of positions replaced by [MASK], labels there only;
- `EvalCollator`: the history, cut to the model's window (+ an appended [MASK] for BERT4Rec), the
  target item and every item the user has seen (to exclude at ranking).
Padding is on the right: causal attention then needs no padding mask (SDPA's fused kernel), and
the models count positions back from the last real item, so scores do not depend on padding.
Losses that need negatives get `negative_ids` (N,) sampled uniformly from the catalog here.
"""

import numpy as np
import torch

IGNORE_INDEX = -100


def pad_right(rows, value, dtype=torch.long):
    """list of 1-D int arrays -> (B, max len) tensor padded with `value` on the right."""
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=dtype)
    return out


class _Seeded:
    """A torch generator whose state is saved and restored with `accelerator.save_state`."""

    def __init__(self, config, seed):
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])

    def negatives(self):
        """(N,) item ids drawn uniformly (specials excluded), or None when the loss needs none."""
        if self.config.loss == "ce":
            return None
        return torch.randint(self.config.num_special_tokens, self.config.vocab_size,
                             (self.config.num_negatives,), generator=self.generator)

    def finish(self, batch):
        negatives = self.negatives()
        if negatives is not None:
            batch["negative_ids"] = negatives
        return batch


class CausalCollator(_Seeded):
    """Shift-by-one: input s[:-1] and labels s[1:], from the last max_len + 1 items."""

    def __call__(self, rows):
        window = self.config.max_position_embeddings + 1
        items = [np.asarray(r["input_ids"])[-window:] for r in rows]
        events = [np.asarray(r["event_type_ids"])[-window:] for r in rows]
        input_ids = pad_right([s[:-1] for s in items], self.config.pad_token_id)
        return self.finish({
            "input_ids": input_ids,
            "attention_mask": (input_ids != self.config.pad_token_id).long(),
            "event_type_ids": pad_right([e[:-1] for e in events], 0),
            "labels": pad_right([s[1:] for s in items], IGNORE_INDEX),
        })


class ClozeCollator(_Seeded):
    """Cloze task: each of the last max_len items is masked with `config.mask_probability`.

    Every row gets at least one masked item (else it would teach nothing), and the masked item's
    behaviour type is hidden too, so the model cannot read "purchase" off the masked position.
    """

    def __call__(self, rows):
        window = self.config.max_position_embeddings
        items = pad_right([np.asarray(r["input_ids"])[-window:] for r in rows], self.config.pad_token_id)
        events = pad_right([np.asarray(r["event_type_ids"])[-window:] for r in rows], 0)
        real = items != self.config.pad_token_id
        masked = (torch.rand(items.shape, generator=self.generator) < self.config.mask_probability) & real
        # rows where nothing was drawn: mask their last real item
        empty = ~masked.any(1)
        last = real.sum(1) - 1
        masked[empty, last[empty]] = True
        return self.finish({
            "input_ids": items.masked_fill(masked, self.config.mask_token_id),
            "attention_mask": real.long(),
            "event_type_ids": events.masked_fill(masked, 0),
            "labels": items.masked_fill(~masked, IGNORE_INDEX),
        })


class EvalCollator:
    """History -> the model's input window; label = the held-out item; seen = the whole history."""

    def __init__(self, config):
        self.config = config

    def __call__(self, rows):
        causal = self.config.is_causal
        window = self.config.max_position_embeddings if causal else self.config.max_position_embeddings - 1
        history = [np.asarray(r["input_ids"]) for r in rows]
        items = [h[-window:] for h in history]
        events = [np.asarray(r["event_type_ids"])[-window:] for r in rows]
        if not causal:  # BERT4Rec predicts at an appended [MASK] with an unknown behaviour type
            items = [np.append(s, self.config.mask_token_id) for s in items]
            events = [np.append(e, 0) for e in events]
        input_ids = pad_right(items, self.config.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": (input_ids != self.config.pad_token_id).long(),
            "event_type_ids": pad_right(events, 0),
            "labels": torch.tensor([r["label"] for r in rows], dtype=torch.long),
            "seen": pad_right(history, self.config.pad_token_id),
        }


def training_collator(config, seed):
    return (CausalCollator if config.is_causal else ClozeCollator)(config, seed)
