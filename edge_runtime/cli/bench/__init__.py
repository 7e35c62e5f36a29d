"""`python -m edge_runtime bench`, in parts: `command.py` (arguments, the rounds, the summary), `measure.py`
(bare session, stages, the daemon as a subprocess, the machine), `chart.py` (the PNG), `regions.py`, `compare.py`
(engines side by side) and `gate.py` (the classify gate's CPU per hour)."""
