import sys

from tp_search.pruning.bench_cli import main

sys.exit(main())
