"""BERT4Rec: bidirectional self-attention trained as a cloze task (Sun et al., CIKM 2019).

input_ids (B, L) item token ids, with [MASK] where an item is to be predicted -> hidden states
(B, L, H) -> scores over the catalog (B, V) at the last real position, which at inference is the
[MASK] appended after the history (the collator and the pipeline append it). With `labels` (B, L), -100 where there is no
target, the loss is computed at the labelled positions only: (T, H) hidden states for T targets,
never a (B, L, V) tensor.

Deviations from the paper:
- pre-LayerNorm blocks (more stable at high learning rates) and no output bias in the tied
  prediction head;
- BCE, gBCE and sampled softmax are selectable besides full cross-entropy (`config.loss`);
- positions are counted back from the most recent item (0 = last), so a history scores the same
  however much padding surrounds it, left or right;
- optional behaviour-type embeddings are added to the item embeddings.
This file imports only torch and transformers: it is copied into every checkpoint.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput

from .configuration_bert4rec import BERT4RecConfig


@dataclass
class NextItemOutput(ModelOutput):
    """loss: scalar when labels are given; logits: (B, V) next-item scores, specials at -inf."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


# Copied from hfseqrec/models/sasrec/modeling_sasrec.py (each model folder must stand alone)
def positions_from_end(attention_mask):
    """(B, L) 0/1 mask -> (B, L) position ids counting back from the last real item (0 = last)."""
    return (attention_mask.long().flip(1).cumsum(1).flip(1) - 1).clamp(min=0)


def last_real_index(attention_mask):
    """(B, L) 0/1 mask -> (B,) index of the last real position, for left or right padding."""
    return attention_mask.size(1) - 1 - attention_mask.long().flip(1).argmax(1)  # argmax rejects bool


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on CPU: four 16-bit draws from each random 64-bit word.

    torch's CPU dropout draws one number per element from a scalar generator, ~9% of a SASRec
    training step; this draws a quarter as many words (3x faster). The drop rate is p rounded to a
    multiple of 1/65,536 (0.2 -> 0.199997) and kept values are scaled by the inverse keep rate.
    Other devices keep torch's dropout, which is fused there.
    """

    def forward(self, x):
        drop = round(self.p * 65536)
        if not self.training or drop == 0 or x.device.type != "cpu":
            return super().forward(x)
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        keep = words.view(torch.int16)[: x.numel()].view(x.shape) >= drop - 32768
        return x * keep.to(x.dtype).mul_(65536 / (65536 - drop))


class CatalogCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy of hidden (T, H) against every item in weight (V, H).

    Same result as F.cross_entropy((hidden @ weight.T).float(), targets), but walked in row blocks.
    Forward turns each block of scores into fp32 probabilities at once, takes the loss as -log of the
    target's probability, and keeps only the probabilities, rounded to the matmul dtype (bf16 under
    autocast), for backward, which subtracts the one-hot target and multiplies back. The plain path
    passes over the (T, V) scores about six times (log-softmax, its backward, fp32 copies); on a CPU
    that memory traffic costs about as much as the three matmuls.
    """

    BLOCK = 1024  # rows per block; on ML-1M 1,024 ran fastest of 128 to 2,048 (larger blocks multiply faster)

    @staticmethod
    def forward(ctx, hidden, weight, targets):
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        h, w = hidden.to(dtype), weight.to(dtype)
        loss = torch.empty(len(h), dtype=torch.float32, device=h.device)
        # (T, V) probabilities for backward, only when a gradient is wanted
        probs = torch.empty(len(h), len(w), dtype=dtype, device=h.device) if any(ctx.needs_input_grad) else None
        with torch.autocast(device, enabled=False):
            for i in range(0, len(h), CatalogCrossEntropy.BLOCK):
                j = slice(i, i + CatalogCrossEntropy.BLOCK)
                p = torch.softmax(torch.mm(h[j], w.T), 1, dtype=torch.float32)
                loss[j] = -p.gather(1, targets[j, None]).squeeze(1).log()
                if probs is not None:
                    probs[j] = p
            # Near fp32's smallest normal (1e-38) a probability loses precision, below 1e-45 it is 0:
            # take the rows whose target is below 1e-30 (loss > 69) from their scores.
            far = loss > 69
            if far.any():
                scores = (h[far] @ w.T).float()
                loss[far] = torch.logsumexp(scores, 1) - scores.gather(1, targets[far, None]).squeeze(1)
        ctx.save_for_backward(h, w, targets)
        ctx.probs, ctx.dtypes = probs, (hidden.dtype, weight.dtype)  # not saved: backward edits it in place
        return loss.mean()

    @staticmethod
    def backward(ctx, grad_output):
        h, w, targets = ctx.saved_tensors
        grad_hidden = torch.empty_like(h)
        grad_weight = torch.zeros(w.shape, dtype=torch.float32, device=w.device)  # summed over blocks
        rows = torch.arange(CatalogCrossEntropy.BLOCK, device=h.device)
        for i in range(0, len(h), CatalogCrossEntropy.BLOCK):
            j = slice(i, i + CatalogCrossEntropy.BLOCK)
            grad = ctx.probs[j]
            at = rows[: len(grad)], targets[j]
            # softmax - one_hot(target) in place, then the probabilities put back: a second backward
            # (retain_graph) must find them unchanged.
            target_probs = grad[at]
            grad[at] -= 1.0
            torch.mm(grad, w, out=grad_hidden[j])
            grad_weight += grad.T @ h[j]
            grad[at] = target_probs
        scale = grad_output.float() / len(h)  # the mean, applied to the small (T, H) and (V, H) results
        return (grad_hidden.float() * scale).to(ctx.dtypes[0]), (grad_weight * scale).to(ctx.dtypes[1]), None


def next_item_loss(hidden, item_weight, labels, negative_ids, config):
    """Loss at the labelled positions. hidden (T, H), labels (T,), item_weight (V, H).

    negative_ids (N,) are sampled by the collator (models never sample) and shared by the batch.
    """
    specials = config.num_special_tokens
    if config.loss == "ce":
        # specials are never targets, so they are left out of the softmax
        return CatalogCrossEntropy.apply(hidden, item_weight[specials:], labels - specials)
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


class BERT4RecAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_probs_dropout_prob
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden, mask):
        b, t, _ = hidden.shape
        q, k, v = self.qkv(hidden).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        # Bidirectional: mask is None (no padding) or a (B, 1, 1, L) boolean key mask.
        # torch's CPU flash-attention kernel trains 2-3x slower in bf16 than in fp32 at these sizes
        # (a head of 64, 200 positions): under CPU autocast, attend in fp32.
        if q.device.type == "cpu":
            q, k, v = q.float(), k.float(), v.float()
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                 dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))  # (B, L, H)


class BERT4RecLayer(nn.Module):
    """Pre-LayerNorm Transformer block."""

    def __init__(self, config):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = BERT4RecAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(config.hidden_size, config.intermediate_size),
                                 ACT2FN[config.hidden_act],
                                 nn.Linear(config.intermediate_size, config.hidden_size))
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden, mask):
        hidden = hidden + self.dropout(self.attention(self.attention_norm(hidden), mask))
        return hidden + self.dropout(self.mlp(self.mlp_norm(hidden)))


class BERT4RecPreTrainedModel(PreTrainedModel):
    config: BERT4RecConfig
    config_class = BERT4RecConfig
    base_model_prefix = "model"
    _no_split_modules = ["BERT4RecLayer"]


class BERT4RecModel(BERT4RecPreTrainedModel):
    """The encoder: returns (B, L, H) hidden states."""

    def __init__(self, config: BERT4RecConfig):
        super().__init__(config)
        self.item_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        # The scorer is tied to these embeddings: scaling the input only keeps initial logits small.
        self.embedding_scale = config.hidden_size**0.5 if config.scale_embedding else 1.0
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.event_type_embeddings = (nn.Embedding(config.num_event_types, config.hidden_size, padding_idx=0)
                                      if config.num_event_types else None)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList(BERT4RecLayer(config) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.item_embeddings

    def set_input_embeddings(self, value):
        self.item_embeddings = value

    def forward(self, input_ids, attention_mask=None, event_type_ids=None, **kwargs):
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        if input_ids.size(1) > self.config.max_position_embeddings:
            raise ValueError(f"input length {input_ids.size(1)} exceeds max_position_embeddings "
                             f"({self.config.max_position_embeddings}); keep the most recent items")
        hidden = (self.item_embeddings(input_ids) * self.embedding_scale
                  + self.position_embeddings(positions_from_end(attention_mask)))
        if self.event_type_embeddings is not None and event_type_ids is not None:
            hidden = hidden + self.event_type_embeddings(event_type_ids)
        hidden = self.dropout(hidden * attention_mask.unsqueeze(-1).to(hidden.dtype))
        mask = self._attention_mask(attention_mask.bool())
        for layer in self.layers:
            hidden = layer(hidden, mask)
        return BaseModelOutput(last_hidden_state=self.final_norm(hidden))

    @staticmethod
    def _attention_mask(real):
        """(B, L) bool -> None without padding (SDPA's fastest path), else a (B, 1, 1, L) key mask."""
        return None if bool(real.all()) else real[:, None, None, :]


class BERT4RecForNextItemPrediction(BERT4RecPreTrainedModel):
    """Encoder + BERT-style prediction head (dense, GELU, LayerNorm) + scorer tied to the item embeddings."""

    _tied_weights_keys = {"head.weight": "model.item_embeddings.weight"}

    def __init__(self, config: BERT4RecConfig):
        super().__init__(config)
        self.model = BERT4RecModel(config)
        self.transform = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), ACT2FN[config.hidden_act],
                                       nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps))
        self.head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.head

    def set_output_embeddings(self, value):
        self.head = value

    def forward(self, input_ids, attention_mask=None, event_type_ids=None, labels=None, negative_ids=None, **kwargs):
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        hidden = self.transform(self.model(input_ids, attention_mask, event_type_ids).last_hidden_state)  # (B, L, H)
        last = hidden[torch.arange(hidden.size(0), device=hidden.device), last_real_index(attention_mask)]
        logits = self.head(last)  # (B, V)
        logits[:, : self.config.num_special_tokens] = torch.finfo(logits.dtype).min
        loss = None
        if labels is not None:
            target = labels != -100
            loss = next_item_loss(hidden[target], self.head.weight, labels[target], negative_ids, self.config)
        return NextItemOutput(loss=loss, logits=logits, last_hidden_state=hidden)


__all__ = ["BERT4RecModel", "BERT4RecForNextItemPrediction", "BERT4RecPreTrainedModel"]
