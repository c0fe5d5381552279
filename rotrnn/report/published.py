"""Published numbers the tables cite next to this pipeline's runs (each row names its paper and table).

Each row carries its source and status; values the reference could not confirm are marked so in the tables.
"""
from __future__ import annotations

LRA_COLUMNS = ("listops", "imdb", "aan", "cifar", "pathfinder", "pathx")
LRA_NAMES = {"listops": "ListOps", "imdb": "Text", "aan": "Retrieval", "cifar": "Image", "pathfinder": "Pathfinder",
             "pathx": "Path-X"}

# model, values in LRA_COLUMNS order (None: not reported), source, note
LRA_PUBLISHED: list[tuple[str, tuple[float | None, ...], str, str]] = [
    ("S4", (59.60, 86.82, 90.90, 88.65, 94.20, 96.35), "Gu et al. 2022, Table 4", ""),
    ("S4D-LegS", (60.5, 86.2, 89.5, None, 93.1, 91.9), "Orvieto et al. 2023, Table 3",
     "Image omitted: that table reports colour sCIFAR"),
    ("S5", (62.15, 89.31, 91.40, 88.00, 95.33, 98.58), "Smith et al. 2023, Table 1", ""),
    ("LRU", (60.2, 89.4, 89.9, None, 95.1, 94.2), "Orvieto et al. 2023, Table 3",
     "Image omitted: 89.0 is on colour sCIFAR, not grayscale LRA Image"),
    ("Mega", (63.14, 90.43, 91.25, 90.44, 96.01, 97.98), "Ma et al. 2023, Table 2", ""),
    ("DSS", (57.6, 76.6, 87.6, 85.8, 84.1, 85.0), "Gupta et al. 2022, as cited in LION Table 7", ""),
    ("Transformer", (36.37, 64.27, 57.46, 42.44, 71.40, None), "Tay et al. 2021", "Path-X: fails (chance)"),
]

SPEECH_PUBLISHED: list[tuple[str, tuple[float, float], str, str]] = [
    ("S4-LegS", (96.08, 91.32), "as cited in Smith et al. 2023, Table 3", "unconfirmed"),
    ("S4D-LegS", (95.83, 91.08), "as cited in Smith et al. 2023, Table 3", "unconfirmed"),
    ("Liquid-S4", (96.78, 90.00), "as cited in Smith et al. 2023, Table 3", "unconfirmed"),
    ("S5", (96.52, 94.53), "Smith et al. 2023, Table 3", "unconfirmed"),
]
