"""Deep sequence models built around a RotRNN, LRU or DLR layer."""
from .sequence import (ACTIVATIONS, NORMS, POOLINGS, RetrievalClassifier, SequenceBackbone, SequenceBlock,
                       SequenceClassifier, TimeSharedDropout, make_layer)

__all__ = ["SequenceClassifier", "RetrievalClassifier", "SequenceBackbone", "SequenceBlock", "TimeSharedDropout",
           "make_layer", "ACTIVATIONS", "NORMS", "POOLINGS"]
