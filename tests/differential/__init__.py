"""Differential tests: deid 0.4.13 and deid_batch run on the same inputs and recipes, and the
written files are compared element by element (tag path, VR, raw value bytes, sequence item
counts, file meta, preamble).

``harness.py`` runs the two tools and diffs files; ``factories.py`` builds the representative
input; ``conftest.py`` has the fixtures (``run_both``, ``run_case``, ``generated_file``,
``write_recipe``). Golden cases are tables of :class:`harness.Case` in the test modules. Expected
differences are only our documented deviations, asserted in ``test_deviations.py``.

``DEID_DIFF_SELF_CHECK=1 pytest tests/differential`` replaces deid_batch by a second deid run:
every comparison must then pass (the deviation tests fail), which checks the harness and that
each case selects something.
"""
