import sys

from repro.eval.run import main

if __name__ == "__main__":  # guarded: spawned grading workers re-import the main module
    sys.exit(main())
