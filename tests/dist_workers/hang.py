"""A rank that never finishes (rank 1) next to one that fails (rank 0, with "fail"): the
launcher's deadline and kill path are tested with it."""
import os
import sys
import time

if len(sys.argv) > 1 and sys.argv[1] == "fail" and os.environ["RANK"] == "0":
    sys.exit("rank 0 failed on purpose")
print(os.getpid(), flush=True)
time.sleep(600)
