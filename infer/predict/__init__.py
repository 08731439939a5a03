"""Batch prediction with fold ensembles and test-time augmentation (docs/inference.md).

A model is only ever used on inputs made the way its training inputs were: a fold's model card
(:mod:`data.rundir`) records the transform, and every mismatch between folds, or between a store
and the folds, is refused naming the keys that differ. Invalid samples (skipped by preprocessing,
a raw file :func:`data.layout.load_sample` rejects, an image that overflows float16) get the
target :data:`~infer.predict.submission.INVALID_TARGET` = 0.5, "no opinion", and a warning.

``checkpoints`` finds and loads the folds, ``inputs`` reads a store or raw files, ``tta`` makes
the views, ``ensemble`` combines folds and runs, ``loop`` predicts, ``submission`` writes.
"""
