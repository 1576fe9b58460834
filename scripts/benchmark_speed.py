"""Training throughput per model family on real ML-1M batches, against the matmul roofline.

python scripts/benchmark_speed.py --data ../shared/data/sasrec/ml-1m.txt.gz [--steps 8] [--precision bf16] [--profile]
    [--batch-size 128] [--random-batches]   (the SASRec recipe trains on --batch-size 32 --random-batches)
Prints one JSON object keyed by family: real (non-padding) target tokens per second, the FLOPs a
training step really executes (counted by torch's FlopCounterMode), the achieved GFLOP/s, and the
matmul GFLOP/s measured in the same run, so that roofline_fraction = gflops / matmul_gflops.
With --profile, each family also gets the share of self CPU time of its top operators (torch.profiler
over the timed steps run once more, so profiling does not slow the timed run).
"""

import argparse
import json
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModel

import hfseqrec  # noqa: F401  (registers the model families)
from hfseqrec.collators import training_collator
from hfseqrec.sequences import load_prepared, prepare
from hfseqrec.training import LengthGroupedBatches

# The ML-1M recipes' model sizes (configs/ml-1m-*.yaml).
FAMILIES = {
    "sasrec": dict(hidden_size=64, num_attention_heads=1, intermediate_size=256, attention_probs_dropout_prob=0.0,
                   hidden_dropout_prob=0.2, position_origin="start"),
    "bert4rec": dict(hidden_size=64, num_attention_heads=2, intermediate_size=256, attention_probs_dropout_prob=0.0,
                     hidden_dropout_prob=0.1, mask_probability=0.2),
    "gru4rec": dict(hidden_size=128, hidden_dropout_prob=0.2),
}


def matmul_gflops(dtype, n=2048, repeat=10):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n**3 * repeat / (time.perf_counter() - start) / 1e9


def top_operators(run_steps, count=8):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_steps()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:count]
    return {e.key: round(e.self_cpu_time_total / total, 3) for e in top}


def measure(model_type, data, vocab_size, args):
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, max_position_embeddings=200,
                                  **FAMILIES[model_type])
    model = AutoModel.from_config(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    collate = training_collator(config, seed=0)
    rows = data["train"].with_format("numpy", columns=["input_ids", "event_type_ids"])
    sampler = LengthGroupedBatches([len(x) for x in data["train"]["input_ids"]], args.batch_size, seed=0,
                                   group_by_length=not args.random_batches)
    batches = [collate(rows.__getitems__(b)) for b, _ in zip(sampler, range(args.steps + 2), strict=False)]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step(batch):
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step(batches[0])  # warm-up
    with FlopCounterMode(display=False) as counter:
        step(batches[1])
    flops_per_token = counter.get_total_flops() / int((batches[1]["labels"] != -100).sum())
    start, tokens = time.perf_counter(), 0
    for batch in batches[2:]:
        step(batch)
        tokens += int((batch["labels"] != -100).sum())
    seconds = time.perf_counter() - start
    profile_shares = top_operators(lambda: [step(b) for b in batches[2:]]) if args.profile else None
    return tokens / seconds, flops_per_token, profile_shares


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data", required=True, help="ML-1M in the SASRec format (read in place)")
parser.add_argument("--format", default="sasrec")
parser.add_argument("--steps", type=int, default=8, help="timed training steps per family")
parser.add_argument("--batch-size", type=int, default=128, help="users per batch")
parser.add_argument("--random-batches", action="store_true", help="random batches (group_by_length: false)")
parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
parser.add_argument("--families", default=",".join(FAMILIES))
parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
parser.add_argument("--profile", action="store_true", help="add each family's top operators (self CPU share)")
args = parser.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)

folder = tempfile.mkdtemp(prefix="hfseqrec-speed-")
prepare([args.data], folder, format=args.format)
data, items, _ = load_prepared(folder)
roof = matmul_gflops(torch.bfloat16 if args.precision == "bf16" else torch.float32)
out = {"precision": args.precision, "threads": torch.get_num_threads(), "batch_size": args.batch_size,
       "random_batches": args.random_batches, "matmul_gflops": round(roof, 1)}
for family in args.families.split(","):
    tokens_per_second, flops_per_token, shares = measure(family, data, len(items), args)
    gflops = tokens_per_second * flops_per_token / 1e9
    out[family] = {"tokens_per_second": round(tokens_per_second), "mflop_per_token": round(flops_per_token / 1e6, 2),
                   "gflops": round(gflops, 1), "matmul_gflops": round(roof, 1),
                   "roofline_fraction": round(gflops / roof, 3)}
    if shares:
        out[family]["profile_self_cpu_share"] = shares
print(json.dumps(out, indent=2))
