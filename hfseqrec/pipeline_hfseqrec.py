"""Serving stage: a user's history of raw item IDs -> the top-k next items, as a transformers pipeline.

`pipeline("next-item-recommendation", model=CHECKPOINT, trust_remote_code=True)` loads this file
from the checkpoint (it is copied there flat, so it imports only torch, transformers and the
standard library), the model from the checkpoint's code and the item vocabulary from its tokenizer
files. Input: `{"history": [raw IDs...], "event_types": [names...]}` or a list of such dicts.
Output per history: `[{"item_id": raw ID, "score": float}, ...]`, best first.

Histories in a list are batched (left-padded; the models count positions back from the last real
item, so padding does not change a history's scores) and give the same results as one at a time.
"""

import json

import torch
from transformers import Pipeline
from transformers.utils import cached_file, logging

logger = logging.get_logger(__name__)

EVENT_VOCAB_FILE = "event_vocab.json"
EVENT_PAD_ID, EVENT_UNK_ID = 0, 1  # the event-type embedding of id 0 is the zero vector (padding_idx)


def _is_raw_id(value):
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _check_id_list(name, values):
    if not isinstance(values, (list, tuple, set, frozenset)) or not all(_is_raw_id(v) for v in values):
        raise ValueError(f"{name} must be a list of raw item IDs (str or int), got {values!r:.80}")
    return [str(v) for v in values]


class NextItemRecommendationPipeline(Pipeline):
    """Top-k next-item recommendations for one history or a batch of histories.

    Options (at construction or per call): `top_k` (default 10), `exclude_seen` (default True: items
    in the history are never recommended), `exclude` (raw IDs never to recommend) and `allow` (raw
    IDs to choose from; all items when not given). Fewer than top_k come back only when the
    history's own items leave fewer to choose from. Unknown IDs in a history are skipped with a
    warning; a history longer than the model's window keeps its most recent items.
    """

    _load_tokenizer = True  # the item vocabulary is a WordLevel tokenizer saved with the checkpoint
    _load_processor = _load_image_processor = _load_feature_extractor = _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._batch_size is None:
            self._batch_size = 32  # a list of histories runs in batches unless told otherwise
        config = self.model.config
        self.num_special_tokens = getattr(config, "num_special_tokens", 3)
        self.item_id_type = self.tokenizer.init_kwargs.get("item_id_type", "str")
        self.event_ids = self._load_event_vocab()
        self._candidates = {}  # (allow, exclude) -> (V,) bool mask of recommendable token ids

    def _load_event_vocab(self):
        """event_vocab.json beside the model (local folder or hub repo) -> {name: id}, or None."""
        try:
            path = cached_file(self.model.name_or_path, EVENT_VOCAB_FILE,
                               _raise_exceptions_for_missing_entries=False,
                               _raise_exceptions_for_connection_errors=False)
        except (OSError, ValueError):
            path = None
        if path is None:
            return None
        with open(path) as f:
            return {name: i for i, name in enumerate(json.load(f)["names"])}

    def __call__(self, inputs, *args, **kwargs):
        # Check every history up front: a bare list of IDs would otherwise run as a batch of
        # one-item "histories", and an empty list crashes inside Pipeline.__call__.
        if isinstance(inputs, (list, tuple)):
            if not inputs:
                raise ValueError("no histories given: pass {'history': [...]} or a non-empty list of them")
            for history in inputs:
                self._check_history(history)
            inputs = list(inputs)
        else:
            self._check_history(inputs)
        return super().__call__(inputs, *args, **kwargs)

    @staticmethod
    def _check_history(inputs):
        if not isinstance(inputs, dict) or "history" not in inputs:
            raise ValueError("each input must be a dict {'history': [raw item IDs...]} (optionally with "
                             f"'event_types'), got {type(inputs).__name__} {inputs!r:.80}")
        history = inputs["history"]
        if not isinstance(history, (list, tuple)) or not all(_is_raw_id(i) for i in history):
            raise ValueError(f"'history' must be a list of raw item IDs (str or int), got {history!r:.80}")
        if not history:
            raise ValueError("'history' is empty: give at least one item ID")
        events = inputs.get("event_types")
        if events is not None and (not isinstance(events, (list, tuple)) or len(events) != len(history)
                                   or not all(isinstance(e, str) for e in events)):
            raise ValueError(f"'event_types' must be a list of {len(history)} behaviour names (one per "
                             f"history item), got {events!r:.80}")

    def _sanitize_parameters(self, top_k=None, exclude_seen=None, exclude=None, allow=None, **kwargs):
        if kwargs:
            raise ValueError(f"unknown option(s) {sorted(kwargs)}; known: top_k, exclude_seen, exclude, allow")
        post = {}
        if top_k is not None:
            if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k <= 0:
                raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
            post["top_k"] = top_k
        if exclude_seen is not None:
            if not isinstance(exclude_seen, bool):
                raise ValueError(f"exclude_seen must be True or False, got {exclude_seen!r}")
            post["exclude_seen"] = exclude_seen
        for name, values in (("exclude", exclude), ("allow", allow)):
            if values is not None:
                post[name] = tuple(sorted(set(self._known_ids(name, _check_id_list(name, values)))))
        return {}, {}, post

    def _known_ids(self, name, tokens):
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        unknown = [t for t, i in zip(tokens, ids, strict=True) if i is None or i < self.num_special_tokens]
        if unknown:
            logger.warning(f"{name}: {len(unknown)} item ID(s) not in the catalog, ignored: {unknown[:5]}")
        return [i for i in ids if i is not None and i >= self.num_special_tokens]

    def preprocess(self, inputs):
        """One history -> (1, L) input_ids / attention_mask / event_type_ids and (1, S) seen ids."""
        self._check_history(inputs)  # again: generators and datasets bypass __call__'s check
        config = self.model.config
        tokens = [str(i) for i in inputs["history"]]
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        names = inputs.get("event_types")
        events = self._event_type_ids(names) if names is not None else [EVENT_PAD_ID] * len(ids)
        keep = [j for j, i in enumerate(ids) if i is not None and i >= self.num_special_tokens]
        if len(keep) < len(ids):
            unknown = [t for t, i in zip(tokens, ids, strict=True) if i is None or i < self.num_special_tokens]
            if not keep:
                raise ValueError(f"none of the {len(ids)} history item IDs is in the model's catalog "
                                 f"(e.g. {unknown[:3]})")
            logger.warning(f"history: {len(unknown)} unknown item ID(s) skipped: {unknown[:5]}")
        ids, events = [ids[j] for j in keep], [events[j] for j in keep]
        seen = ids
        # The window: BERT4Rec (bidirectional) predicts at an appended [MASK], so it keeps one slot.
        window = config.max_position_embeddings - (0 if config.is_causal else 1)
        ids, events = ids[-window:], events[-window:]
        if not config.is_causal:
            ids, events = ids + [config.mask_token_id], events + [EVENT_PAD_ID]
        return {
            "input_ids": torch.tensor([ids]),
            "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "event_type_ids": torch.tensor([events]),
            "seen": torch.tensor([seen]),
        }

    def _event_type_ids(self, names):
        if not getattr(self.model.config, "num_event_types", 0):
            logger.warning_once("event_types given, but this model has no behaviour-type embeddings: ignored")
            return [EVENT_PAD_ID] * len(names)
        if self.event_ids is None:
            raise ValueError(f"event_types given, but no {EVENT_VOCAB_FILE} was found beside the model")
        unknown = sorted({n for n in names if n not in self.event_ids})
        if unknown:
            logger.warning(f"event_types: unknown behaviour type(s) {unknown[:5]} read as [UNK]; "
                           f"known: {list(self.event_ids)[2:]}")
        return [self.event_ids.get(n, EVENT_UNK_ID) for n in names]

    def _forward(self, model_inputs):
        seen = model_inputs.pop("seen")
        logits = self.model(**model_inputs).logits  # (B, V) next-item scores, specials at dtype min
        return {"logits": logits, "seen": seen}

    def _recommendable(self, allow, exclude):
        """(V,) bool mask of the items that may be recommended to anyone under allow/exclude."""
        key = (allow, exclude)
        if key not in self._candidates:
            mask = torch.zeros(self.model.config.vocab_size, dtype=torch.bool)
            if allow is None:
                mask[self.num_special_tokens:] = True
            else:
                mask[list(allow)] = True
            mask[list(exclude or ())] = False
            if len(self._candidates) > 64:
                self._candidates.clear()
            self._candidates[key] = mask
        return self._candidates[key]

    def postprocess(self, model_outputs, top_k=10, exclude_seen=True, exclude=None, allow=None):
        candidates = self._recommendable(allow, exclude)
        available = int(candidates.sum())
        if top_k > available:
            raise ValueError(f"top_k={top_k} is larger than the {available} items that can be recommended"
                             + (" after allow/exclude" if allow is not None or exclude else ""))
        scores = model_outputs["logits"][0].float().masked_fill(~candidates, float("-inf"))
        if exclude_seen:
            scores[model_outputs["seen"][0]] = float("-inf")  # padding (id 0) is a special: already out
        # Deterministic order: the k best scores, ties by token id (the stable sort keeps id order).
        threshold = scores.topk(top_k).values[-1]
        pool = torch.nonzero(scores >= threshold).squeeze(1)  # ascending token ids
        order = torch.sort(scores[pool], descending=True, stable=True).indices[:top_k]
        best = pool[order]
        best = best[scores[best] > float("-inf")]  # when seen items leave fewer than k
        raw = self.tokenizer.convert_ids_to_tokens(best.tolist())
        if self.item_id_type == "int":
            raw = [int(r) for r in raw]
        return [{"item_id": r, "score": s} for r, s in zip(raw, scores[best].tolist(), strict=True)]
