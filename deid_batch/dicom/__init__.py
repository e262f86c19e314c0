"""DICOM bytes: reading files (:mod:`.reading`: classify, read, the reasons a file is refused),
writing them (:mod:`.writing`: encode with a rebuilt file meta, put in place atomically), the raw
element walker (:mod:`.raw`), the byte-level rewriter (:mod:`.rewrite`), element bytes built
directly (:mod:`.elements`), raw header values for scan (:mod:`.values`) and pixel blanking
(:mod:`.pixels`)."""
