"""Signals injected into noise on the fly, on the training device (issue 18): projection onto
the detectors (``projection``) and SNRs with the distributions targets are drawn from
(``snr``). Checked against lalsuite and against :mod:`data.sim.physics`.
"""
