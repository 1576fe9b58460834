"""Next-item ranking metrics as an `evaluate` module, for the ecosystem.

    metric = evaluate.load("<hfseqrec>/metrics_hub/next_item_ranking")   # a local path: works offline
    metric.compute(predictions=[[5, 9, 2], ...], references=[9, ...], k=10)
    -> {"hr@10": ..., "ndcg@10": ..., "mrr@10": ...}

`predictions` are ranked item lists (best first, seen items already removed), `references` the one
held-out item per user. A target missing from its list counts as a miss. hfseqrec's own evaluation
uses the plain functions in `hfseqrec.metrics` (full ranking, pessimistic ties); this module is a
thin, dependency-free mirror of the same formulas. It imports only datasets and evaluate.
"""

import math

import datasets
import evaluate


class NextItemRanking(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="HR@k, NDCG@k and MRR@k for next-item recommendation with one target per user.",
            citation="",
            inputs_description="predictions: ranked item ids per user; references: the target item id.",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64")),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions, references, k=10):
        hr = ndcg = mrr = 0.0
        for ranked, target in zip(predictions, references, strict=True):
            ranked = list(ranked)[:k]
            if target in ranked:
                rank = ranked.index(target)  # 0-based
                hr, ndcg, mrr = hr + 1, ndcg + 1 / math.log2(rank + 2), mrr + 1 / (rank + 1)
        n = max(len(references), 1)
        return {f"hr@{k}": hr / n, f"ndcg@{k}": ndcg / n, f"mrr@{k}": mrr / n}
