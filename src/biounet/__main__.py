import sys

from biounet.cli import main

sys.exit(main())
