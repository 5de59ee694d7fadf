import sys

from .bench_cli import main

sys.exit(main())
