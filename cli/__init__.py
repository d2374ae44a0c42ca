"""gmint's command line (installed as the `gmint_cli` package, console script `gmint`).

OpenMP's worker threads spin while they wait for work by default. On a machine shared with other CPU-bound
work, spinning threads compete with it for the cores, and a run can take several times longer (see
benchmarks/contention.py). Passive waiting costs nothing measurable on an idle machine. The policy must
be set before anything loads torch and its OpenMP runtime, so it is set here, unless the user chose one.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
