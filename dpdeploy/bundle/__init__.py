"""Offline bundles: one archive with a profile's locked wheels, the pinned detectron2 source, the
weights and a manifest of sha256s (``make``), checked in full before an air-gapped setup
deploys from it (``unpack``)."""
