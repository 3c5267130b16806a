"""The ``tally`` command line: ``tally up``, ``tally keys``, ``tally migrate`` and the maintenance jobs."""
