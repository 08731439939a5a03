"""Signals injected into noise on the fly, on the training device (issue 18): projection onto
the detectors (``projection``) and SNRs with the distributions targets are drawn from
(``snr``). Checked against lalsuite and against :mod:`data.sim.physics`.
"""

# Incoherent negatives (target 0). "single" is a signal in one detector only: it stands in for
# a glitch, and real signals whose SNR sits mostly in one detector (V1 at H1's and L1's blind
# spots, say) look like it. "swap" trains coherence alone. Without "single" the search model's
# background grew louder even in Gaussian noise (docs/search.md), so both are the default.
# Here, not in injector.py, so that train.config can check the key without lalsuite.
INCOHERENT_KINDS = ("single", "swap")
# Which detector a "swap" replaces: any with equal odds, or one drawn in proportion to its share
# of the signal's SNR^2 ("snr"; the injector's docstring says why).
SWAP_DETECTORS = ("uniform", "snr")
