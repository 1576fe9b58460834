"""Data stage 0: a synthetic behaviour log with learnable sequential structure (`hfseqrec synth`).

Out: a table user_id, item_id, timestamp, event_type (`generate`), written as CSV (.csv, .csv.gz)
or Parquet (.parquet) by `write`. IDs look like `u45` / `i123`; timestamps are epoch seconds.

How the log is made, vectorised over all events with numpy (no loop over users or events):
  - Items sit in a hidden order cut into clusters of `cluster_size` ("chains"). A user's views
    walk a chain: with probability `follow` the next view is the successor of the previous item
    in its cluster (wrapping round), otherwise the user jumps to an item drawn from a Zipf law
    over a random popularity ranking. "Successor of the last item" is right `follow` of the time,
    far beyond what popularity alone can reach, so a SASRec has something real to learn.
  - Funnel: a view is followed by a cart of the same item with probability `cart_rate`, and a
    cart by a purchase with probability `purchase_rate`.
  - Time: each user starts at a random moment of a 30-day window; views are minutes apart, cart
    and purchase seconds after their view; every gap is at least 1 s, so times strictly increase.
"""

import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from .errors import HfSeqRecError

EVENT_TYPES = ("view", "cart", "purchase")
START = 1_700_000_000  # 2023-11-14, epoch seconds


def generate(users=2000, items=500, events_per_user_mean=40.0, seed=0, follow=0.7, cluster_size=10,
             zipf_exponent=1.1, cart_rate=0.15, purchase_rate=0.4):
    """-> pyarrow.Table (user_id, item_id, timestamp, event_type); ID columns are dictionary-encoded."""
    if users < 1 or items < 2 or events_per_user_mean < 3:
        raise HfSeqRecError("synth needs --users >= 1, --items >= 2 and --events-per-user-mean >= 3")
    rng = np.random.default_rng(seed)
    # Views per user: at least 3, heavy-tailed (negative binomial); the funnel adds the rest.
    views_mean = events_per_user_mean / (1 + cart_rate + cart_rate * purchase_rate)
    extra = max(views_mean - 3, 1e-9)
    n_views = 3 + rng.negative_binomial(2, 2 / (2 + extra), size=users)
    total = int(n_views.sum())
    view_user = np.repeat(np.arange(users, dtype=np.int32), n_views)
    first = np.r_[0, np.cumsum(n_views)[:-1]]

    # Chain walk in the hidden order. A "jump" starts a new walk at a Zipf-popular position; after
    # it, the k-th step of the walk is k places further along the cluster.
    jump = rng.random(total) >= follow
    jump[first] = True
    rank_weights = 1.0 / np.arange(1, items + 1) ** zipf_exponent
    position_of_rank = rng.permutation(items)
    targets = position_of_rank[rng.choice(items, size=total, p=rank_weights / rank_weights.sum())]
    index = np.arange(total)
    walk_start = np.maximum.accumulate(np.where(jump, index, 0))
    start_position = targets[walk_start]
    cluster = start_position // cluster_size
    size = np.minimum(cluster_size, items - cluster * cluster_size)  # the last cluster may be short
    position = cluster * cluster_size + (start_position % cluster_size + index - walk_start) % size
    item_of_position = rng.permutation(items).astype(np.int32)  # item ids reveal nothing of the order
    view_item = item_of_position[position]

    # Funnel: each view expands into view [, cart [, purchase]] of the same item.
    cart = rng.random(total) < cart_rate
    purchase = cart & (rng.random(total) < purchase_rate)
    repeats = 1 + cart + purchase
    source = np.repeat(index, repeats)
    stage = (np.arange(len(source)) - np.repeat(np.cumsum(repeats) - repeats, repeats)).astype(np.int32)
    user = view_user[source]

    gaps = np.where(stage == 0, rng.exponential(600, len(source)), rng.exponential(30, len(source)))
    elapsed = np.cumsum(np.ceil(gaps).astype(np.int64) + 1)
    user_first = np.r_[0, np.cumsum(np.bincount(user, minlength=users))[:-1]]
    user_start = START + rng.integers(0, 30 * 86400, users)
    timestamp = user_start[user] + elapsed - elapsed[user_first][user]

    return pa.table({
        "user_id": _names("u", user, users),
        "item_id": _names("i", view_item[source], items),
        "timestamp": pa.array(timestamp, pa.int64()),
        "event_type": pa.DictionaryArray.from_arrays(pa.array(stage), pa.array(EVENT_TYPES)),
    })


def _names(prefix, codes, n):
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array([f"{prefix}{k}" for k in range(n)]))


def write(table, path):
    """Write by suffix: .parquet, .csv or .csv.gz."""
    name = path.lower()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if name.endswith(".parquet"):
        pq.write_table(table, path)
    elif name.endswith(".csv") or name.endswith(".csv.gz"):
        # the CSV writer wants plain strings, not dictionaries
        plain = table.cast(pa.schema([pa.field(f.name, pa.string() if pa.types.is_dictionary(f.type) else f.type)
                                      for f in table.schema]))
        with pa.output_stream(path, compression="gzip" if name.endswith(".gz") else None) as out:
            out.write((",".join(table.column_names) + "\n").encode())  # pyarrow would quote the header
            pa_csv.write_csv(plain, out, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
    else:
        raise HfSeqRecError(f"{path}: unknown suffix; use .csv, .csv.gz or .parquet")


def add_arguments(parser):
    parser.add_argument("output", metavar="OUT", help="output file: .csv, .csv.gz or .parquet")
    parser.add_argument("--users", type=int, default=2000, help="number of users (default 2000)")
    parser.add_argument("--items", type=int, default=500, help="number of items (default 500)")
    parser.add_argument("--events-per-user-mean", type=float, default=40.0, help="mean events per user (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--follow", type=float, default=0.7,
                        help="probability that the next view is the hidden successor of the last item")


def run(args):
    table = generate(args.users, args.items, args.events_per_user_mean, args.seed, args.follow)
    write(table, args.output)
    print(f"wrote {table.num_rows:,} events of {args.users:,} users on {args.items:,} items to {args.output}")
