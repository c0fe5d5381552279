"""The analysis suite (`rotrnn analysis ...`): experiments on the paper's claims that 2 CPU cores can settle.

One small module per experiment; each command reads params.yaml (``suites.<suite>.experiments.<name>``), writes its
results (JSON and CSV) under ``paths.runs/<suite>/_experiments/`` and records them in MLflow; ``rotrnn analysis
report`` turns them and the suite's training runs into ``reports/analysis/``.

- :mod:`rotrnn.analysis.norms`: state norms over time and depth, RotRNN vs LRU (experiment 1)
- :mod:`rotrnn.analysis.heads`: learned decays of the multi-head ablation (experiment 2)
- :mod:`rotrnn.analysis.rescale`: zero-shot change of sampling rate (experiment 3)
- :mod:`rotrnn.analysis.predictions`: DLR's synthetic tasks, prediction vs target (experiment 4)
- :mod:`rotrnn.analysis.cost`: time and memory against length (experiment 5)
"""
