import sys

from fdd.cli import main

sys.exit(main())
