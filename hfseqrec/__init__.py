"""hfseqrec: Hugging Face-native sequential recommenders.

Importing the package registers every model family with the Auto classes, so that
`AutoConfig.for_model("sasrec", ...)` and `AutoModel.from_pretrained(checkpoint)` work. The head
model (encoder + item scorer) is what `AutoModel` returns: a checkpoint is for scoring items.
"""

from transformers import AutoConfig, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .models.bert4rec.configuration_bert4rec import BERT4RecConfig
from .models.bert4rec.modeling_bert4rec import BERT4RecForNextItemPrediction, BERT4RecModel
from .models.gru4rec.configuration_gru4rec import GRU4RecConfig
from .models.gru4rec.modeling_gru4rec import GRU4RecForNextItemPrediction, GRU4RecModel
from .models.sasrec.configuration_sasrec import SASRecConfig
from .models.sasrec.modeling_sasrec import SASRecForNextItemPrediction, SASRecModel
from .pipeline_hfseqrec import NextItemRecommendationPipeline

# model_type -> (config class, model class); the one explicit map of names to classes.
MODEL_FAMILIES = {
    "sasrec": (SASRecConfig, SASRecForNextItemPrediction),
    "bert4rec": (BERT4RecConfig, BERT4RecForNextItemPrediction),
    "gru4rec": (GRU4RecConfig, GRU4RecForNextItemPrediction),
}

for _name, (_config_class, _model_class) in MODEL_FAMILIES.items():
    AutoConfig.register(_name, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    # Written into config.json's auto_map on save, so checkpoints load as remote code.
    _config_class.register_for_auto_class()
    _model_class.register_for_auto_class("AutoModel")

# `pipeline("next-item-recommendation", model=...)`; save_checkpoint ships the pipeline code too.
PIPELINE_TASK = "next-item-recommendation"
PIPELINE_REGISTRY.register_pipeline(PIPELINE_TASK, pipeline_class=NextItemRecommendationPipeline, pt_model=AutoModel)

__all__ = [
    "MODEL_FAMILIES", "PIPELINE_TASK", "NextItemRecommendationPipeline",
    "SASRecConfig", "SASRecModel", "SASRecForNextItemPrediction",
    "BERT4RecConfig", "BERT4RecModel", "BERT4RecForNextItemPrediction",
    "GRU4RecConfig", "GRU4RecModel", "GRU4RecForNextItemPrediction",
]
