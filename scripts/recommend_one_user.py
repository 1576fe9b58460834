"""Top-10 for one held-out user through the `next-item-recommendation` pipeline.

usage: python scripts/recommend_one_user.py CHECKPOINT PREPARED_DATA [ROW]
Without ROW it takes the first test user whose held-out item is new to them: the pipeline never
recommends items already in the history, so a repeat could not appear in the list.
"""

import json
import sys

from transformers import pipeline
from transformers.utils import logging

from hfseqrec.sequences import load_prepared

logging.disable_progress_bar()
checkpoint, data_dir = sys.argv[1], sys.argv[2]
data, items, events = load_prepared(data_dir)
test = data["test"]
if len(sys.argv) > 3:
    row = int(sys.argv[3])
else:
    row = next(i for i, (history, label) in enumerate(zip(test["input_ids"], test["label"], strict=True))
               if label not in history)
user = test[row]
history = items.decode(user["input_ids"])
held_out = items.decode([user["label"]])[0]
recommender = pipeline("next-item-recommendation", model=checkpoint, trust_remote_code=True, device="cpu")
top = recommender({"history": history, "event_types": [events.names[e] for e in user["event_type_ids"]]},
                  top_k=10)
print(json.dumps({"user_id": user["user_id"], "last_items": history[-5:], "held_out_item": held_out,
                  "held_out_in_top_10": any(r["item_id"] == held_out for r in top), "top_10": top}, indent=2))
