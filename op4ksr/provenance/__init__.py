"""Every output says what made it (docs/PROVENANCE.md).

- lineage.py: the facts (input key + sha256, version, model id, params hash, IPTC source type);
- xmp.py: those merged into the input's own XMP packet (label, DerivedFrom, one History event);
- manifest.py: a C2PA manifest signed through c2pa-python (embedded, or a `.c2pa` sidecar);
- stamp.py: both around an encoder, for the pipeline's encode step and local upscales;
- identity.py / throwaway_identity.py: signing identities checked before work / made for tests;
- verify.py: one output checked with c2pa-python's Reader.
"""
