"""GRU4Rec configuration: the recurrent (GRU or LSTM) next-item baseline.

Imports only transformers and huggingface_hub, because this file is copied into every
checkpoint and must load with `trust_remote_code=True` where hfseqrec is not installed.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

LOSSES = ("ce", "sampled_softmax", "bce", "gbce")
CELLS = ("gru", "lstm")


@strict
class GRU4RecConfig(PreTrainedConfig):
    r"""
    vocab_size: items + special tokens (`num_special_tokens` ids at the start: [PAD], [MASK], [UNK]).
    cell: "gru" (GRU4Rec, Hidasi et al. 2016) or "lstm" (the seed document's 2-layer LSTM).
    hidden_size: the width of item embeddings and of the recurrent state (tied scorer).
    max_position_embeddings: the longest history the model reads (no position embeddings; the
        name is shared with the Transformer configs so every tool reads one field).
    num_event_types: size of the behaviour-type vocabulary (0 = no behaviour-type embeddings).
    scale_embedding: multiply item embeddings by sqrt(hidden_size) at the input (SASRec's own
        code does), so the item signal is not drowned by position embeddings at init.
    loss: "ce", "sampled_softmax", "bce" or "gbce" (see SASRecConfig).
    """

    model_type = "gru4rec"

    vocab_size: int = 1003
    hidden_size: int = 64
    num_hidden_layers: int = 1
    cell: str = "gru"
    hidden_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 200
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    mask_token_id: int | None = 1
    num_special_tokens: int = 3
    num_event_types: int = 0
    loss: str = "ce"
    num_negatives: int = 256
    gbce_t: float | int = 0.75
    is_causal: bool = True
    scale_embedding: bool = True
    tie_word_embeddings: bool = True

    def validate_hfseqrec(self):
        """Fail at construction with the field's name, not deep inside a forward pass."""
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if not 0 <= self.hidden_dropout_prob < 1:
            raise ValueError(f"hidden_dropout_prob must be in [0, 1), got {self.hidden_dropout_prob}")
        if self.vocab_size <= self.num_special_tokens:
            raise ValueError(f"vocab_size ({self.vocab_size}) must be larger than num_special_tokens "
                             f"({self.num_special_tokens}): the vocabulary holds no item")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.num_negatives < 1 or not 0 <= self.gbce_t <= 1:
            raise ValueError(f"num_negatives ({self.num_negatives}) must be >= 1 and gbce_t ({self.gbce_t}) in [0, 1]")
        for name in ("hidden_size", "num_hidden_layers", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_event_types < 0:
            raise ValueError(f"num_event_types must be >= 0, got {self.num_event_types}")


__all__ = ["GRU4RecConfig"]
