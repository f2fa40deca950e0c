"""Ray job entry point: ``ray job submit --working-dir . -- python jobs/run_xqg.py CONFIG [k=v ...]``.

Parses arguments and calls the one library function; all logic lives in xqg_ray.
On a cluster, pass ``ray.address=auto`` so the job joins it instead of starting
a private one.
"""

import sys

from xqg_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
