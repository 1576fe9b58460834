"""prepare -> train -> test evaluation on a real dataset, printed as one JSON object.

python scripts/benchmark.py --data ../shared/data/sasrec/ml-1m.txt.gz --format sasrec --model-type sasrec \
    [--config configs/ml-1m-sasrec.yaml] [--target-ndcg 0.18] [--any-run-field value ...]
"""

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time

from hfseqrec.run_config import load_run_config
from hfseqrec.sequences import prepare
from hfseqrec.training import train

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data", required=True, help="behaviour log to prepare (read in place, never copied)")
parser.add_argument("--format", help="input format for `prepare` (e.g. sasrec)")
parser.add_argument("--model-type", default="sasrec", choices=["sasrec", "bert4rec", "gru4rec"])
parser.add_argument("--config", help="run recipe; default configs/ml-1m-<model-type>.yaml")
parser.add_argument("--output-dir", help="default: a temporary directory")
parser.add_argument("--target-ndcg", type=float, default=0.18, help="report the time to this validation NDCG@10")
args, overrides = parser.parse_known_args()

work = args.output_dir or tempfile.mkdtemp(prefix="hfseqrec-benchmark-")
config = args.config or os.path.join(os.path.dirname(__file__), "..", "configs", f"ml-1m-{args.model_type}.yaml")
start = time.time()
report = prepare([args.data], os.path.join(work, "data"), format=args.format)
run = load_run_config(config, ["--model_type", args.model_type, "--data", os.path.join(work, "data"),
                               "--output_dir", os.path.join(work, "model"), *overrides])
with contextlib.redirect_stdout(sys.stderr):  # train prints its effective config; stdout stays one JSON object
    results = train(run)
with open(os.path.join(work, "model", "log.jsonl")) as f:
    log = [json.loads(line) for line in f]
reached = [r["elapsed_seconds"] for r in log if r.get("validation/ndcg@10", 0) >= args.target_ndcg]
tokens = sum(sum(r["train_tokens"]) for r in log)
train_seconds = sum(r["epoch_seconds"] for r in log)
print(json.dumps({
    "data": args.data, "model_type": args.model_type, "config": config, "overrides": overrides,
    "users": report["users"], "items": report["items"], "interactions": report["interactions"],
    **{f"test_{k}": results["test"][k] for k in ("ndcg@10", "hr@10", "mrr@10")},
    **{f"validation_{k}": results["validation"][k] for k in ("ndcg@10", "hr@10", "mrr@10")},
    "popularity_test_ndcg@10": results["test"]["popularity"]["ndcg@10"],
    "epochs": results["epochs"], "training_seconds": round(train_seconds, 1),
    "training_tokens_per_second": round(tokens / train_seconds),
    f"seconds_to_validation_ndcg@10>={args.target_ndcg}": round(reached[0], 1) if reached else None,
    "total_seconds": round(time.time() - start, 1),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    "output_dir": work,
}, indent=2))
