import sys

from hiergym.cli import main

sys.exit(main())
