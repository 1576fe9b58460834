"""Data stage 2: the vocabularies, raw IDs <-> token ids.

The item vocabulary is a `transformers` tokenizer (a `tokenizers` WordLevel model), so it saves and
loads with every checkpoint and users speak their own item IDs in and out. Ids 0-2 are `[PAD]`,
`[MASK]`, `[UNK]`; items follow from 3. Raw IDs are strings inside the tokenizer; the init kwarg
`item_id_type` ("int" or "str", kept in tokenizer_config.json) says whether to give back ints.

Behaviour types (view, cart, ...) get a small vocabulary of their own, saved as plain JSON
`event_vocab.json`: id 0 `[PAD]`, 1 `[UNK]`, real types from 2.
"""

import json
import os
import re

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .errors import HfSeqRecError

PAD_ID, MASK_ID, UNK_ID = 0, 1, 2
SPECIAL_TOKENS = ("[PAD]", "[MASK]", "[UNK]")
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)
EVENT_VOCAB_FILE = "event_vocab.json"
ITEM_VOCAB_DIR = "item_vocab"
_CANONICAL_INT = re.compile(r"^(0|-?[1-9][0-9]*)$")  # "007" is not an int: int("007") loses the zeros


def build_item_tokenizer(raw_item_ids, max_len=200):
    """WordLevel tokenizer over the raw item IDs, in the order given (item k -> id k + 3)."""
    tokens = [str(raw) for raw in raw_item_ids]
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for token in tokens:
        if token in vocab:
            raise HfSeqRecError(f"item ID {token!r} is repeated or clashes with a special token")
        if not token or token.split() != [token]:
            raise HfSeqRecError(f"item ID {token!r} is empty or contains whitespace")
        vocab[token] = len(vocab)
    item_id_type = "int" if tokens and all(_CANONICAL_INT.match(t) for t in tokens) else "str"
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # a history "i1 i7 i9" tokenises too
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", mask_token="[MASK]",
                                   unk_token="[UNK]", padding_side="left", model_max_length=max_len,
                                   item_id_type=item_id_type)


class ItemVocabulary:
    """Thin wrapper over the item tokenizer: raw IDs (with their original type) <-> token ids."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.item_id_type = tokenizer.init_kwargs.get("item_id_type", "str")

    @classmethod
    def from_items(cls, raw_item_ids, max_len=200):
        return cls(build_item_tokenizer(raw_item_ids, max_len))

    @classmethod
    def from_pretrained(cls, path):
        """Load from a tokenizer folder, or from a prepared / checkpoint folder holding `item_vocab/`."""
        if os.path.isdir(os.path.join(path, ITEM_VOCAB_DIR)):
            path = os.path.join(path, ITEM_VOCAB_DIR)
        if not os.path.isfile(os.path.join(path, "tokenizer.json")):
            raise HfSeqRecError(f"{path}: no item vocabulary here (tokenizer.json not found)")
        return cls(PreTrainedTokenizerFast.from_pretrained(path))

    def save_pretrained(self, path):
        return self.tokenizer.save_pretrained(path)

    def __len__(self):
        return len(self.tokenizer)

    @property
    def num_items(self):
        return len(self) - NUM_SPECIAL_TOKENS

    def encode(self, raw_ids):
        """Raw IDs (str or int) -> token ids; unknown IDs -> UNK_ID."""
        return self.tokenizer.convert_tokens_to_ids([str(raw) for raw in raw_ids])

    def decode(self, token_ids):
        """Token ids -> raw IDs, as ints when every raw ID was an integer. Specials stay strings."""
        tokens = self.tokenizer.convert_ids_to_tokens([int(t) for t in token_ids])
        if self.item_id_type != "int":
            return tokens
        return [t if t in SPECIAL_TOKENS else int(t) for t in tokens]


class EventVocabulary:
    """Behaviour types: `names[id]` is the name of type `id`; 0 `[PAD]`, 1 `[UNK]`, real types from 2."""

    SPECIALS = ("[PAD]", "[UNK]")
    PAD_ID, UNK_ID = 0, 1

    def __init__(self, names):
        self.names = list(names)
        self._ids = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def from_types(cls, types):
        return cls([*cls.SPECIALS, *types])

    def __len__(self):
        return len(self.names)

    def encode(self, names):
        return [self._ids.get(name, self.UNK_ID) for name in names]

    def save(self, path):
        if os.path.isdir(path):
            path = os.path.join(path, EVENT_VOCAB_FILE)
        with open(path, "w") as f:
            json.dump({"names": self.names}, f, indent=1)

    @classmethod
    def load(cls, path):
        if os.path.isdir(path):
            path = os.path.join(path, EVENT_VOCAB_FILE)
        try:
            with open(path) as f:
                return cls(json.load(f)["names"])
        except (OSError, ValueError, KeyError) as err:
            raise HfSeqRecError(f"{path}: not a behaviour-type vocabulary ({err})") from None
