#!/usr/bin/env bash
# The README's first command: set up a virtual environment, then run the main job on the embedded
# synthetic default: synth -> prepare -> train a small SASRec -> evaluate against popularity ->
# save the checkpoint -> top-10 recommendations for one user through the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0          # the CPU build; an unpinned torch pulls a multi-GB CUDA build
.venv/bin/pip install -q -e ".[dev]"
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

hfseqrec synth runs/demo/log.csv --users 2000 --items 500 --seed 0
hfseqrec prepare runs/demo/log.csv --output runs/demo/data
rm -rf runs/demo/model
hfseqrec train --config configs/demo.yaml
hfseqrec evaluate --model runs/demo/model --data runs/demo/data --split test
python scripts/recommend_one_user.py runs/demo/model runs/demo/data
