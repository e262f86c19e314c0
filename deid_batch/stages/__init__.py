"""The pipeline stages, in order: :mod:`.discover` (list inputs) -> :mod:`.scan` (workers: headers
to Arrow) -> :mod:`.mapping` (Arrow join with the variables) -> :mod:`.apply` (workers: read,
de-identify, write under :mod:`.layout` names with :mod:`.keys`) -> :mod:`.manifest`;
:mod:`.verify` rescans outputs. :mod:`.pipeline` is the only module that imports dask."""
