"""Differential tests: deid 0.4.13 and deid_batch run on the same inputs and recipes, and the
written files are compared element by element (see ``harness.py``)."""
