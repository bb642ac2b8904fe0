import sys

from movakit.cli import main

sys.exit(main())
