"""DICOM bytes: reading files (:mod:`.reading`: classify, read, the reasons a file is refused) and
writing them (:mod:`.writing`: encode with a rebuilt file meta, put in place atomically)."""
