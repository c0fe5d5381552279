"""The names the configuration accepts for the model's choices, declared as data: the layers (the model registry),
the block's norms, activations and pooling, and the optimiser's parameter groupings. The model code builds from
these names (rotrnn.nn.LAYERS is keyed by MODELS, rotrnn.models.sequence and rotrnn.train.optim check theirs against
them), and the configuration schema (rotrnn.config) validates against them without importing the model code, so
that the data stages of the pipeline do not depend on the layers (their DVC code deps are their import closure)."""

#: the model registry: every name the CLI, the plan, the reports and the Snakefile accept, in display order
MODELS: tuple[str, ...] = ("rotrnn", "lru", "dlr")
ACTIVATIONS = ("gelu", "full_glu", "half_glu1", "half_glu2")
NORMS = ("batch", "layer")
POOLINGS = ("mean", "last", "none")
#: how the optimiser groups B, C and D (rotrnn.train.optim.group_of)
OPT_CONFIGS = ("standard", "BandCdecay", "BfastandCdecay", "noBCdecay")
