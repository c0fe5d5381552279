"""The reproduction pipeline: the plan (:mod:`.plan`, what to run and where it goes) and the stages
(:mod:`.stages`, what each step does), shared by the Snakemake and DVC front doors; :mod:`.cli` holds their
commands."""
from .plan import RAW_MARKER, Plan, PlanError, load_plan

__all__ = ["Plan", "PlanError", "load_plan", "RAW_MARKER"]
