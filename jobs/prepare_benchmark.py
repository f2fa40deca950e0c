"""Ray job entry point for benchmark preparation: ``python jobs/prepare_benchmark.py xquad --source DIR --out URI``."""

import sys

from xqg_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
