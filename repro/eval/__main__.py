import sys

from repro.eval.run import main

sys.exit(main())
