import sys

from lever.cli import main

sys.exit(main())
