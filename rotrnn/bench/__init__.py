"""Benchmarks that print figures (they depend on the machine, so they are not tests): `layer.py` (`rotrnn bench
layer`, the scan's bandwidth), `step.py` (`rotrnn bench step`), `prepare.py` (`rotrnn bench prepare`, data
preparation at full size), the command group (`cli.py`) and the commit a device report names (`provenance.py`).
`benchmarks/` holds the GPU scripts that use them."""
