import sys

from alignment.annotations.cli import main

sys.exit(main())
