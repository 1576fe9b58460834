"""GRU4Rec-style recurrent baseline: a GRU or LSTM over the item sequence (Hidasi et al., ICLR 2016).

input_ids (B, L) item token ids -> hidden states (B, L, H) -> scores over the catalog (B, V) for
the item that follows the last real position. With `labels` (B, L), -100 where there is no
target, the loss is computed at the labelled positions only.

Deviations from the paper: trained on whole user sequences with shift-by-one targets (not
session-parallel mini-batches) and full cross-entropy by default, as in the "GRU4Rec revisited"
comparisons (Klenitskiy & Vasilev 2023); item embeddings are tied to the scorer. The seed
document's baseline, a 2-layer LSTM, is `cell="lstm", num_hidden_layers=2`.
This file imports only torch and transformers: it is copied into every checkpoint.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput

from .configuration_gru4rec import GRU4RecConfig


# Copied from hfseqrec/models/sasrec/modeling_sasrec.py (each model folder must stand alone)
@dataclass
class NextItemOutput(ModelOutput):
    """loss: scalar when labels are given; logits: (B, V) next-item scores, specials at -inf."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


def positions_from_end(attention_mask):
    """(B, L) 0/1 mask -> (B, L) position ids counting back from the last real item (0 = last)."""
    return (attention_mask.long().flip(1).cumsum(1).flip(1) - 1).clamp(min=0)


def last_real_index(attention_mask):
    """(B, L) 0/1 mask -> (B,) index of the last real position, for left or right padding."""
    return attention_mask.size(1) - 1 - attention_mask.long().flip(1).argmax(1)  # argmax rejects bool


def next_item_loss(hidden, item_weight, labels, negative_ids, config):
    """Loss at the labelled positions. hidden (T, H), labels (T,), item_weight (V, H).

    negative_ids (N,) are sampled by the collator (models never sample) and shared by the batch.
    """
    specials = config.num_special_tokens
    if config.loss == "ce":
        logits = hidden @ item_weight[specials:].T  # (T, V - specials): specials are never targets
        return F.cross_entropy(logits.float(), labels - specials)
    if negative_ids is None:
        raise ValueError(f"loss={config.loss!r} needs negative_ids from the collator")
    positive = (hidden * item_weight[labels]).sum(-1)  # (T,)
    negative = hidden @ item_weight[negative_ids].T  # (T, N)
    hit = labels[:, None] == negative_ids[None, :]  # a sampled negative that is the target
    if config.loss == "sampled_softmax":
        # log-Q correction: uniform sampling of N negatives from the catalog, q = N / num_items.
        log_q = math.log(negative_ids.numel() / (config.vocab_size - specials))
        negative = (negative.float() - log_q).masked_fill(hit, float("-inf"))
        logits = torch.cat([positive.float()[:, None], negative], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(labels))
    # BCE and gBCE: gBCE raises the positive's probability to the power beta (Petrov & Macdonald
    # 2023, eq. 8) to undo the overconfidence that negative sampling causes; t = 0 is plain BCE.
    beta = 1.0
    if config.loss == "gbce":
        alpha = negative_ids.numel() / (config.vocab_size - specials - 1)
        beta = alpha * (config.gbce_t * (1 - 1 / alpha) + 1 / alpha)
    negative_loss = F.softplus(negative.float()).masked_fill(hit, 0.0).sum(-1)
    return (beta * F.softplus(-positive.float()) + negative_loss).mean()


class GRU4RecPreTrainedModel(PreTrainedModel):
    config: GRU4RecConfig
    config_class = GRU4RecConfig
    base_model_prefix = "model"

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, nn.GRU | nn.LSTM):
            for name, weight in module.named_parameters():
                # orthogonal recurrent weights keep the state's scale stable over long sequences
                (nn.init.orthogonal_ if "weight_hh" in name else nn.init.xavier_uniform_ if "weight" in name
                 else nn.init.zeros_)(weight)


class GRU4RecModel(GRU4RecPreTrainedModel):
    """The encoder: returns (B, L, H) hidden states."""

    def __init__(self, config: GRU4RecConfig):
        super().__init__(config)
        self.item_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        # The scorer is tied to these embeddings: scaling the input only keeps initial logits small.
        self.embedding_scale = config.hidden_size**0.5 if config.scale_embedding else 1.0
        self.event_type_embeddings = (nn.Embedding(config.num_event_types, config.hidden_size, padding_idx=0)
                                      if config.num_event_types else None)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        rnn = nn.GRU if config.cell == "gru" else nn.LSTM
        self.rnn = rnn(config.hidden_size, config.hidden_size, num_layers=config.num_hidden_layers, batch_first=True,
                       dropout=config.hidden_dropout_prob if config.num_hidden_layers > 1 else 0.0)
        self.post_init()

    def get_input_embeddings(self):
        return self.item_embeddings

    def set_input_embeddings(self, value):
        self.item_embeddings = value

    def forward(self, input_ids, attention_mask=None, event_type_ids=None, **kwargs):
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        # A recurrence that reads left padding first would carry it into its state. Move the real
        # items to the front (stable sort keeps their order), run, then put outputs back in place.
        order = torch.sort((attention_mask == 0).to(torch.uint8), dim=1, stable=True).indices  # (B, L)
        hidden = self.item_embeddings(input_ids.gather(1, order)) * self.embedding_scale
        if self.event_type_embeddings is not None and event_type_ids is not None:
            hidden = hidden + self.event_type_embeddings(event_type_ids.gather(1, order))
        hidden, _ = self.rnn(self.dropout(hidden))
        hidden = self.dropout(hidden)
        unsorted = torch.empty_like(hidden).scatter_(1, order.unsqueeze(-1).expand_as(hidden), hidden)
        return BaseModelOutput(last_hidden_state=unsorted)


class GRU4RecForNextItemPrediction(GRU4RecPreTrainedModel):
    """Recurrent encoder + item scorer tied to the item embeddings."""

    _tied_weights_keys = {"head.weight": "model.item_embeddings.weight"}

    def __init__(self, config: GRU4RecConfig):
        super().__init__(config)
        self.model = GRU4RecModel(config)
        self.head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.head

    def set_output_embeddings(self, value):
        self.head = value

    def forward(self, input_ids, attention_mask=None, event_type_ids=None, labels=None, negative_ids=None, **kwargs):
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        hidden = self.model(input_ids, attention_mask, event_type_ids).last_hidden_state  # (B, L, H)
        last = hidden[torch.arange(hidden.size(0), device=hidden.device), last_real_index(attention_mask)]
        logits = self.head(last)  # (B, V)
        logits[:, : self.config.num_special_tokens] = torch.finfo(logits.dtype).min
        loss = None
        if labels is not None:
            target = labels != -100
            loss = next_item_loss(hidden[target], self.head.weight, labels[target], negative_ids, self.config)
        return NextItemOutput(loss=loss, logits=logits, last_hidden_state=hidden)


__all__ = ["GRU4RecModel", "GRU4RecForNextItemPrediction", "GRU4RecPreTrainedModel"]
