"""Inference: fold, TTA and run ensembles, submissions and scoring (``g2net-infer``,
``python -m infer``; docs/inference.md), the matched-filter baseline and the search over long
strain (``infer.matched_filter``, ``infer.search``; docs/search.md)."""
