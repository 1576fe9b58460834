"""Ranking metrics as pure functions of scores and ranks (the evaluation stage's arithmetic).

Protocol: full ranking over the whole catalog. The rank of a target is the number of items that
score strictly higher plus the number of *other* items that tie with it (ties broken
pessimistically, so a constant scorer gets no credit). Excluded items (specials, the user's seen
items) score -inf, except the target itself, which is never hidden. Ranks are 0-based.
"""

import torch

DEFAULT_KS = (1, 5, 10, 20, 50)


def target_ranks(scores, targets, exclude=None):
    """scores (B, V) float, targets (B,) ids, exclude (B, S) ids to rule out (any padding id that
    is itself excluded, e.g. a special) -> (B,) 0-based pessimistic ranks of the targets."""
    scores = scores.float().clone()
    rows = torch.arange(scores.size(0), device=scores.device)
    target_scores = scores[rows, targets]
    if exclude is not None:
        scores.scatter_(1, exclude, float("-inf"))
        scores[rows, targets] = target_scores  # seen filtering never hides the target
    higher = (scores > target_scores[:, None]).sum(1)
    ties = (scores == target_scores[:, None]).sum(1) - 1  # every other item with the same score
    return higher + ties


def metrics_from_ranks(ranks, ks=DEFAULT_KS):
    """(N,) 0-based ranks -> {"hr@k", "ndcg@k", "mrr@k"} averaged over the N users, for every k.

    One relevant item per user, so HR@k = recall@k, NDCG@k = 1 / log2(rank + 2) and
    MRR@k = 1 / (rank + 1) when rank < k, else 0.
    """
    ranks = torch.as_tensor(ranks, dtype=torch.float64)
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 2), 0.0).mean().item()
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / (ranks + 1), 0.0).mean().item()
    return out


def top_k_items(scores, k, exclude=None):
    """scores (B, V), exclude (B, S) -> (B, k) ids of the best items, best first.

    Among the chosen items equal scores are ordered by id; which of several items tied at the k-th
    place gets in is up to `torch.topk` (deterministic for a given row). A full sort of the
    catalog would settle that too, at O(V log V) per user instead of O(V).
    """
    scores = scores.float().clone()
    if exclude is not None:
        scores.scatter_(1, exclude, float("-inf"))
    values, ids = scores.topk(min(k, scores.size(1)), dim=1)
    ids, by_id = ids.sort(dim=1)
    order = values.gather(1, by_id).sort(dim=1, descending=True, stable=True).indices
    return ids.gather(1, order)


def coverage(top_items, num_items, num_special_tokens=0):
    """Share of the catalog (specials excluded) that appears in at least one user's top list."""
    recommended = torch.unique(top_items)
    return (recommended >= num_special_tokens).sum().item() / max(num_items, 1)

