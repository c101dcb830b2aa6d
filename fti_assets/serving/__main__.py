import sys

from fti_assets.serving.cli import main

sys.exit(main())
