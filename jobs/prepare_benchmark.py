"""Ray job entry point for the benchmark stage alone (ingest or incremental update): ``python jobs/prepare_benchmark.py CONFIG key=value ...``."""

import sys

from xqg_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
