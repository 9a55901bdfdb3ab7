"""A rank that never finishes (rank 1) next to one that fails (rank 0, with "fail"), or is
aborted by the C++ runtime (rank 0, with "abort"): the launcher's deadline, kill path and
retry policy are tested with it. Rank 0 appends a line to ``starts.txt`` on each start."""

import os
import sys
import time

mode = sys.argv[1] if len(sys.argv) > 1 else "hang"
if os.environ["RANK"] == "0":
    with open("starts.txt", "a") as f:
        f.write("start\n")
    if mode == "fail":
        sys.exit("rank 0 failed on purpose")
    if mode == "abort":  # what std::terminate prints, then SIGABRT
        sys.stderr.write("terminate called without an active exception\n")
        sys.stderr.flush()
        os.abort()
print(os.getpid(), flush=True)
time.sleep(600)
