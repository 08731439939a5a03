"""The shared floor: on-disk formats and contracts (Kaggle layout, Zarr cache, run directory),
config, CLI conventions and devices; ``sim``, ``inputs`` and ``models`` below it."""
