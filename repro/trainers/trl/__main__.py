import sys

from repro.trainers.trl.run import main

if __name__ == "__main__":  # guarded: grading workers may re-import the main module
    sys.exit(main())
