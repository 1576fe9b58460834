"""Serving benchmark on CPU: latency of one top-10 request and throughput of batched requests, as JSON.

    python scripts/benchmark_serve.py [--model CKPT] [--requests 200] [--threads 1]

Without --model it saves a randomly initialised SASRec of MovieLens-1M size (3,416 items, hidden 64,
2 layers, window 200): latency depends on the shapes, not on the weights, so it matches a trained one.
Histories are full windows of random items, the worst case for the window. One torch thread by
default: a serving worker per core, and no oversubscription when other processes share the CPU.
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch
from transformers import AutoConfig

from hfseqrec import MODEL_FAMILIES
from hfseqrec.checkpoint import save_checkpoint
from hfseqrec.recommend import build_pipeline
from hfseqrec.vocabulary import EventVocabulary, ItemVocabulary


def random_checkpoint(path, items=3416, hidden=64, layers=2, window=200):
    vocab = ItemVocabulary.from_items(range(1, items + 1), max_len=window)
    config = AutoConfig.for_model("sasrec", vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=2, intermediate_size=4 * hidden, max_position_embeddings=window)
    save_checkpoint(MODEL_FAMILIES["sasrec"][1](config), path, vocab, EventVocabulary.from_types([]))
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory (default: a random ML-1M-size SASRec)")
    parser.add_argument("--requests", type=int, default=200, help="timed single requests")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or random_checkpoint(os.path.join(tempfile.mkdtemp(), "sasrec-ml1m-size"))
    pipe = build_pipeline(model)
    config, rng = pipe.model.config, np.random.default_rng(0)
    catalog = pipe.tokenizer.convert_ids_to_tokens(list(range(config.num_special_tokens, config.vocab_size)))
    window = config.max_position_embeddings - (0 if config.is_causal else 1)
    histories = [{"history": list(rng.choice(catalog, size=window))} for _ in range(args.requests + 64)]

    for request in histories[:20]:  # warm-up
        pipe(request, top_k=10)
    seconds = []
    for request in histories[:args.requests]:
        start = time.perf_counter()
        pipe(request, top_k=10)
        seconds.append(time.perf_counter() - start)
    ms = np.array(seconds) * 1000
    report = {"model": args.model or "random-init SASRec, ML-1M size (same latency as a trained one)",
              "model_type": config.model_type, "items": config.vocab_size - config.num_special_tokens,
              "hidden_size": config.hidden_size, "layers": config.num_hidden_layers, "history_length": window,
              "torch_threads": torch.get_num_threads(), "requests": args.requests,
              "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 3),
                             "p99": round(float(np.percentile(ms, 99)), 3), "mean": round(float(ms.mean()), 3)},
              "target_p50_ms": 5.0, "throughput_histories_per_s": {}}
    for batch in (32, 64):
        pipe(histories[:batch], top_k=10, batch_size=batch)  # warm-up
        start, rounds = time.perf_counter(), 5
        for _ in range(rounds):
            pipe(histories[:batch], top_k=10, batch_size=batch)
        report["throughput_histories_per_s"][f"batch_{batch}"] = round(rounds * batch / (time.perf_counter() - start), 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
