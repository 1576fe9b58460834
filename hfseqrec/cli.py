"""`hfseqrec` command line: one subcommand per stage of the data flow.

Each stage module owns its flags: it defines `add_arguments(parser)` and `run(args)`. The
modules are imported only when their subcommand runs, so `hfseqrec recommend` does not pay for
importing the training stack.
"""

import argparse
import importlib
import sys

from transformers.utils import logging as transformers_logging

from .errors import HfSeqRecError

# subcommand -> (module, one-line help), in data-flow order
COMMANDS = {
    "synth": ("hfseqrec.synth", "write a synthetic behaviour log (the embedded default data)"),
    "prepare": ("hfseqrec.sequences", "behaviour logs -> per-user sequences as a datasets DatasetDict"),
    "train": ("hfseqrec.training", "train a model with accelerate"),
    "evaluate": ("hfseqrec.evaluation", "full-ranking evaluation of a checkpoint on a split"),
    "recommend": ("hfseqrec.recommend", "top-k recommendations for one history"),
    "push": ("hfseqrec.hub", "upload a checkpoint directory to the Hugging Face Hub"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="hfseqrec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    # Parse only the command name first, then let its module define the rest of the flags.
    command = parser.parse_args(argv[:1]).command if argv else parser.parse_args(argv).command
    module = importlib.import_module(COMMANDS[command][0])
    # Per-file loading/saving bars would bury the one line that matters (a result or an error).
    transformers_logging.disable_progress_bar()
    cmd_parser = argparse.ArgumentParser(prog=f"hfseqrec {command}", description=COMMANDS[command][1])
    module.add_arguments(cmd_parser)
    if getattr(module, "EXTRA_FLAGS", False):
        args, args.overrides = cmd_parser.parse_known_args(argv[1:])
    else:
        args = cmd_parser.parse_args(argv[1:])
    try:
        return module.run(args) or 0
    except HfSeqRecError as err:
        print(f"hfseqrec {command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
