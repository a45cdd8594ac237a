"""sqlgate's benchmark harness: sqlgate beside its peers, in one process.

Run ``python -m benchmarks --help``. Every scenario runs each contender once per
round, in a shuffled order, and reports the median over the rounds, mostly as a
ratio to a floor or a limit measured in the same rounds. Compare figures from
the same machine and the same run only.
"""
