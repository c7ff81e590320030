"""`make bench`: the gateway's speed as ratios to a baseline measured in the same run (bench/run.py)."""
