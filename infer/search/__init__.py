"""Search long strain with a trained fold ensemble: triggers, their false-alarm rates from time
slides, and, given the injections, which were found (``g2net-search``; docs/search.md).

``strain`` reads the detectors' files onto one grid, ``grid`` lays the 2-s windows and the
slides, ``psd`` whitens with the data around each window, ``scoring`` scores every window,
``triggers`` clusters and ranks them against the background, ``injections`` matches the
injected signals, ``outputs`` writes the tables, ``pipeline`` runs it all and ``cli`` parses.
"""
