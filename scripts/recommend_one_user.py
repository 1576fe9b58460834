"""Top-10 for one held-out user through the `next-item-recommendation` pipeline.

usage: python scripts/recommend_one_user.py CHECKPOINT PREPARED_DATA [ROW]
"""

import json
import sys

from transformers import pipeline

from hfseqrec.sequences import load_prepared

checkpoint, data_dir = sys.argv[1], sys.argv[2]
row = int(sys.argv[3]) if len(sys.argv) > 3 else 0
data, items, events = load_prepared(data_dir)
user = data["test"][row]
history = items.decode(user["input_ids"])
recommender = pipeline("next-item-recommendation", model=checkpoint, trust_remote_code=True, device="cpu")
top = recommender({"history": history, "event_types": [events.names[e] for e in user["event_type_ids"]]},
                  top_k=10)
print(json.dumps({"user_id": user["user_id"], "last_items": history[-5:],
                  "held_out_item": items.decode([user["label"]])[0], "top_10": top}, indent=2))
