"""Evaluation protocols, each in one place: frozen features and linear probes (:mod:`.features`), action
accuracy (:mod:`.action`), cross-modal retrieval (:mod:`.retrieval`), sound classification (:mod:`.audio`)."""
