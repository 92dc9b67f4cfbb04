"""The child process that parses one file: `python -m webui.documents.worker KIND MAX_CHARS`,
the file's bytes on stdin, one JSON answer on stdout.

It lowers its own limits first (address space, CPU seconds), so a file that makes a
parser allocate without end or loop forever ends this process, not the server; the
server also kills it at its deadline (extract.py).  It imports no model code.
"""

from __future__ import annotations

import json
import resource
import sys

from webui.documents.parsers import PARSERS, ParseFailure

MEMORY_BYTES = 2 << 30
CPU_SECONDS = 120


def limit_self() -> None:
    for which, value in ((resource.RLIMIT_AS, MEMORY_BYTES), (resource.RLIMIT_CPU, CPU_SECONDS)):
        try:
            soft, hard = resource.getrlimit(which)
            wanted = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (wanted, hard))
        except (ValueError, OSError):
            pass  # a platform that refuses: the parent's deadline still holds


def main() -> int:
    kind, max_chars = sys.argv[1], int(sys.argv[2])
    data = sys.stdin.buffer.read()
    limit_self()
    try:
        pages = PARSERS[kind](data, max_chars)
        answer = {"pages": pages}
    except ParseFailure as exc:
        answer = {"error": exc.code, "message": str(exc)}
    except MemoryError:
        answer = {"error": "too_large", "message": "parsing this file needed more memory than a document may take"}
    except RecursionError:
        answer = {"error": "malformed", "message": "this file is nested too deeply to read"}
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
