"""Run one command and report its exit code and peak RSS: ``python -S launch.py RESULT CMD...``.

The suite starts every measured process through this small launcher, because on Linux a
process's ``ru_maxrss`` starts from the peak of the process it was forked from: forked
from the suite (tens of MiB with the Kafka client loaded), a side could never show less.
Forked from here (a few MiB, standard library only), it shows its own peak. SIGTERM and
SIGINT are passed on; the exit code is the command's (128 + N for a signal N), and
``{"code": ..., "maxrss_kib": ...}`` from ``os.wait4`` goes to RESULT.
"""

import json
import os
import signal
import sys


def main() -> int:
    result, argv = sys.argv[1], sys.argv[2:]
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda s, _frame: os.kill(pid, s))
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w", encoding="utf-8") as fp:
        json.dump({"code": code, "maxrss_kib": usage.ru_maxrss}, fp)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
