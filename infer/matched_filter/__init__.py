"""A matched-filter search over a template bank: the realistic detection ceiling of a data set.

    python -m infer.matched_filter --data DIR --split test --out mf.csv [--truth truth.csv]
        [--min-match 0.9] [--spin-max 0] [--time-step 2] [--seed 0] [--n-psd 2000]
        [--device auto] [--batch-size 16] [--template-chunk 64] [--fitting-factors N]
        [--report mf.json]

The generator's oracle (``truth.csv`` column ``oracle``) knows every signal's parameters; a
search does not. This module does what a gravitational-wave search does on the same data
(Gabbard et al. 2018 compare their CNN with exactly this): filter every sample with every
template of a bank covering the generator's prior, and rank samples by the loudest network
SNR (docs/search.md). Its AUC sits below the oracle's by the bank's trials factor and fitting
factor.

``bank`` places the templates, ``filter`` applies them, ``cli`` runs a split. Everything after
the bank is batched torch (samples x templates x detectors through one ``fft.ifft``), on
``--device`` (``auto``: CUDA when present). Templates need lalsuite (the ``synth`` extra); the
filter itself does not.
"""
