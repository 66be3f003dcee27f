import sys

from benchmarks.dynamo import main

sys.exit(main())
