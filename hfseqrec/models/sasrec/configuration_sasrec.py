"""SASRec configuration: the causal (GPT-style) next-item Transformer.

Imports only transformers and huggingface_hub, because this file is copied into every
checkpoint and must load with `trust_remote_code=True` where hfseqrec is not installed.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

LOSSES = ("ce", "sampled_softmax", "bce", "gbce")


@strict
class SASRecConfig(PreTrainedConfig):
    r"""
    vocab_size: items + special tokens (`num_special_tokens` ids at the start: [PAD], [MASK], [UNK]).
    max_position_embeddings: the longest history the model reads; longer ones are cut from the left.
    num_event_types: size of the behaviour-type vocabulary (0 = no behaviour-type embeddings).
    position_origin: where position 0 is: "end" (the most recent item, as in SASRec's own code,
        which left-pads to a fixed length) or "start" (the oldest item in the window, as in
        right-padded ports such as Klenitskiy & Vasilev's).
    scale_embedding: multiply item embeddings by sqrt(hidden_size) at the input (SASRec's own
        code does), so the item signal is not drowned by position embeddings at init.
    loss: "ce" (full softmax cross-entropy), "sampled_softmax" (log-Q corrected, `num_negatives`
        uniform negatives), "bce" (binary cross-entropy with negatives) or "gbce" (Petrov &
        Macdonald 2023, calibrated by `gbce_t`).
    """

    model_type = "sasrec"

    vocab_size: int = 1003
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 1
    intermediate_size: int = 256
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 200
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-8
    pad_token_id: int | None = 0
    mask_token_id: int | None = 1
    num_special_tokens: int = 3
    num_event_types: int = 0
    loss: str = "ce"
    num_negatives: int = 256
    gbce_t: float | int = 0.75
    is_causal: bool = True
    position_origin: str = "end"
    scale_embedding: bool = True
    tie_word_embeddings: bool = True

    def validate_hfseqrec(self):
        """Fail at construction with the field's name, not deep inside a forward pass."""
        if self.hidden_size <= 0 or self.num_attention_heads <= 0:
            raise ValueError(f"hidden_size ({self.hidden_size}) and num_attention_heads "
                             f"({self.num_attention_heads}) must be positive")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_attention_heads ({self.num_attention_heads})")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.vocab_size <= self.num_special_tokens:
            raise ValueError(f"vocab_size ({self.vocab_size}) must be larger than num_special_tokens "
                             f"({self.num_special_tokens}): the vocabulary holds no item")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.num_negatives < 1 or not 0 <= self.gbce_t <= 1:
            raise ValueError(f"num_negatives ({self.num_negatives}) must be >= 1 and gbce_t ({self.gbce_t}) in [0, 1]")
        for name in ("num_hidden_layers", "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.position_origin not in ("end", "start"):
            raise ValueError(f"position_origin must be 'end' or 'start', got {self.position_origin!r}")
        if self.num_event_types < 0:
            raise ValueError(f"num_event_types must be >= 0, got {self.num_event_types}")


__all__ = ["SASRecConfig"]
