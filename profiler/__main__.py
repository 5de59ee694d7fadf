import sys

from tp_search.profiler.profile_cli import main

sys.exit(main())
