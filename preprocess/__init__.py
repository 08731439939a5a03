"""Stage one: whiten every sample with the training set's average noise PSD, take its CQT and
write float16 images (optionally the whitened strain) to checksummed Zarr stores
(``g2net-preprocess``, ``python -m preprocess``; docs/preprocessing.md)."""
