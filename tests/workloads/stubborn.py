"""A command that keeps running: it writes its PID to the file given, then makes a getppid call
every 10 ms until it is killed (or until SIGINT, unless SIGINT is ignored, as it is for a
background job of a non-interactive shell, which the tests start it as)."""
import os
import sys
import time

with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
while True:
    os.getppid()
    time.sleep(0.01)
