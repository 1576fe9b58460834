"""`accelerate launch scripts/train.py --config FILE.yaml [--field value ...]` = `hfseqrec train ...`."""

import sys

from hfseqrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
