import sys

from tp_search.search.search_cli import main

sys.exit(main())
